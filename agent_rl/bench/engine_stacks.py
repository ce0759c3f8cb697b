"""Where sglang's scheduler spends its time (`agent-rl bench --sample-engine-stacks`): its main thread's Python stack,
sampled inside its own process.

The scheduler runs in a process sglang spawns; its CPU share says nothing about what it does (it polls for work in a
busy loop: one core, idle or not). `enabled(dir)` puts `engine_stacks_site/` first on `PYTHONPATH` (and the folder
in `AGENT_RL_ENGINE_STACKS_DIR`) while the engine starts, so every Python process it spawns runs that folder's
`sitecustomize` at start-up, which calls `child_start`: `StackSampler` samples the process's main thread every
`INTERVAL_S` (by a timer signal on that thread; a daemon thread where it cannot: stack_sampler.py says why the
first is the one to trust) (the event-loop sampler of `--sample-stacks`, `focus="sglang/"`: the innermost
sglang frame of each stack besides the innermost library one) and writes its cumulative seconds to
`DIR/<pid>.json`, with the process title (`sglang::scheduler` once sglang has set it), whenever `DIR/want` is newer
than its last write (and every `WRITE_S`). The bench asks for a write at each mode's start and end (`snapshot`
waits for it, outside every timing) and reports the difference (`between`): the owners' shares of wall and CPU
time, the functions seen most, the loop's stages and, per stage, the innermost functions it was in (`stage_leaves`,
`stage | path:function`: e.g. a host sync inside an admission).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional

SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_stacks_site")
ENV = "AGENT_RL_ENGINE_STACKS_DIR"
INTERVAL_S = 0.005
WRITE_S = 5.0
KEEP = 3000   # functions kept per file (most seen first)
_KEYS = ("owners", "owners_cpu", "functions", "focus_functions", "stages", "stage_leaves")
LEAVES = 40   # `stage_leaves` kept per mode in the JSON (the summary prints none)
STAGE_UNDER = "event_loop"   # sglang's scheduler loops (`event_loop_overlap`, `event_loop_normal`, ...): their steps


@contextlib.contextmanager
def enabled(out_dir: str) -> Iterator[str]:
    """Python processes started inside the block sample their main thread into `out_dir`."""
    if not os.path.isfile(os.path.join(SITE, "sitecustomize.py")):
        raise FileNotFoundError(f"{SITE}/sitecustomize.py is missing: this install of agent_rl lacks its package data")
    os.makedirs(out_dir, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", ENV)}
    os.environ["PYTHONPATH"] = SITE + (os.pathsep + saved["PYTHONPATH"] if saved["PYTHONPATH"] else "")
    os.environ[ENV] = os.path.abspath(out_dir)
    try:
        yield out_dir
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _title() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return sys.argv[0] if sys.argv else ""


def folder(out: str) -> str:
    """Where a bench writing to `out` has its engine's processes put their figures."""
    return os.path.abspath(os.path.join(out, "engine-stacks"))


def child_start(out_dir: str) -> threading.Thread:
    """In a spawned process: sample its main thread, write the cumulative figures when asked and every WRITE_S."""
    from agent_rl.bench.stack_sampler import StackSampler

    sampler = StackSampler(thread_id=threading.main_thread().ident, interval_s=INTERVAL_S, top=KEEP, focus="sglang/",
                           stage_under=STAGE_UNDER)
    timer = sampler.start_timer()   # False where this is not the main thread or SIGALRM is taken
    path, want = os.path.join(out_dir, f"{os.getpid()}.json"), os.path.join(out_dir, "want")

    def write() -> None:
        data = {"pid": os.getpid(), "title": _title(), "t": time.time(), "samples": sampler.samples,
                "interval_s": INTERVAL_S, "method": sampler.method or "thread", "cpu_s": sampler.cpu_s,
                "owners": dict(sampler.owners), "owners_cpu": dict(sampler.owners_cpu),
                "functions": dict(sampler.functions.most_common(KEEP)),
                "focus_functions": dict(sampler.focus_functions.most_common(KEEP)),
                "stages": dict(sampler.stages.most_common(KEEP)),
                "stage_leaves": dict(sampler.stage_leaves.most_common(KEEP))}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    def asked(since: float) -> bool:
        try:
            return os.stat(want).st_mtime >= since
        except OSError:
            return False

    def loop() -> None:
        last = time.time()
        while True:
            time.sleep(INTERVAL_S)
            if not timer:
                sampler.sample_once()
            if time.time() - last >= WRITE_S or asked(last):
                last = time.time()
                try:
                    write()
                except OSError:
                    if not os.path.isdir(out_dir):
                        return   # the folder is gone: stop quietly

    t = threading.Thread(target=loop, name="agent-rl-engine-stacks", daemon=True)
    t.start()
    return t


def _read(out_dir: str, title: str) -> List[Dict[str, Any]]:
    found = []
    for path in glob.glob(os.path.join(out_dir, "*.json")):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if title in str(data.get("title", "")):
            found.append(data)
    return found


