"""Ray's processes go when the driver goes, whatever ended it (SIGKILL included).

A local Ray instance started by `ray.init` (GCS, raylet, the dashboard / monitor / log monitor processes, the
raylet's DashboardAgent and RuntimeEnvAgent, the worker processes) is torn down by `ray.shutdown()` or by Ray's atexit
hook. A driver killed with SIGKILL runs neither: the GCS and the raylet notice and exit, but the agents stay for
minutes and the workers for up to a minute. The reaper is a small watchdog that the driver starts right after
`ray.init` (`start`), in its own session (a Ctrl-C to the driver's process group, or its terminal closing, does not
reach it):

- it is given the driver (pid + create time: a pid reused by another process is not the driver) and the processes
  that `ray.init` started (pid + create time), and every `POLL_S` while the driver lives it adds their descendants
  (agents, workers, whatever those start) to what it tracks, remembering each one's create time;
- when the driver is gone (no such pid, another process under that pid, or a zombie) it sends SIGTERM to every tracked
  process still alive and to every process whose environment carries this run's token (`TOKEN_ENV`, set while
  `ray.init` started Ray's processes, so the raylet's workers inherit it: a worker started after the last look is
  found too), then SIGKILL to those still alive after `GRACE_S`, and exits. It removes nothing else (Ray's session
  folder stays) and never signals a process that is not the one it recorded (pid + create time), so another run's Ray
  on the same host is never touched;
- on a normal shutdown the driver stops it (`stop`: SIGTERM, the reaper exits at once without killing anything) after
  `ray.shutdown()` returned; if the driver ends without stopping it and nothing tracked is left, it just exits.

`python -m agent_rl.orchestration.reaper --parent PID:CREATE_TIME [--pid PID:CREATE_TIME ...] [--token T] [--log F]`.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

TOKEN_ENV = "AGENT_RL_RAY_RUN"
POLL_S = 0.5
GRACE_S = 3.0


def new_token() -> str:
    return uuid.uuid4().hex


def _same(a: float, b: float) -> bool:
    return abs(a - b) < 1e-3


def identify(pid: int, create_time: Optional[float] = None):
    """psutil.Process for `pid`, or None if there is none or (with `create_time`) it is another process now."""
    import psutil

    try:
        p = psutil.Process(pid)
        if create_time is not None and not _same(p.create_time(), create_time):
            return None
        return p
    except psutil.Error:
        return None


def alive(p) -> bool:
    """Still the same process (psutil compares the create time) and not a zombie."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Reaper:
    def __init__(self, parent_pid: int, parent_create_time: Optional[float],
                 roots: Iterable[Tuple[int, Optional[float]]], token: Optional[str] = None,
                 poll_s: float = POLL_S, grace_s: float = GRACE_S, log=None):
        self.parent = identify(parent_pid, parent_create_time)
        self.tracked: Dict[Tuple[int, float], object] = {}
        for pid, ct in roots:
            self._track(identify(pid, ct))
        self.token = token
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.log = log or (lambda msg: None)

    def _track(self, p) -> None:
        if p is None or p.pid == os.getpid():
            return
        try:
            key = (p.pid, p.create_time())
        except Exception:  # noqa: BLE001 - gone meanwhile
            return
        self.tracked.setdefault(key, p)

    def parent_alive(self) -> bool:
        return self.parent is not None and alive(self.parent)

    def refresh(self) -> None:
        """Track the descendants of every tracked process; forget the ones that are gone."""
        import psutil

        for key, p in list(self.tracked.items()):
            if not alive(p):
                del self.tracked[key]
                continue
            try:
                kids = p.children(recursive=True)
            except psutil.Error:
                continue
            for c in kids:
                self._track(c)

    def carrying_token(self) -> List[object]:
        """Processes whose environment has this run's token (a setproctitle'd process may hide its environment:
        those are tracked through their parent instead)."""
        import psutil

        if not self.token:
            return []
        out = []
        for p in psutil.process_iter():
            if p.pid == os.getpid():
                continue
            try:
                if p.environ().get(TOKEN_ENV) == self.token:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def _living(self) -> List[object]:
        self.refresh()
        for p in self.carrying_token():
            self._track(p)
        return [p for p in self.tracked.values() if alive(p)]

    def _signal_all(self, procs, sig) -> None:
        import psutil

        for p in procs:
            try:
                p.send_signal(sig)    # psutil checks that the pid is still this process
            except psutil.Error:
                pass

    def _wait(self, timeout: float) -> List[object]:
        end = time.monotonic() + timeout
        left = [p for p in self.tracked.values() if alive(p)]
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = [p for p in left if alive(p)]
        return left

    def reap(self) -> Tuple[int, int]:
        """The driver is gone: SIGTERM what is left, SIGKILL what is still there after the grace period.
        -> (processes sent SIGTERM, processes sent SIGKILL)."""
        procs = self._living()
        if not procs:
            return 0, 0
        self.log(f"driver gone: SIGTERM to {len(procs)} process(es): "
                 + ", ".join(f"{p.pid} {_name(p)}" for p in procs))
        self._signal_all(procs, signal.SIGTERM)
        self._wait(self.grace_s)
        left = self._living()
        if left:
            self.log(f"SIGKILL to {len(left)} process(es): " + ", ".join(f"{p.pid} {_name(p)}" for p in left))
            self._signal_all(left, signal.SIGKILL)
            self._wait(2.0)
        return len(procs), len(left)

    def run(self) -> Tuple[int, int]:
        while self.parent_alive():
            self.refresh()
            time.sleep(self.poll_s)
        return self.reap()


