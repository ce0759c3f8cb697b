import json
import os
import subprocess
import sys
import textwrap

import pytest

from agent_rl.engines.cpu_pinning import physical_cores, pin_scheduler_core

HERE = os.path.dirname(os.path.abspath(__file__))
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two allowed CPUs")


def test_cores_group_hyperthread_siblings_highest_first():
    sib = {0: frozenset({0, 8}), 8: frozenset({0, 8}), 1: frozenset({1, 9}), 9: frozenset({1, 9})}
    assert physical_cores({0, 1, 8, 9}, sib) == [frozenset({1, 9}), frozenset({0, 8})]
    assert physical_cores({0, 1, 8}, sib) == [frozenset({0, 8}), frozenset({1})]   # 9 not allowed
    assert physical_cores({2, 3}, {}) == [frozenset({3}), frozenset({2})]         # no topology: a CPU is a core


def test_no_scheduler_nothing_pinned(tmp_path):
    out = pin_scheduler_core(lock_dir=str(tmp_path))
    assert out["pinned"] is False and "no sglang::scheduler" in out["reason"]


# Each scenario runs in a process of its own: pinning moves the calling process's threads.
PIN = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from agent_rl.engines.cpu_pinning import pin_scheduler_core
    kids = [subprocess.Popen([title, "-c", "import time; time.sleep(60)"], executable=sys.executable)
            for title in ("sglang::scheduler_TP0", "sglang::detokenizer")]
    time.sleep(0.5)   # the children have exec'd (their titles are readable)
    out = pin_scheduler_core(lock_dir=sys.argv[1])
    aff = lambda pid: sorted(set().union(*(os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task"))))
    out["affinity"] = {"scheduler": aff(kids[0].pid), "detokenizer": aff(kids[1].pid), "self": aff(os.getpid())}
    out["scheduler_pid"] = kids[0].pid
    print(json.dumps(out), flush=True)
    if len(sys.argv) > 2:
        open(sys.argv[2], "w").close()   # pinned: hold the claim until the test says go
        while os.path.exists(sys.argv[2]):
            time.sleep(0.05)
    for k in kids:
        k.kill()
""")


def _pin(lock_dir, hold=None):
    args = [sys.executable, "-c", PIN, str(lock_dir)] + ([str(hold)] if hold else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


@two_cpus
def test_the_scheduler_gets_a_core_of_its_own_and_the_rest_stays_off_it(tmp_path):
    p = _pin(tmp_path)
    out = json.loads(p.stdout.readline())
    p.wait(timeout=30)
    assert out["pinned"] is True, out
    sched = out["scheduler_cpus"][str(out["scheduler_pid"])]
    allowed = sorted(os.sched_getaffinity(0))
    assert max(allowed) in sched                                 # the highest-numbered core
    assert out["affinity"]["scheduler"] == sched                 # every thread of it
    assert out["affinity"]["self"] == out["affinity"]["detokenizer"] == out["other_cpus"]
    assert not set(sched) & set(out["other_cpus"]) and set(sched) | set(out["other_cpus"]) == set(allowed)


@two_cpus
def test_a_second_run_does_not_take_the_first_ones_core(tmp_path):
    hold = tmp_path / "holding"
    first = _pin(tmp_path, hold)
    a = json.loads(first.stdout.readline())
    try:
        second = _pin(tmp_path)
        b = json.loads(second.stdout.readline())
        second.wait(timeout=30)
    finally:
        os.remove(hold)
        first.wait(timeout=30)
    a_core = set(a["scheduler_cpus"][str(a["scheduler_pid"])])
    if b["pinned"]:          # enough cores: another one, and its rest keeps off the first run's core too
        assert not a_core & set(b["scheduler_cpus"][str(b["scheduler_pid"])]) and not a_core & set(b["other_cpus"])
    else:                    # two CPUs: the first run's core is taken and one core cannot hold a scheduler and the rest
        assert "claimed by others" in b["reason"] and len(os.sched_getaffinity(0)) < 4
    third = _pin(tmp_path)   # the first run ended: its claim went with it
    c = json.loads(third.stdout.readline())
    third.wait(timeout=30)
    assert c["pinned"] is True


@two_cpus
def test_build_engine_pins_when_asked(tmp_path):
    """rollout.pin_scheduler_core with the sglang engine (the fake sglang starts a `sglang::scheduler` child)."""
    pkg = tmp_path / "pkg"
    import shutil

    shutil.copytree(os.path.join(HERE, "fake_sglang"), pkg)
    (tmp_path / "rec").mkdir()
    script = textwrap.dedent("""
        import json
        from agent_rl.config.schema import RolloutConfig
        from agent_rl.engines import build_engine
        eng = build_engine(RolloutConfig(engine="sglang", pin_scheduler_core=True), "/models/m")
        print(json.dumps(eng.cpu_pinning))
        eng._engine.shutdown()
    """)
    env = dict(os.environ, FAKE_SGLANG_DIR=str(tmp_path / "rec"), FAKE_SGLANG_SCHEDULER="1",
               PYTHONPATH=os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    pin = json.loads(out.stdout.strip().splitlines()[-1])
    assert pin["pinned"] is True and len(pin["scheduler_cpus"]) == 1, pin
