import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent_rl.bench import engine_stacks
from agent_rl.bench.engine_stacks import ENV, between, enabled, gpu_wait, per_token_line, snapshot, summary_line

CHILD = textwrap.dedent("""
    import faulthandler, signal, sys
    if len(sys.argv) > 3:   # SIGUSR1 writes every thread's stack there (C level: even while a thread holds the GIL)
        faulthandler.register(signal.SIGUSR1, file=open(sys.argv[3], "w"), all_threads=True)
    from sglang.srt.fake_scheduler import event_loop_fake
    event_loop_fake(sys.argv[1], sys.argv[2])
""")


def _fake_packages(root):
    pkg = root / "sglang" / "srt"
    pkg.mkdir(parents=True)
    (root / "sglang" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "fake_scheduler.py").write_text(textwrap.dedent("""
        import os
        import time

        def _spin():
            x = 0
            for i in range(20000):
                x += i * i
            return x

        def busy_until(path):
            # 20 ms on CPU between the checks, which release the GIL: were the child sampled from a helper thread (no
            # timer signal), a thread that lets go of the GIL more often than the interpreter's 5 ms switch interval
            # and takes it straight back could keep the sampler from ever getting it (CPython's GIL convoy)
            end = time.monotonic() + 60
            while not os.path.exists(path) and time.monotonic() < end:
                t = time.monotonic() + 0.02
                while time.monotonic() < t:
                    _spin()

        def wait_for(path):
            end = time.monotonic() + 60
            while not os.path.exists(path) and time.monotonic() < end:
                time.sleep(0.01)

        def event_loop_fake(idle, stop):   # as sglang's scheduler loop: its callees are the loop's steps
            busy_until(idle)
            wait_for(stop)
    """))
    hidden = root / "other_site"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import os\nopen(os.environ['MARK_FILE'], 'w').write('ran')\n")
    return [str(root), str(hidden)]


HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(engine_stacks.__file__))))   # the source root


def _child_env(tmp_path, monkeypatch):
    """A fake sglang package and a hidden sitecustomize on the children's PYTHONPATH (before agent_rl's root)."""
    paths = _fake_packages(tmp_path / "pkgs")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths + [HERE]))
    monkeypatch.setenv("MARK_FILE", str(tmp_path / "mark"))
    return paths


def test_a_spawned_process_samples_its_main_thread(tmp_path, monkeypatch):
    paths = _child_env(tmp_path, monkeypatch)
    out, idle, stop, dump = tmp_path / "stacks", tmp_path / "idle", tmp_path / "stop", tmp_path / "child-stacks.txt"
    with enabled(str(out)):
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == engine_stacks.SITE and os.environ[ENV]
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(idle), str(stop), str(dump)])
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == paths[0] and ENV not in os.environ   # restored
    try:
        first = snapshot(str(out), title="python", wait_s=30)     # the child is spinning by now
        if first is None:   # what the child's threads were doing (CI saw this twice in ~20 runs, never reproduced)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            pytest.fail(f"the child wrote no figures in 30 s; its threads: {dump.read_text()!r}; "
                        f"files: {sorted(os.listdir(out))}")
        time.sleep(0.6)
        spun = snapshot(str(out), title="python", wait_s=30)   # as long as the child needs to write (a busy CI box)
        idle.write_text("")
        time.sleep(0.6)
        last = snapshot(str(out), title="python", wait_s=30)
    finally:
        stop.write_text("")
        assert proc.wait(timeout=30) == 0
    assert (tmp_path / "mark").read_text() == "ran"          # the sitecustomize it hid still ran
    assert first is not None and last["processes"] == 1 and first["samples"] < spun["samples"] < last["samples"]
    assert last["method"] == "signal"                        # its main thread, sampled by a timer signal
    st = between(first, spun)
    assert st["method"] == "signal" and 0.3 < st["cpu_s"] <= st["wall_s"] + 0.05 and st["owners_cpu"]["sglang"] > 0.8, st
    focus = dict(st["focus_functions"])
    assert focus.get("sglang/srt/fake_scheduler.py:_spin", 0) + focus.get("sglang/srt/fake_scheduler.py:busy_until", 0) > 0.8, st
    assert st["owners"].get("sglang", 0) > 0.8 and st["wall_s"] > 0.3
    waited = between(spun, last)                             # each window holds its own work only
    assert dict(waited["focus_functions"]).get("sglang/srt/fake_scheduler.py:wait_for", 0) > 0.6, waited
    assert "sglang's frames: `fake_scheduler.py:" in summary_line(st)   # sglang/srt/ left out
    assert dict(st["loop_steps"]).get("fake_scheduler.py:busy_until", 0) > 0.8, st   # the step below the loop
    assert any(k.startswith("fake_scheduler.py:busy_until > fake_scheduler.py:_spin") for k, _ in st["stages"]), st
    assert any(k.startswith("fake_scheduler.py:busy_until > fake_scheduler.py:_spin | ") for k, _ in st["stage_leaves"]), st
    assert dict(waited["loop_steps"]).get("fake_scheduler.py:wait_for", 0) > 0.6, waited
    assert "its loop's steps: `fake_scheduler.py:busy_until`" in summary_line(st)
    assert between(None, last)["samples"] == last["samples"]  # from the start
    assert snapshot(str(out), title="scheduler", wait_s=0.05) is None and between(None, None) is None
    assert summary_line(None) == "–"


