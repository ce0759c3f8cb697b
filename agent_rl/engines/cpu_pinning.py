"""A physical CPU core of its own for sglang's scheduler process (`rollout.pin_scheduler_core`).

sglang's scheduler is one busy Python thread that prepares every forward pass; a multi-turn rollout waits on it
(docs/benchmarks.md: the GPU idles 40-70% of a step). Its torch ops ran 1.4-1.9x slower in some modes than in
others at equal batch sizes, as a thread does when another busy thread shares its core (a hyper-thread sibling) or
its CPU. `pin_scheduler_core()` claims one whole physical core per scheduler process (all its hyper-threads) and
moves every thread of this process and of its other children (sglang's detokenizer, a server process) onto the
remaining CPUs. Processes on one host that pin claim different cores: each claim is an exclusive `flock` on
`LOCK_DIR/core-N.lock`, held for the life of this process (the kernel drops it when the process ends), and the
cores others hold are left out of the rest. Programs that do not pin are not kept off the claimed cores.

Off by default until a GPU suite shows it wins; `agent-rl bench ... --pin-scheduler-core` measures it.
"""
from __future__ import annotations

import fcntl
import glob
import logging
import os
import tempfile
from typing import Dict, FrozenSet, Iterable, List, Optional, Set

log = logging.getLogger(__name__)

LOCK_DIR = os.path.join(tempfile.gettempdir(), "agent-rl-cpu-cores")
SCHEDULER_TITLE = "sglang::scheduler"
_held: List[int] = []   # the lock files' descriptors this process keeps open (its claims)


def core_of_cpu() -> Dict[int, frozenset]:
    """CPU -> the CPUs of its physical core (its hyper-thread siblings and itself), from sysfs ({} where unknown)."""
    out = {}
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list"):
        try:
            cpu = int(path.split("/")[5][3:])
            with open(path) as f:
                out[cpu] = frozenset(parse_cpu_list(f.read()))
        except (OSError, ValueError):
            continue
    return out


def parse_cpu_list(text: str) -> List[int]:
    """'0-2,8' -> [0, 1, 2, 8] (the kernel's CPU list format)."""
    cpus = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def physical_cores(allowed: Iterable[int], siblings: Dict[int, FrozenSet[int]]) -> List[FrozenSet[int]]:
    """The allowed CPUs grouped by physical core (a CPU sysfs does not describe is a core of its own), the
    highest-numbered core first (CPU 0 tends to take the host's interrupts)."""
    allowed = set(allowed)
    cores = {frozenset(siblings.get(c, frozenset((c,))) & allowed) | {c} for c in allowed}
    return sorted(cores, key=lambda core: -max(core))


def process_title(proc) -> str:
    """argv[0] of a process (sglang retitles its processes: `sglang::scheduler`); '' when unreadable."""
    try:
        cmd = proc.cmdline()
        return cmd[0].strip() if cmd else ""
    except Exception:
        return ""


def _claim(core: FrozenSet[int], lock_dir: str) -> Optional[int]:
    """An exclusive lock on the core's file: its descriptor, or None when another process holds it."""
    fd = os.open(os.path.join(lock_dir, f"core-{min(core)}.lock"), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _set_threads(pid: int, cpus: Set[int]) -> None:
    """Every thread of `pid` onto `cpus` (the affinity syscall takes one thread; new threads inherit their
    creator's)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:        # a process that ended meanwhile
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:   # a thread that ended meanwhile
            pass


def unpin_scheduler_core(pinned: Dict[str, object], root_pid: Optional[int] = None) -> None:
    """Undo `pin_scheduler_core` (its result): every thread of this process and its children back on the CPUs it
    had, the core claims released. Never raises."""
    while _held:
        os.close(_held.pop())
    if not pinned.get("pinned"):
        return
    try:
        import psutil

        root = psutil.Process(root_pid or os.getpid())
        for proc in [root] + root.children(recursive=True):
            _set_threads(proc.pid, set(pinned["allowed_cpus"]))
    except Exception as e:
        log.warning("could not unpin (%s: %s)", type(e).__name__, e)


def pin_scheduler_core(root_pid: Optional[int] = None, lock_dir: str = LOCK_DIR) -> Dict[str, object]:
    """Give each `sglang::scheduler` process under `root_pid` (default: this process) a physical core of its own
    and the rest of the allowed CPUs to everything else of ours. Returns what was done: `pinned`, the scheduler
    CPUs by pid, the CPUs of the rest, or `reason` when nothing was pinned (no scheduler, too few cores, a
    platform or container that refuses CPU affinity); never raises."""
    while _held:   # a new engine in this process: its previous engine's claims go
        os.close(_held.pop())
    try:
        import psutil

        root = psutil.Process(root_pid or os.getpid())
        children = root.children(recursive=True)
        schedulers = [p for p in children if process_title(p).startswith(SCHEDULER_TITLE)]
        if not schedulers:
            return {"pinned": False, "reason": f"no {SCHEDULER_TITLE} process under pid {root.pid}"}
        allowed = os.sched_getaffinity(root.pid)
        os.makedirs(lock_dir, exist_ok=True)
        cores = physical_cores(allowed, core_of_cpu())
        claimed, taken = [], set()
        for core in cores:
            if len(claimed) == len(schedulers):
                fd = _claim(core, lock_dir)   # is another process's scheduler on this core?
                if fd is None:
                    taken |= core
                else:
                    os.close(fd)              # closing the descriptor drops the probe's lock
                continue
            fd = _claim(core, lock_dir)
            if fd is None:
                taken |= core
            else:
                claimed.append((core, fd))
        rest = set(allowed) - taken - {c for core, _ in claimed for c in core}
        if len(claimed) < len(schedulers) or not rest:
            for _, fd in claimed:
                os.close(fd)
            return {"pinned": False, "reason": f"{len(cores)} cores allowed, {len(schedulers)} scheduler(s) and the "
                                               f"rest need {len(schedulers) + 1} free ones ({len(taken)} CPUs claimed by others)"}
        out = {}
        for proc, (core, fd) in zip(schedulers, claimed):
            _set_threads(proc.pid, set(core))
            _held.append(fd)
            out[proc.pid] = sorted(core)
        for proc in [root] + [p for p in children if p not in schedulers]:
            _set_threads(proc.pid, rest)
        log.info("pinned sglang's scheduler(s) to CPUs %s; this process and its other children to %s", out, sorted(rest))
        return {"pinned": True, "scheduler_cpus": out, "other_cpus": sorted(rest), "allowed_cpus": sorted(allowed)}
    except Exception as e:   # psutil missing, EPERM/EINVAL from a container: run unpinned
        log.warning("rollout.pin_scheduler_core: not pinned (%s: %s)", type(e).__name__, e)
        return {"pinned": False, "reason": f"{type(e).__name__}: {e}"}
