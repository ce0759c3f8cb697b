"""The engine's own profile of one benchmark mode (`--engine-profile`): sglang's torch profiler runs in its scheduler
process for a number of forward passes and writes a Chrome trace; this module waits for that trace and reads
where the scheduler's time went: GPU kernels busy vs idle, the idle gaps between them (CPU-side scheduling work),
and the kernels and CPU ops that took the most time.
"""
from __future__ import annotations

import asyncio
import bisect
import glob
import gzip
import json
import os
import re
import statistics
import time
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Tuple

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
# the CPU side of a record_function span (the trace repeats each on the GPU timeline as `gpu_user_annotation`)
CPU_SPAN_CATS = ("user_annotation", "cpu_op", "python_function")
GAP_MS = 1.0          # GPU idle gaps longer than this are counted (CPU-side work the GPU waits for)
TOP = 8


def _events(path: str) -> List[Dict[str, Any]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    events = data.get("traceEvents", []) if isinstance(data, dict) else data
    return [e for e in events if isinstance(e, dict) and e.get("ph") == "X" and "ts" in e]


def _union(intervals: Iterable[Tuple[float, float]]) -> List[Tuple[float, float]]:
    merged: List[Tuple[float, float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _top(events: List[Dict[str, Any]], n: int = TOP) -> List[Dict[str, Any]]:
    total: Dict[str, float] = defaultdict(float)
    count: Dict[str, int] = defaultdict(int)
    for e in events:
        name = str(e.get("name", "?"))[:100]
        total[name] += float(e.get("dur", 0.0))
        count[name] += 1
    best = sorted(total, key=total.get, reverse=True)[:n]
    return [{"name": k, "total_ms": total[k] / 1e3, "count": count[k]} for k in best]


_STEP = re.compile(r"step\[(\w+)(?: bs=(\d+))?(?: toks=(\d+))?\]")


def _step_spans(events: List[Dict[str, Any]]) -> List[Tuple[float, float, str, int, int]]:
    """sglang's span of each forward pass (`step[EXTEND bs=B toks=T]`, `step[DECODE bs=B]`, a record_function in
    ModelRunner.forward): (start us, end us, mode, batch size, new tokens), in time order."""
    out = []
    for e in events:
        m = _STEP.fullmatch(str(e.get("name", "")))
        if m and e.get("cat") in CPU_SPAN_CATS:
            ts = float(e["ts"])
            bs = int(m.group(2) or 0)
            out.append((ts, ts + float(e.get("dur", 0.0)), m.group(1), bs, int(m.group(3) or bs)))
    return sorted(out)


def _gpu_ms_per_step(events: List[Dict[str, Any]], spans: List[Tuple[float, float, str, int, int]]) -> List[float]:
    """GPU kernel time each forward pass launched: a kernel belongs to the pass whose span holds the CPU launch
    (cuda runtime / driver call) with the kernel's correlation id."""
    starts = [s[0] for s in spans]
    launch_step: Dict[Any, int] = {}
    for e in events:
        corr = (e.get("args") or {}).get("correlation")
        if corr is None or e.get("cat") not in ("cuda_runtime", "cuda_driver"):
            continue
        ts = float(e["ts"])
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= spans[i][1]:
            launch_step[corr] = i
    gpu = [0.0] * len(spans)
    for e in events:
        if e.get("cat") in GPU_CATS:
            i = launch_step.get((e.get("args") or {}).get("correlation"))
            if i is not None:
                gpu[i] += float(e.get("dur", 0.0)) / 1e3
    return gpu


def step_summary(events: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per forward mode (EXTEND = prefill, DECODE, ...): passes, mean batch size and new tokens, the CPU span of a
    pass (launching it), the GPU kernel time it launched, and the time from its start to the next pass's start
    (what a pass of that kind costs the step, scheduling included)."""
    spans = _step_spans(events)
    if not spans:
        return {}
    gpu = _gpu_ms_per_step(events, spans)
    by_mode: Dict[str, Dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i, (a, b, mode, bs, toks) in enumerate(spans):
        d = by_mode[mode]
        d["bs"].append(bs)
        d["toks"].append(toks)
        d["cpu"].append((b - a) / 1e3)
        d["gpu"].append(gpu[i])
        if i + 1 < len(spans):
            d["period"].append((spans[i + 1][0] - a) / 1e3)
    out = {}
    for mode, d in by_mode.items():
        out[mode] = {"passes": len(d["bs"]), "bs_mean": statistics.fmean(d["bs"]),
                     "tokens_mean": statistics.fmean(d["toks"]), "cpu_ms_mean": statistics.fmean(d["cpu"]),
                     "gpu_ms_mean": statistics.fmean(d["gpu"]),
                     "period_ms_mean": statistics.fmean(d["period"]) if d["period"] else None,
                     "period_ms_median": statistics.median(d["period"]) if d["period"] else None,
                     "period_s_total": sum(d["period"]) / 1e3}
    return out


def scheduler_spans(events: List[Dict[str, Any]]) -> Dict[str, float]:
    """Total milliseconds of sglang's scheduler stages (`scheduler.get_next_batch_to_run`, `.run_batch`,
    `.process_batch_result`, `.process_input_requests`: its record_function spans). The trace repeats each span on
    the GPU's timeline (`gpu_user_annotation`); only the CPU's count."""
    total: Dict[str, float] = defaultdict(float)
    for e in events:
        name = str(e.get("name", ""))
        if name.startswith("scheduler.") and e.get("cat") in CPU_SPAN_CATS:
            total[name] += float(e.get("dur", 0.0)) / 1e3
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def summarize_trace(path: str) -> Dict[str, Any]:
    """GPU busy share of the traced window, GPU idle gaps, top kernels and CPU ops of one Chrome trace."""
    events = _events(path)
    if not events:
        raise ValueError(f"{path}: no complete events in the trace")
    start = min(float(e["ts"]) for e in events)
    end = max(float(e["ts"]) + float(e.get("dur", 0.0)) for e in events)
    gpu = [e for e in events if e.get("cat") in GPU_CATS]
    busy = _union((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in gpu)
    gaps = [b[0] - a[1] for a, b in zip(busy, busy[1:])]
    long_gaps = [g for g in gaps if g > GAP_MS * 1e3]
    window = end - start
    busy_us = sum(b - a for a, b in busy)
    gpu_window = (busy[-1][1] - busy[0][0]) if busy else 0.0
    return {
        "trace": os.path.basename(path),
        "window_s": window / 1e6,
        "gpu_window_s": gpu_window / 1e6,          # first kernel start to last kernel end
        "gpu_busy_s": busy_us / 1e6,
        "gpu_busy_frac": busy_us / gpu_window if gpu_window > 0 else None,
        "gpu_kernels": sum(1 for e in gpu if e.get("cat") == "kernel"),
        "gpu_idle_gaps": {"over_ms": GAP_MS, "count": len(long_gaps), "total_s": sum(long_gaps) / 1e6,
                          "max_ms": max(long_gaps) / 1e3 if long_gaps else 0.0},
        "top_kernels": _top([e for e in gpu if e.get("cat") == "kernel"]),
        "top_cpu_ops": _top([e for e in events if e.get("cat") in ("cpu_op", "user_annotation")]),
        "steps": step_summary(events),
        "scheduler_ms": scheduler_spans(events),
    }


async def wait_for_traces(folder: str, before: Iterable[str], timeout_s: float = 120.0,
                          poll_s: float = 1.0) -> List[str]:
    """Trace files (`*.trace.json*`) that appeared in `folder` since `before`, once their sizes stop changing
    (sglang writes the trace before it answers stop_profile; a trace the profiler wrote on its own, after its
    passes, may still be in writing)."""
    before = set(before)
    deadline = time.monotonic() + timeout_s
    sizes: Dict[str, int] = {}
    while True:
        new = sorted(p for p in existing_traces(folder) if p not in before)
        now = {p: os.path.getsize(p) for p in new if os.path.exists(p)}
        if (new and now == sizes and all(v > 0 for v in now.values())) or time.monotonic() > deadline:
            return new
        sizes = now
        await asyncio.sleep(poll_s)


def existing_traces(folder: str) -> List[str]:
    return glob.glob(os.path.join(folder, "**", "*.trace.json*"), recursive=True)


def profile_markdown(mode: str, prof: Dict[str, Any]) -> str:
    """One line (and its top kernels) per trace of a mode, for its summary."""
    lines = []
    for t in prof.get("traces", []):
        frac = t.get("gpu_busy_frac")
        gaps = t["gpu_idle_gaps"]
        lines.append(f"- {mode}: {prof.get('passes')} forward passes traced over {t['gpu_window_s']:.2f} s, GPU busy "
                     f"{'-' if frac is None else f'{100 * frac:.0f}%'}; {gaps['count']} GPU idle gaps > "
                     f"{gaps['over_ms']:g} ms ({gaps['total_s']:.2f} s, longest {gaps['max_ms']:.1f} ms); trace "
                     f"`{t['trace']}`")
        for kind, st in t.get("steps", {}).items():
            per = st["period_ms_median"]
            lines.append(f"  - {kind}: {st['passes']} passes, batch {st['bs_mean']:.0f}, {st['tokens_mean']:.0f} new tokens; "
                         f"GPU {st['gpu_ms_mean']:.1f} ms, CPU launch {st['cpu_ms_mean']:.1f} ms, next pass after "
                         f"{'-' if per is None else f'{per:.1f}'} ms (median; {st['period_s_total']:.2f} s in all)")
        sched = t.get("scheduler_ms") or {}
        if sched:
            lines.append("  - scheduler: " + ", ".join(f"{k.split('.', 1)[1]} {v:.0f} ms" for k, v in sched.items()))
        kern = ", ".join(f"{k['name'][:48]} {k['total_ms']:.0f} ms" for k in t["top_kernels"][:4])
        if kern:
            lines.append(f"  - top kernels: {kern}")
    if prof.get("profiled_step_wall_s_mean") is not None:
        lines.append(f"  - the profiled run's step: {prof['profiled_step_wall_s_mean']:.2f} s (the profiler's own cost "
                     "included; not a measurement)")
    if prof.get("error"):
        lines.append(f"- {mode}: engine profile incomplete: {prof['error']}")
    return "\n".join(lines)


async def profiled(engine, folder: str, passes: int, run):
    """Run `await run(start)` with the engine's profiler on for (at most) `passes` forward passes from the moment
    `run` awaits `start()` (a carry-over mode starts it after its warm-up step); returns (run's result, the profile:
    {"passes", "dir", "traces": [summaries]} or {"error": ...})."""
    os.makedirs(folder, exist_ok=True)
    before = existing_traces(folder)
    prof: Dict[str, Any] = {"passes": int(passes), "dir": folder}
    started = False

    async def start() -> None:
        nonlocal started
        if started:
            return
        started = True
        try:
            await engine.start_profile(folder, int(passes))
        except Exception as e:   # the benchmark itself goes on: the profile is extra
            prof["error"] = f"start_profile failed: {e}"

    try:
        result = await run(start)
    finally:
        if started and "error" not in prof:
            try:
                await engine.stop_profile()
            except Exception as e:
                prof["stop_error"] = str(e)
    if "error" in prof:
        return result, prof
    if not started:
        prof["error"] = "the run never started the profiler"
        return result, prof
    paths = await wait_for_traces(folder, before)
    traces, errors = [], []
    for p in paths:
        try:
            traces.append(dict(summarize_trace(p), trace=os.path.relpath(p, folder)))   # replica-K/... with replicas
        except (OSError, ValueError) as e:
            errors.append(f"{os.path.basename(p)}: {e}")
    prof["traces"] = traces
    if errors or not paths:
        prof["error"] = "; ".join(errors) or f"no trace appeared in {folder}"
    return result, prof