def test_without_the_variable_nothing_is_sampled(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([engine_stacks.SITE, HERE]))
    monkeypatch.delenv(ENV, raising=False)
    r = subprocess.run([sys.executable, "-c", "import threading; print(len(threading.enumerate()))"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "1" and r.stderr == ""


async def test_each_mode_of_a_bench_reads_the_scheduler(tmp_path, monkeypatch, tokenizer, step_engine):
    """The bench asks the engine's processes for their figures at each mode's start and end (a stand-in process
    titled like sglang's scheduler, started under `enabled`) and reports the difference per mode."""
    from agent_rl.bench.instrument import InstrumentedEngine
    from agent_rl.bench.modes import parse_modes
    from agent_rl.bench.report import summary_markdown
    from agent_rl.bench.rollout_bench import RolloutBench, RolloutBenchSettings
    from agent_rl.bench.workload import Dist, Workload
    from agent_rl.config.schema import RolloutConfig

    _child_env(tmp_path, monkeypatch)
    exe = tmp_path / "sglang-scheduler"            # its title (argv[0]) names it a scheduler, as setproctitle does
    exe.symlink_to(os.path.realpath(sys.executable))
    out, idle, stop = tmp_path / "stacks", tmp_path / "idle", tmp_path / "stop"
    idle.write_text("")
    with enabled(str(out)):
        proc = subprocess.Popen([str(exe), "-c", CHILD, str(idle), str(stop)])
    try:
        assert snapshot(str(out), wait_s=30) is not None     # started and sampling
        w = Workload(num_prompts=3, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("8"),
                     tool_latency=Dist.parse("0"), seed=1)
        s = RolloutBenchSettings(workload=w, steps=1, rounds=2, progress=False, engine_stacks_dir=str(out))
        res = await RolloutBench(InstrumentedEngine(step_engine), tokenizer, s, RolloutConfig(engine="hf")).run(
            parse_modes("turn-batched,async", "0.5"))
    finally:
        stop.write_text("")
        assert proc.wait(timeout=30) == 0
    assert res["ceiling"]["engine_stacks"]["samples"] > 0   # the raw engine run too
    for m in res["modes"]:
        st = m["engine_stacks"]
        assert st["processes"] == 1 and "scheduler" in st["titles"][0] and st["samples"] > 0
        assert dict(st["focus_functions"]).get("sglang/srt/fake_scheduler.py:wait_for", 0) > 0.5
        # round 0's samples with round 0's tokens (the merged mode sums both rounds' tokens)
        assert st["tokens"] > 0 and 2 * st["tokens"] == m["gen_tokens"]   # fixed lengths: each round alike
    assert res["ceiling"]["engine_stacks"]["tokens"] == res["ceiling"]["output_tokens"]
    md = summary_markdown({**res, "kind": "rollout", "command": "x", "engine": "sglang", "model": "m",
                           "environment": {"device": "cpu", "python": "3", "torch": "x", "transformers": "y", "sglang": None}})
    assert "## sglang's scheduler: its main thread's time" in md and "- async: sglang 100%; sglang's frames:" in md
    assert "- raw engine: sglang 100%; sglang's frames:" in md


def test_cli_refuses_an_engine_it_cannot_sample(tmp_path, capsys):
    from agent_rl.cli.main import main as cli_main

    assert cli_main(["bench", "rollout", "--engine", "sim", "--sample-engine-stacks", "--out", str(tmp_path / "o")]) == 2
    assert "--sample-engine-stacks samples an sglang engine this command starts" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_summary_line_says_how_long_the_scheduler_waited_for_the_gpu():
    st = {"owners": {"sglang": 0.8, "torch": 0.2}, "focus_functions": [], "samples": 10, "stage_leaves": [
        ["scheduler.py:pop_and_process > scheduler.py:process_batch_result | torch/cuda/streams.py:synchronize", 0.09],
        ["scheduler.py:run_batch | torch/cuda/__init__.py:synchronize", 0.03],
        ["scheduler.py:run_batch | sglang/srt/managers/run_batch", 0.5]]}
    assert abs(gpu_wait(st) - 0.12) < 1e-9 and "; waiting for the GPU (`synchronize`) 12% (10 samples)" in summary_line(st)
    older = {k: v for k, v in st.items() if k != "stage_leaves"}   # JSON from before stage_leaves: nothing said
    assert gpu_wait(None) == 0 and "waiting" not in summary_line(older)


def test_the_per_token_line_puts_the_thread_s_time_and_its_largest_stages_in_microseconds_a_token():
    st = {"wall_s": 2.0, "stages": [["scheduler.py:pop_and_process > scheduler.py:process_batch_result > "
                                     "batch_result_processor.py:process_batch_result_decode", 0.25],
                                    ["scheduler.py:run_batch > tp_worker.py:forward_batch_generation > "
                                     "model_runner.py:forward", 0.2], ["scheduler.py:run_batch", 0.05]]}
    # 2 s over 100000 tokens: 20 us a token, a quarter of it in decode results
    assert per_token_line(st, 100000) == ("per generated token 20.00 us (`process_batch_result_decode` 5.00, "
                                          "`forward` 4.00, `run_batch` 1.00)")
    assert per_token_line(st, 100000, limit=1).endswith("(`process_batch_result_decode` 5.00)")
    assert per_token_line(st, 0) == per_token_line(None, 10) == per_token_line({"wall_s": 0}, 10) == ""
    # the tokens recorded with the samples win: a mode merged over rounds keeps round 0's samples, sums its tokens
    assert per_token_line(dict(st, tokens=50000), 100000).startswith("per generated token 40.00 us")
