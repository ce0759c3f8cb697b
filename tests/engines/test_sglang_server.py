"""The `sglang-server` engine against a fake sglang (tests/engines/fake_sglang, copied to a tmp dir and put on the path
of this process and of the server process): the server gets the in-process engine's ServerArgs kwargs, start
failures are one clear line with the log's tail, and no process of the server outlives its stop."""
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from agent_rl.engines.base import SamplingParams
from agent_rl.engines.sglang_server import SERVER_KEYS, SGLangServer, SGLangServerEngine, SGLangServerError, _get

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _read(path):
    with open(path) as f:
        return json.load(f)


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids, within_s=20.0):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


SETTINGS = dict(mem_fraction_static=0.55, context_length=2048, seed=7, dtype="torch.bfloat16",
                engine_kwargs={"attention_backend": "triton", "sampling_backend": "pytorch", "cuda_graph_max_bs": 64},
                max_concurrency=2000)


async def test_server_starts_with_the_in_process_engines_kwargs(fake_sglang, tmp_path, caplog):
    from agent_rl.engines.sglang_engine import SGLangEngine
    from agent_rl.engines.sglang_patches import UNAVAILABLE

    caplog.set_level("INFO")
    inproc = SGLangEngine("/models/m", **SETTINGS)
    assert caplog.text.count(UNAVAILABLE) == 1   # the fake sglang has no scheduler hook: said once, started as is
    engine_kwargs = _read(fake_sglang / "engine_kwargs.json")["kwargs"]
    # the scheduling defaults reached both (fields read from the installed sglang's ServerArgs: the fake here)
    assert engine_kwargs["enable_priority_scheduling"] is True and engine_kwargs["enable_prefill_delayer"] is True
    assert engine_kwargs["disable_prefill_cuda_graph"] is True
    assert engine_kwargs["cuda_graph_max_bs_decode"] == 64 and engine_kwargs["max_running_requests"] == 1024
    assert engine_kwargs["skip_tokenizer_init"] is True and engine_kwargs["dtype"] == "bfloat16"
    # sglang's forced partial outputs are off in the environment its processes start with
    assert _read(fake_sglang / "engine_kwargs.json")["force_stream_interval"] == "1000000000"

    eng = SGLangServerEngine("/models/m", log_dir=str(tmp_path / "logs"), **SETTINGS)
    assert caplog.text.count(UNAVAILABLE) == 2 and _read(eng.server.spec_path)["patches_root"] is None
    try:
        with _get(eng.server.url + "/fake/state", timeout=5) as resp:
            state = json.loads(resp.read())
        assert state["health"] == 3   # start waited through two 503s (sglang warming up)
        # then asked the healthy server to freeze its collector (gc_freeze, a default patch), once
        assert state["freeze_gc"] == 1 and eng.server.gc_frozen
        server = _read(fake_sglang / "server.json")
        got = server["kwargs"]
        assert {k: v for k, v in got.items() if k not in SERVER_KEYS} == engine_kwargs
        assert got["host"] == "127.0.0.1" and got["port"] == eng.server.port and eng.base_url == eng.server.url
        assert got["log_level"] == "error" and got["log_level_http"] == "warning"   # sglang.Engine's default level
        assert server["pgid"] == server["pid"] != os.getpgid(0)                       # a process group of its own
        assert server["force_stream_interval"] == "1000000000"
        assert os.path.isfile(eng.server.log_path) and os.path.dirname(eng.server.log_path) == str(tmp_path / "logs")
        assert _read(eng.server.spec_path)["kwargs"] == got
        assert inproc.scheduling_info().pop("coalesce_submits") is True   # the in-process wrapper's own batching
        assert eng.scheduling_info() == {k: v for k, v in inproc.scheduling_info().items() if k != "coalesce_submits"} == {
            "cuda_graph_max_bs": 64, "cuda_graph_disabled": False, "max_running_requests": 1024,
            "priority_scheduling": True, "prefill_delayer": True, "prefill_delayer_passes": 20, "prefill_cuda_graph": "disabled",
            "partial_output_every": None, "scheduler_patches": []}   # the fake sglang has no hooks for them

        out = await eng.generate([5, 6], SamplingParams(max_new_tokens=3, stop_token_ids=[999], priority=4), "r1")
        assert out.finish_reason == "length" and len(out.output_ids) == 3 and out.logprobs == [-0.5] * 3
        await eng.release_memory()
        await eng.update_weights_from_disk(str(tmp_path))
    finally:
        await eng.shutdown()
    assert _wait_gone([server["pid"], server["child"]], within_s=1.0) == []   # stop() returned: the group is gone