def _name(p) -> str:
    try:
        return p.name()
    except Exception:  # noqa: BLE001
        return "?"


# ------------------------------------------------------------------------ driver side
def start(roots: Sequence[int], token: Optional[str] = None,
          log_path: Optional[str] = None) -> Optional[subprocess.Popen]:
    """Start the reaper for this process (the driver) and `roots` (the pids that Ray started); None if there is
    nothing to watch or it cannot start (psutil missing)."""
    try:
        import psutil
    except ImportError:
        return None
    args = [sys.executable, "-m", "agent_rl.orchestration.reaper",
            "--parent", f"{os.getpid()}:{psutil.Process().create_time()!r}"]
    n = 0
    for pid in roots:
        p = identify(pid)
        if p is not None and alive(p):
            args += ["--pid", f"{pid}:{p.create_time()!r}"]
            n += 1
    if not n:
        return None
    if token:
        args += ["--token", token]
    if log_path:
        args += ["--log", log_path]
    import agent_rl

    root = os.path.dirname(os.path.dirname(os.path.abspath(agent_rl.__file__)))
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env["PYTHONPATH"] = os.pathsep.join(x for x in [root, os.environ.get("PYTHONPATH", "")] if x)
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True, env=env)


def stop(proc: Optional[subprocess.Popen], timeout: float = 5.0) -> None:
    """Stop the reaper without it killing anything (the run ended normally)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    except OSError:
        pass


# ------------------------------------------------------------------------ the watchdog process
def _pid_ct(s: str) -> Tuple[int, Optional[float]]:
    pid, _, ct = s.partition(":")
    return int(pid), (float(ct) if ct else None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent_rl.orchestration.reaper", description=__doc__.split("\n")[0])
    ap.add_argument("--parent", required=True, help="PID:CREATE_TIME of the driver")
    ap.add_argument("--pid", action="append", default=[], help="PID:CREATE_TIME of a process to reap (repeatable)")
    ap.add_argument("--token", default=None, help=f"reap also the processes whose {TOKEN_ENV} is this")
    ap.add_argument("--log", default=None, help="append what was killed to this file")
    ap.add_argument("--poll", type=float, default=POLL_S)
    ap.add_argument("--grace", type=float, default=GRACE_S)
    a = ap.parse_args(argv)

    def log(msg: str) -> None:
        if a.log:
            try:
                with open(a.log, "a", encoding="utf-8") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} agent-rl reaper {os.getpid()}: {msg}\n")
            except OSError:
                pass

    parent_pid, parent_ct = _pid_ct(a.parent)
    reaper = Reaper(parent_pid, parent_ct, [_pid_ct(s) for s in a.pid], token=a.token, poll_s=a.poll,
                    grace_s=a.grace, log=log)

    def on_stop(signum, frame):  # the driver ended the run normally: leave everything alone
        os._exit(0)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reaper.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
