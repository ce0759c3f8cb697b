"""Counters and latency percentiles of tool calls, flattened for the metrics logger.

Names (per tool, then totals):
    tools/<name>/calls, tools/<name>/errors/<kind>, tools/<name>/retries, tools/<name>/truncated,
    tools/<name>/latency_mean_s, tools/<name>/latency_p50_s, tools/<name>/latency_p99_s,
    tools/<name>/<metric>_mean   (mean of numeric / bool metrics the tool returned, e.g. success_mean)
    tools/calls, tools/errors/<kind>   (all tools, plus errors not tied to a tool such as parse_error)
"""
from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import Any, Dict, List, Optional

from agent_rl.tool_runtime.record import OK

MAX_LATENCY_SAMPLES = 100_000


def percentile(values: List[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (numpy's default 'linear'), q in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class ToolMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._calls: Dict[str, int] = defaultdict(int)
        self._errors: Dict[Optional[str], Dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._latency: Dict[str, List[float]] = defaultdict(list)
        self._retries: Dict[str, int] = defaultdict(int)
        self._truncated: Dict[str, int] = defaultdict(int)
        self._tool_sums: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))

    def record_call(self, name: str, latency_s: float, status: str, tool_metrics: Optional[Dict[str, Any]] = None) -> None:
        with self._lock:
            self._calls[name] += 1
            lat = self._latency[name]
            if len(lat) < MAX_LATENCY_SAMPLES:
                lat.append(latency_s)
            if status != OK:
                self._errors[name][status] += 1
            for k, v in (tool_metrics or {}).items():
                if isinstance(v, (bool, int, float)) and math.isfinite(float(v)) and isinstance(k, str):
                    acc = self._tool_sums[name][k]
                    acc[0] += float(v)
                    acc[1] += 1

    def record_error(self, name: Optional[str], kind: str) -> None:
        """Count an error not produced by `ToolSession.call` (parse errors of the agent loop, release failures...)."""
        with self._lock:
            self._errors[name][kind] += 1

    def record_retry(self, name: str) -> None:
        with self._lock:
            self._retries[name] += 1

    def record_truncated(self, name: str) -> None:
        with self._lock:
            self._truncated[name] += 1

    def snapshot(self, reset: bool = False) -> Dict[str, float]:
        with self._lock:
            out: Dict[str, float] = {}
            names = set(self._calls) | {n for n in self._errors if n is not None} | set(self._retries)
            totals: Dict[str, int] = defaultdict(int)
            for name in sorted(names):
                p = f"tools/{name}"
                out[f"{p}/calls"] = self._calls.get(name, 0)
                lat = self._latency.get(name) or []
                if lat:
                    out[f"{p}/latency_mean_s"] = sum(lat) / len(lat)
                    out[f"{p}/latency_p50_s"] = percentile(lat, 50)
                    out[f"{p}/latency_p99_s"] = percentile(lat, 99)
                if self._retries.get(name):
                    out[f"{p}/retries"] = self._retries[name]
                if self._truncated.get(name):
                    out[f"{p}/truncated"] = self._truncated[name]
                for k, (s, n) in sorted(self._tool_sums.get(name, {}).items()):
                    if n:
                        out[f"{p}/{k}_mean"] = s / n
            for name, kinds in self._errors.items():
                for kind, n in kinds.items():
                    if name is not None:
                        out[f"tools/{name}/errors/{kind}"] = n
                    totals[kind] += n
            out["tools/calls"] = sum(self._calls.values())
            for kind, n in sorted(totals.items()):
                out[f"tools/errors/{kind}"] = n
            if reset:
                self._reset()
            return out