async def test_requests_carry_the_models_terminators_and_priority(fake_sglang, tmp_path, tiny_model_path):
    from agent_rl.engines.base import model_eos_token_ids

    eos = model_eos_token_ids(tiny_model_path)
    assert eos
    eng = SGLangServerEngine(tiny_model_path, log_dir=str(tmp_path), **SETTINGS)
    try:
        await eng.generate([5], SamplingParams(max_new_tokens=2, stop_token_ids=[999], priority=4), "a")
        with _get(eng.server.url + "/fake/state", timeout=5) as resp:
            body = json.loads(resp.read())["requests"][-1]
        # skip_tokenizer_init: the server knows no eos, so each terminator travels as a stop token (as in process)
        assert body["sampling_params"]["stop_token_ids"] == [999] + [t for t in eos if t != 999]
        assert body["priority"] == 4 and len(body["rid"]) == 32
    finally:
        await eng.shutdown()


@pytest.mark.parametrize("mode,kwargs,expect", [
    ("die", {}, "RuntimeError: fake sglang: CUDA out of memory"),
    ("serve", {"no_such_server_arg": 1}, "unexpected keyword argument 'no_such_server_arg'"),
])
def test_a_server_that_dies_at_start_is_one_line_with_the_logs_tail(fake_sglang, tmp_path, monkeypatch, mode, kwargs,
                                                                    expect):
    monkeypatch.setenv("FAKE_SGLANG_MODE", mode)
    with pytest.raises(SGLangServerError) as e:
        SGLangServerEngine("/models/m", log_dir=str(tmp_path), engine_kwargs=kwargs)
    first, *rest = str(e.value).splitlines()
    assert "exited with code 1 before answering /health" in first and expect in first
    assert f"(log {tmp_path}" in first
    assert rest and "last lines of the log" in rest[0] and any("Traceback" in ln for ln in rest)
    if mode == "die":   # it got as far as starting its child: the stop took the whole group
        server = _read(fake_sglang / "server.json")
        assert _wait_gone([server["pid"], server["child"]], within_s=1.0) == []


