"""Per-mode numbers of the rollout benchmark, computed from what each step recorded."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from agent_rl.bench.instrument import EngineTrace, trace_summary


@dataclass
class TrajStat:
    group: int
    sample: int
    step: int                 # step that ended it (kept / aborted) or left it unfinished (carried)
    status: str               # finished | aborted | carried
    kept: bool                # entered the step's training batch
    gen_tokens: int           # engine-sampled tokens (all steps, for a resumed trajectory)
    planned_tokens: int       # what the workload planned for it
    start_s: float            # seconds from the mode's start
    end_s: float


@dataclass
class StepStat:
    step: int
    start_s: float
    end_s: float
    trajectories: List[TrajStat] = field(default_factory=list)
    metrics: Dict[str, Any] = field(default_factory=dict)   # the scheduler's step metrics (async modes)

    @property
    def wall_s(self) -> float:
        return self.end_s - self.start_s


def _pct(values, q) -> Optional[float]:
    return float(np.percentile(values, q)) if len(values) else None


def _mean(values) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def summarize_mode(name: str, steps: List[StepStat], trace: EngineTrace, ceiling_tokens_per_s: Optional[float],
                   settings: Dict[str, Any]) -> Dict[str, Any]:
    wall = steps[-1].end_s - steps[0].start_s if steps else 0.0
    trajs = [t for s in steps for t in s.trajectories]
    kept = [t for t in trajs if t.kept]
    launched = list({(t.group, t.sample): t for t in trajs}.values())  # every launched trajectory, once (last record)
    latency = [t.end_s - t.start_s for t in kept]
    completion = []  # seconds from the start of the step that kept it (0: finished during an earlier step, carried)
    by_start = {"fresh": [], "resumed": [], "earlier": []}   # kept latencies by where the trajectory began and ended
    for s in steps:
        for t in s.trajectories:
            if t.kept:
                completion.append(max(0.0, t.end_s - s.start_s))
                where = "fresh" if t.start_s >= s.start_s else "resumed" if t.end_s > s.start_s else "earlier"
                by_start[where].append(t.end_s - t.start_s)
    gen_tokens = trace.output_tokens
    tps = gen_tokens / wall if wall > 0 else 0.0
    out: Dict[str, Any] = {
        "mode": name,
        **settings,
        "steps": len(steps),
        "wall_s": wall,
        "step_wall_s": [s.wall_s for s in steps],
        "step_wall_s_mean": _mean([s.wall_s for s in steps]),
        "trajectories_kept": len(kept),
        "trajectories_per_s": len(kept) / wall if wall > 0 else 0.0,
        "gen_tokens": int(gen_tokens),
        "gen_tokens_per_s": tps,
        "kept_tokens": int(sum(t.gen_tokens for t in kept)),
        "kept_tokens_per_s": sum(t.gen_tokens for t in kept) / wall if wall > 0 else 0.0,
        "ratio_to_ceiling": tps / ceiling_tokens_per_s if ceiling_tokens_per_s else None,
        "latency_p50_s": _pct(latency, 50),
        "latency_p90_s": _pct(latency, 90),
        "latency_p99_s": _pct(latency, 99),
        # carry-over's kept trajectories by origin: launched in the keeping step ("fresh"), launched earlier and
        # finished in it ("resumed": their latency spans the steps between), finished in an earlier step
        # ("earlier": a cut group's sample that was done); count and latency p50 of each
        "kept_by_origin": {k: {"count": len(v), "latency_p50_s": _pct(v, 50)} for k, v in by_start.items()},
        "launched": len(launched),
        "aborted": sum(1 for t in trajs if t.status == "aborted"),
        "carried": sum(1 for t in trajs if t.status == "carried"),
        # Reward-bias check: over-sampling keeps the groups that finish first, i.e. the short ones.
        "bias": {
            "mean_gen_tokens_kept": _mean([t.gen_tokens for t in kept]),
            "mean_planned_tokens_kept": _mean([t.planned_tokens for t in kept]),
            "mean_planned_tokens_all": _mean([t.planned_tokens for t in launched]),
        },
        **trace_summary(trace, wall),
        "completion_s": sorted(completion),
        "busy_intervals": [list(iv) for iv in trace.busy],
        "step_bounds": [[s.start_s, s.end_s] for s in steps],
        "step_metrics": [s.metrics for s in steps],
    }
    lags = [s.metrics["rollout/policy_lag_max"] for s in steps if "rollout/policy_lag_max" in s.metrics]
    if lags:   # async modes: how many policy versions behind its step a kept trajectory began (carry-over's staleness)
        out["policy_lag_mean"] = _mean([s.metrics["rollout/policy_lag_mean"] for s in steps
                                        if "rollout/policy_lag_mean" in s.metrics])
        out["policy_lag_max"] = max(lags)
    if settings.get("partial_rollout"):
        # carry-over drops nothing: what its kept trajectories hold beyond what the engine generated in the window
        # came from before it (net of the cut groups it leaves for the next step, finished samples included)
        out["stock_drawn_tokens"] = out["kept_tokens"] - out["gen_tokens"]
        out["stock_end_tokens"] = sum(t.gen_tokens for t in steps[-1].trajectories if not t.kept) if steps else 0
    out["step_wall_s_charged"] = charged_step_s(out)
    b = out["bias"]
    if b["mean_planned_tokens_kept"] and b["mean_planned_tokens_all"]:
        b["kept_over_all"] = b["mean_planned_tokens_kept"] / b["mean_planned_tokens_all"]
    return out


def charged_step_s(mode: Dict[str, Any]) -> Optional[float]:
    """The mean step time with the change of the carried stock charged. A carry-over step starts with the cut groups
    earlier steps left and leaves others for the next. Where it starts with more generated tokens than it leaves
    (`stock_drawn_tokens` = kept - generated > 0, e.g. after the unmeasured warm-up step, which launched 1 + rate times
    the groups from scratch) its step time flatters the mode; where it leaves more, it penalizes it. This charges (or
    credits) that change at the mode's own token rate in the window: step time x (generated + drawn) / generated. That
    errs the other way (in a steady run part of those tokens decode in rows the tail leaves spare): a steady run's
    step time lies between the two, and the suite's targets read the slower. On the simulated engine the two came
    within 1-3 points of each other over 8 measured steps, while one step was off by up to 11 points either way
    (docs/benchmarks-log.md, sixteenth session). Modes that carry nothing: their step time."""
    t, drawn, gen = mode.get("step_wall_s_mean"), mode.get("stock_drawn_tokens"), mode.get("gen_tokens")
    if t is None or drawn is None:
        return t
    return t * (gen + drawn) / gen if gen else None


def trajectories_json(steps: List[StepStat]) -> List[Dict[str, Any]]:
    return [asdict(t) for s in steps for t in s.trajectories]
