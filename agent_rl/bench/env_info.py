"""Where a benchmark ran: versions, device, git commit (recorded with every result file)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import Any, Dict, Optional


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Optional[str] = None) -> str:
    import torch

    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        idx = torch.device(device).index if device and ":" in str(device) else 0
        return f"{torch.cuda.get_device_name(idx or 0)} x{torch.cuda.device_count()}"
    return f"CPU: {_cpu_name()} ({os.cpu_count()} cores)"


COMMIT_ENV = "AGENT_RL_COMMIT"


def git_commit(path: Optional[str] = None) -> Dict[str, Any]:
    """The commit the code runs from: `$AGENT_RL_COMMIT` when set (a tree copied without its history, e.g. the GPU
    host's copy of a working tree or a `git archive` of an older commit, whose git would name another commit), else
    `git rev-parse HEAD` and whether tracked files differ from it."""
    given = os.environ.get(COMMIT_ENV, "").strip()
    if given:
        return {"commit": given, "dirty": None, "commit_source": COMMIT_ENV}
    cwd = path or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def commit_line(env: Dict[str, Any]) -> str:
    """The summaries' commit line."""
    source = f" (as ${env['commit_source']} gives it)" if env.get("commit_source") else ""
    return f"- git commit: {env.get('commit') or 'unknown'}{' (dirty tree)' if env.get('dirty') else ''}{source}"


def cpu_probe_ms(repeats: int = 5) -> float:
    """Milliseconds a fixed piece of pure-Python work takes on this host (the best of `repeats`): dicts, lists, string
    formatting and arithmetic, the kind of work a rollout's event loop does a turn. Two 135M 128x8 suites on two H100
    hosts put turn-batched's loop CPU a request, for the same turns and code, at 0.39 and 0.69 ms (2026-12-07); this
    says how fast the host that wrote a figure ran Python."""
    def work() -> int:
        total = 0
        for i in range(20000):
            d = {"id": i, "text": f"turn {i}", "ids": [i, i + 1, i + 2]}
            total += len(d["text"]) + sum(d["ids"])
        return total
    best = float("inf")
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t)
    return 1e3 * best


def device_line(env: Dict[str, Any]) -> str:
    """The summaries' device line: accelerator, host CPU (unless the device already names it) and its probe, versions."""
    probe, cpu = env.get("cpu_probe_ms"), env.get("cpu")
    parts = ([f"host CPU {cpu}"] if cpu and cpu not in env["device"] else []) \
        + ([f"fixed Python work {probe:.1f} ms"] if cpu and probe is not None else [])
    host = "; " + ", ".join(parts) if parts else ""
    return (f"- device: {env['device']}{host}; python {env['python']}, torch {env['torch']}, "
            f"transformers {env['transformers']}, sglang {env['sglang'] or 'not installed'}")


def environment(device: Optional[str] = None) -> Dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "sglang": _version("sglang"),
        "agent_rl": _version("agent-rl"),
        "platform": platform.platform(),
        "device": device_name(device),
        "cpu": _cpu_name(),
        "cpu_probe_ms": cpu_probe_ms(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        **git_commit(),
    }