def snapshot(out_dir: str, title: str = "scheduler", wait_s: float = 10.0) -> Optional[Dict[str, Any]]:
    """The cumulative figures of the processes whose title holds `title`, summed (tensor-parallel ranks), as of now:
    asks them to write and waits (up to `wait_s`) until each has; None when none has written at all."""
    asked = time.time()
    with open(os.path.join(out_dir, "want"), "w") as f:
        f.write(str(asked))
    os.utime(os.path.join(out_dir, "want"), (asked, asked))
    deadline = time.monotonic() + wait_s
    found = _read(out_dir, title)
    while (not found or any(d.get("t", 0) < asked for d in found)) and time.monotonic() < deadline:
        time.sleep(0.005)
        found = _read(out_dir, title)
    if not found:
        return None
    out: Dict[str, Any] = {"processes": len(found), "titles": sorted({d["title"] for d in found}),
                           "samples": sum(d.get("samples", 0) for d in found), "interval_s": found[0].get("interval_s"),
                           "method": found[0].get("method", "thread"), "cpu_s": sum(d.get("cpu_s", 0.0) for d in found)}
    for key in _KEYS:
        total: Counter = Counter()
        for d in found:
            total.update(d.get(key) or {})
        out[key] = dict(total)
    return out


def between(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]], top: int = 12) -> Optional[Dict[str, Any]]:
    """What the sampled processes did from snapshot `a` to snapshot `b` (a None `a`: from their start): shares of
    wall time by owner and function, of CPU time by owner."""
    if b is None:
        return None
    a = a or {}

    def diff(key: str) -> Counter:
        d = Counter(b.get(key) or {})
        d.subtract(a.get(key) or {})
        return Counter({k: v for k, v in d.items() if v > 1e-9})

    owners = diff("owners")
    wall = sum(owners.values())
    if wall <= 0:
        return None
    cpu, stages = diff("owners_cpu"), diff("stages")
    busy = sum(cpu.values())
    # method signal: owners_cpu holds the busy looks' wall time, the CPU clock comes apart (stack_sampler.py)
    cpu_s = b.get("cpu_s", 0.0) - a.get("cpu_s", 0.0) if b.get("method") == "signal" else busy
    out = {"processes": b["processes"], "titles": b["titles"], "samples": b["samples"] - a.get("samples", 0),
           "interval_s": b.get("interval_s"), "method": b.get("method", "thread"), "wall_s": wall,
           "owners": {k: v / wall for k, v in owners.most_common()},
           "functions": [[k, v / wall] for k, v in diff("functions").most_common(top)],
           "focus_functions": [[k, v / wall] for k, v in diff("focus_functions").most_common(top)],
           "stages": [[k, v / wall] for k, v in stages.most_common(top)],
           "loop_steps": [[k, v / wall] for k, v in loop_steps(stages).most_common(top)],
           "stage_leaves": [[k, v / wall] for k, v in diff("stage_leaves").most_common(LEAVES)]}
    if cpu_s > 0 and busy > 0:
        out["cpu_s"] = cpu_s
        out["owners_cpu"] = {k: v / busy for k, v in cpu.most_common()}
    return out


def loop_steps(stages: Dict[str, float]) -> Counter:
    """Stage chains (`a > b > c`) summed by their outermost step (`a`): the loop's own steps."""
    out: Counter = Counter()
    for chain, v in stages.items():
        out[chain.split(" > ", 1)[0]] += v
    return out


def us_per_token(st: Optional[Dict[str, Any]], tokens: Any) -> Optional[float]:
    """The sampled thread's wall time in microseconds per generated token of its window (`st["tokens"]` where the
    bench recorded them with the samples, else `tokens`); None without samples or tokens."""
    tokens = (st or {}).get("tokens") or tokens
    if not st or not tokens or not st.get("wall_s"):
        return None
    return 1e6 * st["wall_s"] / float(tokens)


def per_token_line(st: Optional[Dict[str, Any]], tokens: Any, limit: int = 5) -> str:
    """`us_per_token` in all and in the largest stages (named by their innermost step): `per token 29.4 us:
    process_batch_result_decode 8.4, forward 5.9, ...`. Shares move when any stage changes; these compare across
    runs. '' without tokens."""
    us = us_per_token(st, tokens)
    if us is None:
        return ""
    parts = ", ".join(f"`{k.rsplit(' > ', 1)[-1].split(':', 1)[-1]}` {us * v:.2f}" for k, v in
                      (st.get("stages") or [])[:limit])
    return f"per generated token {us:.2f} us" + (f" ({parts})" if parts else "")


def gpu_wait(st: Optional[Dict[str, Any]]) -> float:
    """The share of the sampled thread's wall time spent waiting for the GPU (a CUDA stream's or event's
    `synchronize`, in any stage): high = the engine is bound by the GPU, not by its scheduler's Python."""
    return sum(v for k, v in (st or {}).get("stage_leaves") or []
               if k.rsplit(" | ", 1)[-1].startswith("torch/cuda/") and k.endswith(":synchronize"))


def summary_line(st: Optional[Dict[str, Any]], limit: int = 6) -> str:
    """`sglang 71%, zmq 20%, torch 9%; sglang's own: managers/scheduler.py:recv_requests 30%, ...; waiting for the
    GPU 12%`"""
    if not st:
        return "–"
    from agent_rl.bench.stack_sampler import owners_line

    own = ", ".join(f"`{k.split('/', 2)[-1]}` {100 * v:.0f}%" for k, v in st["focus_functions"][:limit])
    steps = ", ".join(f"`{k}` {100 * v:.0f}%" for k, v in (st.get("loop_steps") or [])[:limit])
    wait = gpu_wait(st)
    return (f"{owners_line(st)}; sglang's frames: {own or '–'}" + (f"; its loop's steps: {steps}" if steps else "")
            + (f"; waiting for the GPU (`synchronize`) {100 * wait:.0f}%" if "stage_leaves" in st else "")
            + f" ({st['samples']} samples)")
