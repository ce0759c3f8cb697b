"""Who holds the host's CPUs during a mode: our process, sglang's scheduler and detokenizer, everything else.

sglang runs its scheduler in a child process; its per-pass work (batch selection, result filing, kernel launches)
is what bounds a multi-turn rollout on the GPU (docs/benchmarks.md). A torch profile of that process found the same
torch ops 1.4-1.9x slower in the heavy-tail and tool-latency modes than with instant tools, at equal decode batch
sizes: the process ran slower per op, which points at the host (cores taken by other threads, clock), not at more
work. `ProcSampler` reads, every `interval_s`, the CPU times of this process and its descendants (each thread too)
and of the whole host, and reports per process the mean and peak share of one core, its busiest threads, and the
host's busy share and clock over the mode.

Process names come from the command line (`sglang::scheduler`: sglang retitles its processes), else `comm`; this
process is `bench`. Needs `psutil` (sglang's dependency); without it the sampler reports nothing.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional


def _name(proc) -> str:
    if proc.pid == os.getpid():
        return "bench"
    try:
        cmd = proc.cmdline()
        first = cmd[0].strip() if cmd else ""
        if first and " " not in first and "/" not in first:   # a retitled process (setproctitle)
            return first
        return proc.name()
    except Exception:
        return "?"


def _thread_name(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return str(tid)


class ProcSampler:
    """`start()`, run the mode, `stop()` -> summary dict (None where psutil is missing)."""

    def __init__(self, interval_s: float = 0.5, top_threads: int = 3):
        self.interval_s = float(interval_s)
        self.top_threads = int(top_threads)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._procs: Dict[int, Any] = {}
        self._names: Dict[int, str] = {}
        self._first: Dict[int, tuple] = {}        # pid -> (t, cpu_s) at first sight
        self._last: Dict[int, tuple] = {}         # pid -> (t, cpu_s) at the last sample
        self._peak: Dict[int, float] = {}         # pid -> highest share of one core between two samples
        self._threads0: Dict[tuple, float] = {}   # (pid, tid) -> cpu_s at first sight
        self._threads1: Dict[tuple, float] = {}
        self._host: List[tuple] = []              # (busy share, MHz)
        self._psutil = None

    def start(self) -> "ProcSampler":
        try:
            import psutil
        except ImportError:
            return self
        self._psutil = psutil
        self._me = psutil.Process()
        psutil.cpu_percent(None)   # the host's busy share is measured from here
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
        try:
            procs = [self._me] + self._me.children(recursive=True)
        except psutil.Error:
            procs = [self._me]
        for p in procs:
            try:
                with p.oneshot():
                    cpu = sum(p.cpu_times()[:2])
                    threads = p.threads()
            except psutil.Error:
                continue
            if p.pid not in self._first:
                self._first[p.pid] = (now, cpu)
                self._names[p.pid] = _name(p)
            elif p.pid in self._last:
                t, c = self._last[p.pid]
                if now > t:
                    self._peak[p.pid] = max(self._peak.get(p.pid, 0.0), (cpu - c) / (now - t))
            self._last[p.pid] = (now, cpu)
            for th in threads:
                key = (p.pid, th.id)
                self._threads0.setdefault(key, th.user_time + th.system_time)
                self._threads1[key] = th.user_time + th.system_time
        if host:
            freq = psutil.cpu_freq()
            self._host.append((psutil.cpu_percent(None) / 100.0, freq.current if freq else None))

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
            threads = sorted(((self._threads1[k] - self._threads0[k], k[1]) for k in self._threads1 if k[0] == pid),
                             reverse=True)[:self.top_threads]
            procs.append({"name": self._names[pid], "pid": pid,
                          "cpu_cores_mean": (c1 - c0) / span if span > 0 else None,
                          "cpu_cores_peak": self._peak.get(pid),
                          "threads": [{"name": _thread_name(pid, tid), "cpu_cores_mean": cs / span if span > 0 else None}
                                      for cs, tid in threads]})
        procs.sort(key=lambda p: -(p["cpu_cores_mean"] or 0.0))
        busy = [b for b, _ in self._host]
        mhz = [m for _, m in self._host if m]
        return {"interval_s": self.interval_s, "samples": len(self._host), "processes": procs,
                "host_busy_frac": sum(busy) / len(busy) if busy else None,
                "host_cpus": self._psutil.cpu_count(), "host_mhz_mean": sum(mhz) / len(mhz) if mhz else None}


def processes_line(summary: Optional[Dict[str, Any]], top: int = 3) -> str:
    """`sglang::scheduler 0.98, bench 0.41, sglang::detokenizer 0.05; host 9% of 16, 2900 MHz` (cores in use on
    average over the mode)."""
    if not summary or not summary.get("processes"):
        return "-"
    parts = [f"{p['name']} {p['cpu_cores_mean']:.2f}" for p in summary["processes"][:top] if p["cpu_cores_mean"] is not None]
    host = summary.get("host_busy_frac")
    tail = f"; host {100 * host:.0f}% of {summary.get('host_cpus')}" if host is not None else ""
    if summary.get("host_mhz_mean"):
        tail += f", {summary['host_mhz_mean']:.0f} MHz"
    return ", ".join(parts) + tail
