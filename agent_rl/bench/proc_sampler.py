"""Who holds the host's CPUs during a mode: our process, sglang's scheduler and detokenizer, everything else.

sglang runs its scheduler in a child process; its per-pass work (batch selection, result filing, kernel launches)
is what bounds a multi-turn rollout on the GPU (docs/benchmarks-log.md). A torch profile of that process found the same
torch ops 1.4-1.9x slower in the heavy-tail and tool-latency modes than with instant tools, at equal decode batch
sizes: the process ran slower per op, which points at the host (a hyper-thread sibling or the core itself taken by
another busy thread, the clock), not at more work. `ProcSampler` reads, every `interval_s`, the CPU time and the
current CPU of every thread of this process and its descendants (`/proc/PID/task/TID/stat`) and the host's busy
share and clock, and reports per process:

* `cpu_cores_mean` / `cpu_cores_peak`: the cores it holds, on average over the mode and in its busiest interval;
* `threads`: its busiest threads (name, cores);
* `main_thread_cpus`: on how many CPUs its busiest thread of each interval was seen (migrations), and
  `main_thread_shared_frac`: the share of the intervals in which that thread was busy (>= 1/4 core) and another
  busy thread of ours sat on the same physical core (itself or a hyper-thread sibling, from
  `/sys/devices/system/cpu/cpuN/topology/thread_siblings_list`). Threads of other programs are not seen: the host's
  busy share says how much of the machine they take.

What the guest cannot use of its CPUs: the host's `steal` share (a virtual machine's CPUs run by the hypervisor
for someone else; the GPU hosts are Firecracker VMs), the cgroup's CPU-quota throttling (`cpu.stat`), the CPU
pressure stall share (`/proc/pressure/cpu`: some runnable task waited for a CPU) and, per process, how often its
busiest thread was preempted (`nonvoluntary_ctxt_switches` per second). These say whether a slow scheduler pass
was the machine's, not the workload's.

Process names come from the command line (`sglang::scheduler`: sglang retitles its processes), else `comm` (read
again at the next sample while the command line is empty: a process inside `execve`); this process is `bench`.
Needs `psutil` (sglang's dependency; without it the sampler reports nothing) and Linux's /proc for the per-thread
CPUs (elsewhere `main_thread_*` stay empty).
"""
from __future__ import annotations

import glob
import os
import threading
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

BUSY = 0.25   # a thread using at least a quarter of a core in an interval is busy in it

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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


def process_title(proc) -> str:
    """argv[0] of a process (sglang retitles its processes: `sglang::scheduler`); '' when unreadable."""
    try:
        cmd = proc.cmdline()
        return cmd[0].strip() if cmd else ""
    except Exception:
        return ""


def _name(proc) -> Tuple[str, bool]:
    """(its name, final): not final while its command line reads empty, as it can for a moment inside `execve` (the
    file descriptors that tell its parent the exec went through are closed before its new arguments are in place), so
    a process seen just after it started is named again at the next sample."""
    if proc.pid == os.getpid():
        return "bench", True
    first = process_title(proc)
    if first and " " not in first and "/" not in first:   # a retitled process (setproctitle)
        return first, True
    try:
        return proc.name(), bool(first)
    except Exception:
        return "?", False


