"""The reaper's kill logic (agent_rl/orchestration/reaper.py) on plain `sleep` processes: the real watchdog process
(`python -m agent_rl.orchestration.reaper`) watching a stand-in driver."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from agent_rl.orchestration import reaper

# a stand-in driver: starts two `sleep` children (one of them with a grandchild) and prints their pids
DRIVER = r"""
import subprocess, sys, time
a = subprocess.Popen(["sleep", "300"])
b = subprocess.Popen(["sh", "-c", "sleep 300 & wait"])
print(a.pid, b.pid, flush=True)
time.sleep(float(sys.argv[1]))
"""


def _spawn_driver(lifetime=300.0):
    d = subprocess.Popen([sys.executable, "-c", DRIVER, str(lifetime)], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in d.stdout.readline().split()]
    kids = [psutil.Process(pid) for pid in pids]
    end = time.time() + 10
    while len(kids[1].children()) < 1 and time.time() < end:   # the grandchild `sleep`
        time.sleep(0.05)
    return d, kids


def _ct(p):
    return repr(p.create_time())


def _start_reaper(parent, roots, *extra, poll="0.1", grace="1"):
    args = [sys.executable, "-m", "agent_rl.orchestration.reaper", "--parent", parent, "--poll", poll, "--grace", grace]
    for r in roots:
        args += ["--pid", r]
    return subprocess.Popen(args + list(extra), stdin=subprocess.DEVNULL, start_new_session=True)


def _alive(p):
    return reaper.alive(p)


def _wait_gone(procs, timeout):
    end = time.time() + timeout
    while any(_alive(p) for p in procs) and time.time() < end:
        time.sleep(0.05)
    return [p for p in procs if _alive(p)]


def _cleanup(*procs):
    for p in procs:
        try:
            p.kill()
        except (psutil.Error, OSError):
            pass


def test_driver_dies_its_processes_and_their_descendants_are_killed(tmp_path):
    bystander = psutil.Popen(["sleep", "300"])            # not the driver's: must survive
    d, kids = _spawn_driver()
    dp = psutil.Process(d.pid)
    family = kids + kids[1].children(recursive=True)
    log = tmp_path / "reaper.log"
    r = _start_reaper(f"{d.pid}:{_ct(dp)}", [f"{k.pid}:{_ct(k)}" for k in kids], "--log", str(log))
    try:
        time.sleep(1.0)
        late = psutil.Popen(["sleep", "300"])              # not a descendant of a recorded process: left alone
        assert all(_alive(p) for p in family) and r.poll() is None   # driver alive: nothing killed
        t0 = time.time()
        d.kill()
        d.wait()
        left = _wait_gone(family, 10)
        took = time.time() - t0
        assert not left, [(p.pid, p.name()) for p in left]
        assert took < 5, took
        assert r.wait(10) == 0
        assert _alive(bystander) and _alive(late)
        assert "driver gone: SIGTERM to 3 process(es)" in log.read_text()
    finally:
        _cleanup(d, r, bystander, *family)
        if "late" in locals():
            _cleanup(late)


def test_driver_alive_nothing_killed_and_stop_leaves_everything(tmp_path):
    d, kids = _spawn_driver()
    family = kids + kids[1].children(recursive=True)
    r = _start_reaper(f"{d.pid}:{_ct(psutil.Process(d.pid))}", [f"{k.pid}:{_ct(k)}" for k in kids])
    try:
        time.sleep(1.5)
        assert r.poll() is None and all(_alive(p) for p in family)
        reaper.stop(r)                       # the run ended normally: the reaper goes, kills nothing
        assert r.returncode == 0
        d.kill()
        d.wait()
        time.sleep(1.0)
        assert all(_alive(p) for p in family)
    finally:
        _cleanup(d, r, *family)


def test_pid_reuse_guard(tmp_path):
    """A recorded pid whose create time differs is another process: never signalled. A parent pid whose create time
    differs is not the driver any more (the driver is gone, its pid reused): the recorded processes are reaped, the
    process now under that pid is not touched."""
    d, kids = _spawn_driver()
    stranger = psutil.Popen(["sleep", "300"])              # stands for a process that reused the driver's pid
    family = kids + kids[1].children(recursive=True)
    reused = kids[0]                                       # recorded with a create time that is not its own
    r = _start_reaper(f"{stranger.pid}:{stranger.create_time() - 5.0!r}",
                      [f"{reused.pid}:{reused.create_time() - 5.0!r}", f"{kids[1].pid}:{_ct(kids[1])}"])
    try:
        assert r.wait(10) == 0                             # the "driver" is gone from the start: reap, then exit
        assert not _wait_gone(family[1:], 5)               # the sh child and its grandchild: killed
        assert _alive(reused) and _alive(stranger)         # pid reused: left alone
    finally:
        _cleanup(d, r, stranger, *family)


def test_driver_exits_normally_with_nothing_left_the_reaper_exits():
    d = subprocess.Popen([sys.executable, "-c", "import subprocess, time; s = subprocess.Popen(['sleep', '1.5']);"
                          " print(s.pid, flush=True); s.wait(); time.sleep(0.5)"], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(d.stdout.readline()))
    r = _start_reaper(f"{d.pid}:{_ct(psutil.Process(d.pid))}", [f"{child.pid}:{_ct(child)}"])
    try:
        assert d.wait(10) == 0
        assert r.wait(5) == 0
    finally:
        _cleanup(d, r, child)


def test_token_finds_a_process_started_after_the_last_look(tmp_path):
    """A process whose environment carries the run's token is reaped even if it was never seen as a descendant
    (a Ray worker started by the raylet just before the driver died, reparented since)."""
    token = reaper.new_token()
    d, kids = _spawn_driver()
    family = kids + kids[1].children(recursive=True)
    marked = psutil.Popen(["sleep", "300"], env=dict(os.environ, **{reaper.TOKEN_ENV: token}))
    other = psutil.Popen(["sleep", "300"], env=dict(os.environ, **{reaper.TOKEN_ENV: reaper.new_token()}))
    r = _start_reaper(f"{d.pid}:{_ct(psutil.Process(d.pid))}", [f"{kids[0].pid}:{_ct(kids[0])}"], "--token", token)
    try:
        time.sleep(0.5)
        d.kill()
        d.wait()
        assert not _wait_gone([kids[0], marked], 8)
        assert r.wait(10) == 0
        assert _alive(other)                                # another run's token
    finally:
        _cleanup(d, r, marked, other, *family)


def test_start_returns_none_without_live_roots():
    assert reaper.start([]) is None
    p = psutil.Popen(["true"])
    p.wait()
    assert reaper.start([p.pid]) is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_reaper_ignores_interrupts_meant_for_the_driver(sig):
    d, kids = _spawn_driver()
    family = kids + kids[1].children(recursive=True)
    r = _start_reaper(f"{d.pid}:{_ct(psutil.Process(d.pid))}", [f"{k.pid}:{_ct(k)}" for k in kids])
    try:
        time.sleep(1.0)
        r.send_signal(sig)
        time.sleep(0.5)
        assert r.poll() is None
        d.kill()
        d.wait()
        assert not _wait_gone(family, 8)
    finally:
        _cleanup(d, r, *family)


def test_a_process_started_later_is_reaped_even_if_its_parent_died_first():
    """Like a Ray worker: started by a recorded process (the raylet) after the reaper began, and orphaned when that
    process dies with the driver; the reaper saw it while the driver was alive."""
    d = subprocess.Popen([sys.executable, "-c", "import subprocess, time; s = subprocess.Popen(['sh', '-c', "
                          "'sleep 1; sleep 300 & wait']); print(s.pid, flush=True); time.sleep(300)"],
                         stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(d.stdout.readline()))
    r = _start_reaper(f"{d.pid}:{_ct(psutil.Process(d.pid))}", [f"{child.pid}:{_ct(child)}"])
    late = []
    try:
        end = time.time() + 10
        while not late and time.time() < end:
            late = [c for c in child.children() if c.name() == "sleep" and "300" in c.cmdline()]
            time.sleep(0.05)
        assert late
        time.sleep(0.5)
        child.kill()                                    # dies with the driver: `late` is orphaned
        d.kill()
        d.wait()
        assert not _wait_gone(late, 8)
        assert r.wait(10) == 0
    finally:
        _cleanup(d, r, child, *late)