def test_a_server_that_never_answers_times_out_and_is_stopped(fake_sglang, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SGLANG_MODE", "hang")
    server = SGLangServer({"model_path": "/models/m"}, log_dir=str(tmp_path), start_timeout_s=1.0)
    with pytest.raises(SGLangServerError, match=r"did not answer /health within 1 s: fake sglang: loading the model"):
        server.start()
    rec = _read(fake_sglang / "server.json")
    assert _wait_gone([rec["pid"], rec["child"]], within_s=1.0) == []


def test_the_server_goes_when_its_starter_dies_without_stopping_it(fake_sglang, tmp_path):
    """A training worker that crashes leaves no sglang server behind: the launcher watches its parent."""
    code = ("import os, sys; from agent_rl.engines.sglang_server import SGLangServer; "
            f"SGLangServer({{'model_path': 'm'}}, log_dir={str(tmp_path)!r}).start(); os._exit(0)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ["PYTHONPATH"]]))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    rec = _read(fake_sglang / "server.json")
    assert _wait_gone([rec["pid"], rec["child"]], within_s=20.0) == []


def test_bench_cli_runs_on_the_sglang_server_engine(fake_sglang, tmp_path, tiny_model_path):
    from agent_rl.cli.main import main

    out = tmp_path / "out"
    rc = main(["bench", "engine", "--engine", "sglang-server", "--model", tiny_model_path, "--out", str(out),
               "--prompts", "4", "--prompt-len", "8", "--new-tokens", "4", "--no-progress"])
    assert rc == 0
    res = _read(out / "engine_bench.json")
    assert res["engine"] == "sglang-server" and res["ceiling"]["output_tokens"] == 16
    assert res["engine_scheduling"]["priority_scheduling"] is True
    server = _read(fake_sglang / "server.json")
    assert server["kwargs"]["model_path"] == tiny_model_path and server["kwargs"]["cuda_graph_max_bs_decode"] == 32
    assert [n for n in os.listdir(out) if n.startswith("sglang-server-") and n.endswith(".log")]
    assert _wait_gone([server["pid"], server["child"]], within_s=1.0) == []


def test_bench_cli_start_failure_is_one_message(fake_sglang, tmp_path, tiny_model_path, monkeypatch, capsys):
    from agent_rl.cli.main import main

    monkeypatch.setenv("FAKE_SGLANG_MODE", "die")
    rc = main(["bench", "engine", "--engine", "sglang-server", "--model", tiny_model_path, "--out", str(tmp_path),
               "--prompts", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("agent-rl bench: sglang server") and "CUDA out of memory" in err.splitlines()[0]


def test_config_accepts_sglang_server_and_names_it_for_a_bad_value():
    from agent_rl.config.load import ConfigError, compose

    assert compose(["rollout.engine=sglang-server"], check_paths=False).rollout.engine == "sglang-server"
    with pytest.raises(ConfigError) as e:
        compose(["rollout.engine=sglang_server"], check_paths=False)
    assert "\n" not in str(e.value) and "'sglang_server' is not one of" in str(e.value) and "sglang-server" in str(e.value)


@pytest.mark.parametrize("per_rank,loads", [(True, True), (False, False)])
async def test_disk_sync_on_a_later_rank_loads_only_a_server_of_its_own(monkeypatch, per_rank, loads):
    """`http`: all ranks share rank 0's server; `sglang-server`: each rank's server loads the folder too."""
    import torch

    from agent_rl.training import weight_sync

    class Eng:
        server_per_rank = per_rank
        loaded = []

        async def update_weights_from_disk(self, path):
            self.loaded.append(path)

    monkeypatch.setattr(weight_sync, "save_hf_model", lambda *a, **k: 0)
    monkeypatch.setattr(weight_sync.D, "get_rank", lambda: 1)
    monkeypatch.setattr(weight_sync.D, "barrier", lambda: None)
    eng = Eng()
    await weight_sync.sync_weights_from_disk(torch.nn.Linear(1, 1), eng, "/tmp/ws")
    assert eng.loaded == (["/tmp/ws"] if loads else [])


def test_bench_no_coalesce_submits_reaches_the_in_process_engine(fake_sglang, tiny_model_path, tmp_path):
    import argparse

    from agent_rl.cli.bench import _build_engine
    from agent_rl.config.schema import RolloutConfig

    cfg = RolloutConfig(engine="sglang")
    args = argparse.Namespace(engine="sglang", device=None, seed=0, dtype=None, out=str(tmp_path), no_coalesce_submits=False)
    assert _build_engine(args, cfg, tiny_model_path).coalesce_submits is True
    args.no_coalesce_submits = True
    eng = _build_engine(args, cfg, tiny_model_path)
    assert eng.coalesce_submits is False and eng.scheduling_info()["coalesce_submits"] is False


def test_mixed_chunked_prefill_is_said_to_do_nothing_without_its_patch(fake_sglang, caplog):
    """sglang 0.5.17 mixes no prefill into a decode batch that returns log-probs (every rollout request does) unless
    the scheduler patch `mixed_logprob` runs in its scheduler."""
    from agent_rl.engines.sglang_engine import MIXED_CHUNK_IGNORED, server_args_kwargs

    for patches in (True, False, ["decode_rows"]):
        caplog.clear()
        with caplog.at_level("WARNING", logger="agent_rl.engines.sglang_engine"):
            server_args_kwargs("m", engine_kwargs={"enable_mixed_chunk": True}, scheduler_patches=patches)
        assert [r.getMessage() for r in caplog.records] == [MIXED_CHUNK_IGNORED], patches
    for kwargs, patches in (({"enable_mixed_chunk": False}, True),
                            ({"enable_mixed_chunk": True}, ["decode_rows", "mixed_logprob"])):
        caplog.clear()
        with caplog.at_level("WARNING", logger="agent_rl.engines.sglang_engine"):
            out = server_args_kwargs("m", engine_kwargs=kwargs, scheduler_patches=patches)
        assert not caplog.records and out["enable_mixed_chunk"] is kwargs["enable_mixed_chunk"]


def test_a_cpu_engines_scheduler_waits_for_work_instead_of_polling(fake_sglang):
    """sglang's idle scheduler busy-polls a core (0.5.17); on device=cpu that core is the trainer's: sleep_on_idle."""
    from agent_rl.engines.sglang_engine import server_args_kwargs

    assert server_args_kwargs("m", engine_kwargs={"device": "cpu"})["sleep_on_idle"] is True
    assert server_args_kwargs("m", engine_kwargs={"device": "CPU"})["sleep_on_idle"] is True
    assert server_args_kwargs("m", engine_kwargs={"device": "cpu", "sleep_on_idle": False})["sleep_on_idle"] is False
    assert "sleep_on_idle" not in server_args_kwargs("m", engine_kwargs={"device": "cuda"})
    assert "sleep_on_idle" not in server_args_kwargs("m")


@pytest.mark.parametrize("patches, refuses, calls", [(False, False, 0), (["decode_rows"], False, 0),
                                                     (["gc_freeze"], False, 1), (True, True, 1)])
def test_the_servers_collector_is_frozen_with_gc_freeze_and_a_refusal_only_warns(fake_sglang, tmp_path, monkeypatch,
                                                                                 caplog, patches, refuses, calls):
    if refuses:
        monkeypatch.setenv("FAKE_SGLANG_NO_FREEZE", "1")   # an sglang without the endpoint
    server = SGLangServer({"model_path": "/models/m"}, log_dir=str(tmp_path), scheduler_patches=patches).start()
    try:
        with _get(server.url + "/fake/state", timeout=5) as resp:
            assert json.loads(resp.read())["freeze_gc"] == calls
        assert server.gc_frozen is (calls == 1 and not refuses)
        assert ("/freeze_gc failed" in caplog.text) is refuses   # a warning; the server serves on
        assert server.healthy()
    finally:
        server.stop()