def _thread_name(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return str(tid)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def preemptions(pid: int, tid: int) -> Optional[int]:
    """Times the thread was switched out while it could run (`nonvoluntary_ctxt_switches`), None where unknown."""
    for line in _read(f"/proc/{pid}/task/{tid}/status").splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            return int(line.split()[1])
    return None


def machine_counters() -> Dict[str, float]:
    """Cumulative seconds the cgroup was throttled (v2 `throttled_usec`, v1 `throttled_time`) and some task stalled
    for a CPU (PSI `some total`); the keys that this machine does not expose are absent."""
    out: Dict[str, float] = {}
    for path, key, scale in (("/sys/fs/cgroup/cpu.stat", "throttled_usec", 1e-6),
                             ("/sys/fs/cgroup/cpu/cpu.stat", "throttled_time", 1e-9),
                             ("/sys/fs/cgroup/cpu,cpuacct/cpu.stat", "throttled_time", 1e-9)):
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key and "throttled_s" not in out:
                out["throttled_s"] = int(value) * scale
    for line in _read("/proc/pressure/cpu").splitlines():
        if line.startswith("some "):
            total = dict(kv.split("=", 1) for kv in line.split()[1:]).get("total")
            if total is not None:
                out["cpu_pressure_s"] = int(total) * 1e-6
    return out


def thread_stats(pid: int) -> Dict[int, Tuple[float, Optional[int]]]:
    """tid -> (CPU seconds, CPU it last ran on) of every thread of `pid`, from /proc ({} where there is none)."""
    out = {}
    for path in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # after "(comm)": state is field 3; utime 14, stime 15, processor 39 (proc(5))
            out[int(path.split("/")[4])] = ((int(fields[11]) + int(fields[12])) / _TICK, int(fields[36]))
        except (OSError, IndexError, ValueError):
            continue
    return out


class ProcSampler:
    """`start()`, run the mode, `stop()` -> summary dict (None where psutil is missing)."""

    def __init__(self, interval_s: float = 0.5, top_threads: int = 3):
        self.interval_s = float(interval_s)
        self.top_threads = int(top_threads)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._names: Dict[int, str] = {}
        self._unnamed: set = set()                         # pids whose name is read again (`_name`: not final)
        self._first: Dict[int, Tuple[float, float]] = {}   # pid -> (t, cpu_s) at first sight
        self._last: Dict[int, Tuple[float, float]] = {}    # pid -> (t, cpu_s) at the last sample
        self._peak: Dict[int, float] = {}                  # pid -> most cores held between two samples
        self._threads0: Dict[Tuple[int, int], float] = {}  # (pid, tid) -> cpu_s at first sight
        self._threads1: Dict[Tuple[int, int], Tuple[float, Optional[int]]] = {}   # at the last sample
        self._main_cpus: Dict[int, Counter] = {}          # pid -> CPUs its busiest thread was seen on
        self._main_busy: Counter = Counter()               # pid -> intervals its busiest thread was busy
        self._main_shared: Counter = Counter()             # ... and shared its physical core with a busy thread
        self._host: List[Tuple[float, Optional[float], Optional[float]]] = []   # (busy share, MHz, steal share)
        self._preempt0: Dict[Tuple[int, int], int] = {}   # (pid, tid) -> nonvoluntary switches at first sight
        self._machine0: Dict[str, float] = {}
        self._cores = core_of_cpu()
        self._psutil = None

    def start(self) -> "ProcSampler":
        try:
            import psutil
        except ImportError:
            return self
        self._psutil = psutil
        self._me = psutil.Process()
        psutil.cpu_percent(None)   # the host's busy share is measured from here
        psutil.cpu_times_percent(None)   # ... and its steal share
        self._machine0 = machine_counters()
        self._t = time.perf_counter()
        self._t0 = self._t
        self._sample(host=False)
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self, host: bool = True) -> None:
        psutil = self._psutil
        now = time.perf_counter()
        dt, self._t = now - self._t, now
        try:
            procs = [self._me] + self._me.children(recursive=True)
        except psutil.Error:
            procs = [self._me]
        busy: List[Tuple[int, int, float, Optional[int]]] = []   # (pid, tid, cores, cpu) this interval
        for p in procs:
            try:
                cpu = sum(p.cpu_times()[:2])
                threads = thread_stats(p.pid) or {t.id: (t.user_time + t.system_time, None) for t in p.threads()}
            except psutil.Error:
                continue
            if p.pid not in self._first or p.pid in self._unnamed:
                self._names[p.pid], final = _name(p)
                (self._unnamed.discard if final else self._unnamed.add)(p.pid)
            if p.pid not in self._first:
                self._first[p.pid] = (now, cpu)
            else:
                t, c = self._last[p.pid]
                if now > t:
                    self._peak[p.pid] = max(self._peak.get(p.pid, 0.0), (cpu - c) / (now - t))
            self._last[p.pid] = (now, cpu)
            for tid, (secs, where) in threads.items():
                key = (p.pid, tid)
                if key not in self._threads0:
                    n = preemptions(p.pid, tid)
                    if n is not None:
                        self._preempt0[key] = n
                prev = self._threads1.get(key)
                self._threads0.setdefault(key, secs)
                self._threads1[key] = (secs, where)
                if prev is not None and dt > 0:
                    busy.append((p.pid, tid, (secs - prev[0]) / dt, where))
        self._file_main_threads(busy)
        if host:
            freq = psutil.cpu_freq()
            steal = getattr(psutil.cpu_times_percent(None), "steal", None)
            self._host.append((psutil.cpu_percent(None) / 100.0, freq.current if freq else None,
                               steal / 100.0 if steal is not None else None))

    def _file_main_threads(self, busy: List[Tuple[int, int, float, Optional[int]]]) -> None:
        """Per process, its busiest thread of the interval: where it ran, and whether a busy thread shared its core."""
        hot = [b for b in busy if b[2] >= BUSY and b[3] is not None]
        main: Dict[int, Tuple[int, int, float, Optional[int]]] = {}
        for b in hot:
            if b[0] not in main or b[2] > main[b[0]][2]:
                main[b[0]] = b
        for pid, (_, tid, _, where) in main.items():
            self._main_cpus.setdefault(pid, Counter())[where] += 1
            self._main_busy[pid] += 1
            core = self._cores.get(where, frozenset((where,)))
            if any(o[3] in core and (o[0], o[1]) != (pid, tid) for o in hot):
                self._main_shared[pid] += 1

    def stop(self) -> Optional[Dict[str, Any]]:
        if self._psutil is None:
            return None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return self.summary()

    def summary(self) -> Dict[str, Any]:
        procs = []
        for pid, (t0, c0) in self._first.items():
            t1, c1 = self._last[pid]
            span = t1 - t0
            threads = sorted(((self._threads1[k][0] - self._threads0[k], k[1]) for k in self._threads1 if k[0] == pid),
                             reverse=True)[:self.top_threads]
            n = self._main_busy.get(pid, 0)
            top = threads[0][1] if threads else None
            p0, p1 = self._preempt0.get((pid, top)), preemptions(pid, top) if top is not None else None
            procs.append({"name": self._names[pid], "pid": pid,
                          "cpu_cores_mean": (c1 - c0) / span if span > 0 else None,
                          "cpu_cores_peak": self._peak.get(pid),
                          "threads": [{"name": _thread_name(pid, tid), "cpu_cores_mean": cs / span if span > 0 else None}
                                      for cs, tid in threads],
                          "main_thread_busy_intervals": n,
                          "main_thread_cpus": len(self._main_cpus.get(pid, ())),
                          "main_thread_shared_frac": self._main_shared[pid] / n if n else None,
                          # how often its busiest thread was switched out while runnable, per second
                          "main_thread_preempted_per_s": (p1 - p0) / span if p0 is not None and p1 is not None
                          and span > 0 else None})
        procs.sort(key=lambda p: -(p["cpu_cores_mean"] or 0.0))
        busy = [b for b, _, _ in self._host]
        mhz = [m for _, m, _ in self._host if m]
        steal = [st for _, _, st in self._host if st is not None]
        wall = self._t - self._t0
        machine = {k: (v - self._machine0[k]) / wall for k, v in machine_counters().items()
                   if k in self._machine0 and wall > 0}
        return {"interval_s": self.interval_s, "samples": len(self._host), "processes": procs,
                "host_busy_frac": sum(busy) / len(busy) if busy else None,
                "host_cpus": self._psutil.cpu_count(), "host_cores": self._psutil.cpu_count(logical=False),
                "host_mhz_mean": sum(mhz) / len(mhz) if mhz else None,
                # the share of the host's CPU time its hypervisor gave to others: mean and worst interval
                "host_steal_frac": sum(steal) / len(steal) if steal else None,
                "host_steal_frac_peak": max(steal) if steal else None,
                # seconds per second of the mode: the cgroup throttled by its CPU quota, some task waiting for a CPU
                "cgroup_throttled_frac": machine.get("throttled_s"),
                "cpu_pressure_frac": machine.get("cpu_pressure_s")}


