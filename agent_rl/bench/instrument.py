"""An `Engine` wrapper that records when the engine is busy.

Busy = at least one `generate` in flight. Because busy time is tracked with an in-flight counter,
the recorded intervals are already disjoint: their sum is the union, and idle = wall - busy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams


@dataclass
class EngineTrace:
    t0: float = field(default_factory=time.perf_counter)
    busy: List[Tuple[float, float]] = field(default_factory=list)   # disjoint (start, end), seconds from t0
    events: List[Tuple[float, int]] = field(default_factory=list)   # (time, requests in flight after the change)
    requests: int = 0
    output_tokens: int = 0
    prompt_tokens: int = 0
    aborted_requests: int = 0


def busy_seconds(intervals: Iterable[Tuple[float, float]], start: float, end: float) -> float:
    """Length of the union of `intervals` clipped to [start, end] (intervals may overlap)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted((max(s, start), min(e, end)) for s, e in intervals):
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


class InstrumentedEngine(Engine):
    """Delegates everything to `inner`; `reset()` starts a new trace (one per benchmark mode)."""

    def __init__(self, inner: Engine):
        self.inner = inner
        self.name = getattr(inner, "name", "engine")
        self._inflight = 0
        self._busy_since: Optional[float] = None
        self.trace = EngineTrace()

    def __getattr__(self, item):  # backend extras (tokenizer, model, ...) stay reachable
        return getattr(self.inner, item)

    def reset(self) -> EngineTrace:
        self.trace = EngineTrace()
        self._busy_since = 0.0 if self._inflight else None   # seconds from the new trace's t0
        return self.trace

    def _now(self) -> float:
        return time.perf_counter() - self.trace.t0

    def _change(self, delta: int) -> None:
        now = self._now()
        self._inflight += delta
        if delta > 0 and self._inflight == 1:
            self._busy_since = now
        elif delta < 0 and self._inflight == 0 and self._busy_since is not None:
            self.trace.busy.append((max(0.0, self._busy_since), now))
            self._busy_since = None
        self.trace.events.append((now, self._inflight))

    def close_trace(self) -> EngineTrace:
        """Close an interval still open (requests in flight when the mode ended)."""
        if self._inflight and self._busy_since is not None:
            now = self._now()
            self.trace.busy.append((max(0.0, self._busy_since), now))
            self._busy_since = now
        return self.trace

    async def generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str) -> GenerateOutput:
        trace = self.trace
        self._change(+1)
        try:
            out = await self.inner.generate(input_ids, sampling, request_id)
        finally:
            self._change(-1)
        trace.requests += 1
        trace.prompt_tokens += len(input_ids)
        trace.output_tokens += len(out.output_ids)
        if out.finish_reason == "abort":
            trace.aborted_requests += 1
        return out

    async def abort(self, request_id: str) -> None:
        await self.inner.abort(request_id)

    async def end_session(self, session: str) -> None:
        await self.inner.end_session(session)

    async def update_weights(self, named_tensors) -> None:
        await self.inner.update_weights(named_tensors)

    async def flush_cache(self):
        return await self.inner.flush_cache()

    async def release_memory(self) -> None:
        await self.inner.release_memory()

    async def resume_memory(self) -> None:
        await self.inner.resume_memory()

    async def shutdown(self) -> None:
        await self.inner.shutdown()


def inflight_stats(events: List[Tuple[float, int]], wall_s: float) -> Tuple[int, float]:
    """(peak, time-weighted mean over [0, wall_s]) of the requests in flight: the engine's decode batch as we feed it."""
    peak, area, last_t, level = 0, 0.0, 0.0, 0
    for t, n in events:
        t = min(max(t, 0.0), wall_s)
        area += level * (t - last_t)
        last_t, level = t, n
        peak = max(peak, n)
    area += level * max(0.0, wall_s - last_t)
    return peak, area / wall_s if wall_s > 0 else 0.0


def trace_summary(trace: EngineTrace, wall_s: float) -> Dict[str, float]:
    busy = busy_seconds(trace.busy, 0.0, wall_s)
    peak, mean = inflight_stats(trace.events, wall_s)
    return {
        "inflight_peak": peak,
        "inflight_mean": mean,
        "engine_busy_s": busy,
        "engine_idle_s": max(0.0, wall_s - busy),
        "engine_idle_frac": max(0.0, wall_s - busy) / wall_s if wall_s > 0 else 0.0,
        "engine_requests": trace.requests,
        "engine_output_tokens": trace.output_tokens,
        "engine_aborted_requests": trace.aborted_requests,
    }
