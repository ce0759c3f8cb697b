"""Repeated rounds of one benchmark (`bench rollout|suite --rounds R`).

On the GPU host the raw engine moved by 10-30% between runs minutes apart (docs/benchmarks-log.md), so one pass of each
mode cannot tell a 10% change from noise. A round is the raw-engine ceiling followed by every mode; rounds alternate
the mode order (forward, reversed, ...) so that a slow drift of the machine lands on every mode alike. The merged
result keeps round 0's traces (plots, CDFs) and replaces the headline numbers with figures over all rounds.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence, TypeVar

from agent_rl.bench.results import charged_step_s

T = TypeVar("T")

# per-mode numbers that become the mean over rounds (ratios and rates: each round's own value, then the mean)
_MEAN_KEYS = ("gen_tokens_per_s", "kept_tokens_per_s", "trajectories_per_s", "inflight_mean", "loop_cpu_frac",
              "policy_lag_mean")
# peaks: the largest over rounds
_MAX_KEYS = ("inflight_peak", "policy_lag_max")
# counts and seconds: summed over rounds
_SUM_KEYS = ("wall_s", "engine_busy_s", "engine_idle_s", "gen_tokens", "kept_tokens", "trajectories_kept", "launched",
             "aborted", "carried", "loop_cpu_s", "gc_s", "engine_requests", "engine_output_tokens", "engine_aborted_requests",
             "engine_output_messages", "engine_outputs", "stock_drawn_tokens",
             "stock_end_tokens", "sim_decode_passes", "sim_prefill_passes")
# per-trajectory latency percentiles: the median of the rounds' own percentiles
_MEDIAN_KEYS = ("latency_p50_s", "latency_p90_s", "latency_p99_s", "ratio_to_ceiling", "ratio_to_turns_ceiling")
# what each round keeps in `rounds` (the spread a reader needs to judge a difference), and its `step_wall_s_charged`
ROUND_KEYS = ("step_wall_s_mean", "ratio_to_ceiling", "ratio_to_turns_ceiling", "gen_tokens_per_s", "latency_p50_s")
# traces that the merged result keeps from round 0 only (the JSON's `round_results` leaves them out)
HEAVY_KEYS = ("completion_s", "busy_intervals", "step_bounds", "step_metrics", "loop_stacks", "engine_stacks",
              "replica_requests", "kv_sessions")


def round_order(items: Sequence[T], r: int) -> List[T]:
    """Round r's order: as given on even rounds, reversed on odd ones."""
    return list(items) if r % 2 == 0 else list(reversed(items))


def _values(rows: List[Dict[str, Any]], key: str) -> List[float]:
    return [row[key] for row in rows if row.get(key) is not None]


def merge_ceilings(ceilings: List[Optional[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
    """The round with the median raw-engine throughput (of an even count the faster middle one: a ratio to it is
    never flattered), with every round's tokens/s beside it."""
    got = [c for c in ceilings if c]
    if not got:
        return None
    if len(got) == 1:
        return got[0]
    ranked = sorted(got, key=lambda c: c["tokens_per_s"])
    out = dict(ranked[len(ranked) // 2])
    out["tokens_per_s_rounds"] = [c["tokens_per_s"] for c in got]
    turns = [c["turns"]["tokens_per_s"] for c in got if c.get("turns")]
    if out.get("turns") and turns:   # the engine alone on the turns: that round's, every round's beside it
        out["turns"] = dict(out["turns"], tokens_per_s_rounds=turns)
    return out


def merge_modes(rounds: List[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """`rounds[r]` = round r's mode results (any order); the merged list follows round 0's order."""
    if len(rounds) == 1:
        return rounds[0]
    merged = []
    for first in rounds[0]:
        same = [next(m for m in rnd if m["mode"] == first["mode"]) for rnd in rounds]
        out = dict(first)
        out["step_wall_s"] = [s for m in same for s in m["step_wall_s"]]
        if any(m.get("warmup_step_wall_s") for m in same):   # carry-over: each round's own warm-up steps
            out["warmup_step_wall_s"] = [s for m in same for s in m.get("warmup_step_wall_s") or []]
        out["step_wall_s_mean"] = statistics.fmean(out["step_wall_s"]) if out["step_wall_s"] else None
        for k in _MEAN_KEYS:
            v = _values(same, k)
            out[k] = statistics.fmean(v) if v else None
        for k in _MEDIAN_KEYS:
            v = _values(same, k)
            out[k] = statistics.median(v) if v else None
        means = _values(same, "step_wall_s_mean")
        out["step_wall_s_range"] = [min(means), max(means)] if means else None
        for k in _SUM_KEYS:
            v = _values(same, k)
            out[k] = sum(v) if v else first.get(k)
        out["engine_idle_frac"] = out["engine_idle_s"] / out["wall_s"] if out.get("wall_s") and "engine_idle_s" in out else None
        for k in _MAX_KEYS:
            v = _values(same, k)
            out[k] = max(v) if v else None
        out["step_wall_s_charged"] = charged_step_s(out)   # the summed tokens over every round's steps
        out["rounds"] = [dict({k: m.get(k) for k in ROUND_KEYS}, step_wall_s_charged=charged_step_s(m)) for m in same]
        merged.append(out)
    return merged


def paired(ref: Dict[str, Any], mode: Dict[str, Any], key: str = "step_wall_s_mean") -> Optional[List[float]]:
    """Round by round, `mode`'s mean step time over `ref`'s (both ran in that round, minutes apart at most), or
    None without rounds (`key="step_wall_s_charged"`: carry-over with its stock change charged,
    `results.charged_step_s`). The machine's pace changes within one run (the H200's decode rate at 256 rows flipped
    between ~50k and ~75k tokens/s from one step to the next, 2026-12-04): pooled means compare where each mode's
    steps happened to fall, these ratios show whether a difference holds in every round."""
    a, b = ref.get("rounds") or [], mode.get("rounds") or []
    if len(a) < 2 or len(a) != len(b):
        return None
    return [y[key] / x[key] for x, y in zip(a, b) if x.get(key) and y.get(key) is not None]


def step_range(mode: Dict[str, Any]) -> str:
    """' (lo-hi)' after a step time when rounds were run, else ''."""
    r = mode.get("step_wall_s_range")
    return f" ({r[0]:.2f}-{r[1]:.2f})" if r and len(mode.get("rounds") or ()) > 1 else ""


def ceiling_rounds(ceiling: Dict[str, Any]) -> str:
    """'rounds: a, b, c tokens/s (the median shown)' for a raw-engine run repeated in rounds, else ''."""
    r = ceiling.get("tokens_per_s_rounds")
    return "rounds: " + ", ".join(f"{v:.0f}" for v in r) + " tokens/s (the median shown)" if r and len(r) > 1 else ""
