"""Aggregates over a step's trajectories, defined once for every caller.

The scheduler adds them to its `RolloutResult.metrics` over one worker's kept trajectories (what
`agent-rl rollout` and the benchmark print); the trainer's driver computes them over all workers'
trajectories (exact) and leaves the workers' copies out when it merges their metrics
(`is_trajectory_metric`), so each name has one value and one definition.

reward_metrics      <prefix>/mean, /std, /min, /max and <prefix>/<component> (mean of each reward component)
trajectory_metrics  rollout/num_trajectories, prompt / response / sampled lengths, turns_mean,
                    tool_calls_mean, tool_call_rate, tool_error_rate, tool_calls/<tool>/<status> counts,
                    stop_reason/<reason> fractions, groups_without_signal, drift_mean, drift_nonzero_frac
step_metrics        the scheduler's step: groups launched / kept / resumed, trajectories aborted / carried, seconds,
                    generated tokens, the kept trajectories' policy lag (carry-over), plus the two above over the
                    kept trajectories and the tools' counters
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Dict, List, Sequence

from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tool_runtime.record import OK, ToolCallRecord

STATS = ("mean", "std", "max", "min")
# Names `trajectory_metrics` and the scheduler's reward view (`rollout/reward_mean`, `rollout/reward/*`) produce.
TRAJECTORY_KEYS = frozenset({
    "rollout/num_trajectories", "rollout/prompt_len_mean", "rollout/response_len_mean", "rollout/response_len_max",
    "rollout/sampled_len_mean", "rollout/turns_mean", "rollout/tool_calls_mean", "rollout/tool_call_rate",
    "rollout/tool_error_rate", "rollout/groups_without_signal", "rollout/drift_mean", "rollout/drift_nonzero_frac",
    "rollout/reward_mean"})
TRAJECTORY_PREFIXES = ("rollout/tool_calls/", "rollout/stop_reason/", "rollout/reward/", "reward/")


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def std(xs: Sequence[float]) -> float:
    """Population standard deviation (0 for fewer than two values)."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def tool_calls(traj: Trajectory) -> List[ToolCallRecord]:
    return [c for turn in traj.turns for c in turn.tool_calls]


def is_trajectory_metric(key: str) -> bool:
    """A name computed here from trajectories (not a scheduler counter or a tool-runtime metric)."""
    return key in TRAJECTORY_KEYS or key.startswith(TRAJECTORY_PREFIXES)


def reward_metrics(trajs: Sequence[Trajectory], prefix: str = "reward") -> Dict[str, float]:
    rewards = [float(t.reward) for t in trajs]
    out = {f"{prefix}/mean": mean(rewards), f"{prefix}/std": std(rewards),
           f"{prefix}/max": max(rewards) if rewards else float("nan"),
           f"{prefix}/min": min(rewards) if rewards else float("nan")}
    comps: Dict[str, List[float]] = defaultdict(list)
    for t in trajs:
        for k, v in (t.reward_components or {}).items():
            if isinstance(v, (int, float)):
                comps[k].append(float(v))
    for k, vs in comps.items():
        if k not in STATS:
            out[f"{prefix}/{k}"] = mean(vs)
    return out


def trajectory_metrics(trajs: Sequence[Trajectory]) -> Dict[str, float]:
    if not trajs:
        return {}
    n = float(len(trajs))
    resp = [len(t.response_ids) for t in trajs]
    calls = [tool_calls(t) for t in trajs]
    all_calls = [c for cs in calls for c in cs]
    out: Dict[str, float] = {
        "rollout/num_trajectories": n,
        "rollout/prompt_len_mean": mean([len(t.prompt_ids) for t in trajs]),
        "rollout/response_len_mean": mean(resp),
        "rollout/response_len_max": float(max(resp)),
        "rollout/sampled_len_mean": mean([t.num_generated for t in trajs]),
        "rollout/turns_mean": mean([len(t.turns) for t in trajs]),
        "rollout/tool_calls_mean": mean([len(cs) for cs in calls]),
        "rollout/tool_call_rate": mean([1.0 if cs else 0.0 for cs in calls]),
    }
    if all_calls:
        out["rollout/tool_error_rate"] = mean([0.0 if c.status == OK else 1.0 for c in all_calls])
    for (name, status), k in sorted(Counter((c.name or "<none>", c.status) for c in all_calls).items()):
        out[f"rollout/tool_calls/{name}/{status}"] = float(k)
    for reason, k in Counter(t.stop_reason or "unknown" for t in trajs).items():
        out[f"rollout/stop_reason/{reason}"] = k / n
    groups: Dict[str, List[float]] = defaultdict(list)
    for t in trajs:
        groups[t.uid].append(float(t.reward))
    out["rollout/groups_without_signal"] = mean([1.0 if max(g) - min(g) < 1e-8 else 0.0 for g in groups.values()])
    drift = [t.drift for t in trajs if t.drift is not None]
    if drift:
        out["rollout/drift_mean"] = mean(drift)
        out["rollout/drift_nonzero_frac"] = mean([1.0 if d else 0.0 for d in drift])
    return out


def step_metrics(groups: Sequence[Any], kept: Sequence[Any], trajs: Sequence[Trajectory], carried: Sequence[Any],
                 aborted_ids: Any, gen_before: Dict[int, int], seconds: float, cut_s: float,
                 tool_runtime: Any = None, *, version: int) -> Dict[str, float]:
    """One scheduler step's metrics: `groups` launched (each with `.trajs`, `.resumed`), `kept` / `carried` of them,
    `trajs` the kept trajectories, `gen_before` each trajectory's generated tokens before the step (carried ones).
    `rollout/policy_lag_mean` / `_max`: how many versions older than the step's policy `version` the policy that
    sampled each kept trajectory's first token was (0 without carry-over)."""
    all_trajs = [t for g in groups for t in g.trajs]
    generated = sum(t.num_generated - gen_before.get(id(t), 0) for t in all_trajs)
    m: Dict[str, float] = {
        "rollout/launched_groups": float(len(groups)),
        "rollout/kept_groups": float(len(kept)),
        "rollout/resumed_groups": float(sum(1 for g in groups if g.resumed)),
        "rollout/aborted_trajectories": float(len(aborted_ids)),
        "rollout/carried_trajectories": float(sum(1 for g in carried for t in g.trajs if t.status == "carried")),
        "rollout/seconds": seconds,
        "rollout/abort_seconds": cut_s,
        "rollout/gen_tokens": float(generated),
        "rollout/gen_tokens_per_s": generated / seconds if seconds > 0 else 0.0,
    }
    if trajs:
        m.update(trajectory_metrics(trajs))
        lags = [float(version - t.policy_version) for t in trajs]
        m["rollout/policy_lag_mean"], m["rollout/policy_lag_max"] = mean(lags), max(lags)
        rewards = reward_metrics(trajs, prefix="rollout/reward")
        m["rollout/reward_mean"] = rewards.pop("rollout/reward/mean")
        m.update(rewards)
    if tool_runtime is not None and hasattr(tool_runtime, "metrics"):
        m.update({k: float(v) for k, v in tool_runtime.metrics.snapshot(reset=True).items()
                  if isinstance(v, (int, float))})
    return m