def processes_line(summary: Optional[Dict[str, Any]], top: int = 3) -> str:
    """`sglang::scheduler 0.98 (core shared 40%, preempted 12.5/s), bench 0.41; host 9% of 16, 2900 MHz, steal 3.1%`
    (cores in use on average over the mode; the share of busy intervals in which a process's main thread shared its
    physical core with another busy thread, and how often it was preempted, where it was; the host's steal share,
    quota throttling and CPU pressure where not zero)."""
    if not summary or not summary.get("processes"):
        return "-"
    parts = []
    for p in summary["processes"][:top]:
        if p["cpu_cores_mean"] is None:
            continue
        shared, pre = p.get("main_thread_shared_frac"), p.get("main_thread_preempted_per_s")
        notes = ([f"core shared {100 * shared:.0f}%"] if shared else []) + ([f"preempted {pre:.1f}/s"] if pre else [])
        parts.append(f"{p['name']} {p['cpu_cores_mean']:.2f}" + (f" ({', '.join(notes)})" if notes else ""))
    host = summary.get("host_busy_frac")
    tail = f"; host {100 * host:.0f}% of {summary.get('host_cpus')}" if host is not None else ""
    if summary.get("host_mhz_mean"):
        tail += f", {summary['host_mhz_mean']:.0f} MHz"
    for key, word in (("host_steal_frac", "steal"), ("cgroup_throttled_frac", "throttled"),
                      ("cpu_pressure_frac", "CPU pressure")):
        if summary.get(key):
            tail += f", {word} {100 * summary[key]:.1f}%"
    return ", ".join(parts) + tail
