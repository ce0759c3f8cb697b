"""Step metrics computed by the driver from the gathered trajectories (all workers together).

reward/*   mean, std, min, max and the mean of every reward component  (`rollout.metrics.reward_metrics`)
rollout/*  lengths, turns, tool calls, stop reasons, GRPO groups without signal  (`rollout.metrics.trajectory_metrics`)
kg/*       success rate of kg_query calls (`ToolCallRecord.succeeded`), kg_query calls per trajectory
val/<data_source>/*  the same essentials per data source for validation

Workers' copies of the trajectory aggregates are left out by `merge_worker_metrics`: the driver's are exact.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Sequence

from agent_rl.rewards.kg import KG_TOOL
from agent_rl.rollout.metrics import is_trajectory_metric, mean, reward_metrics, tool_calls, trajectory_metrics
from agent_rl.rollout.trajectory import Trajectory

__all__ = ["kg_metrics", "merge_worker_metrics", "reward_metrics", "rollout_metrics", "validation_metrics"]


def kg_metrics(trajs: Sequence[Trajectory]) -> Dict[str, float]:
    kg = [c for t in trajs for c in tool_calls(t) if c.name == KG_TOOL]
    if not kg:
        return {}
    return {"kg/query_success_rate": mean([1.0 if c.succeeded else 0.0 for c in kg]),
            "kg/queries_mean": len(kg) / float(len(trajs))}


def rollout_metrics(trajs: Sequence[Trajectory]) -> Dict[str, float]:
    """The step's trajectory aggregates (the same names as the scheduler's per-worker view) and kg/*."""
    out = trajectory_metrics(trajs)
    if out:
        out.update(kg_metrics(trajs))
    return out


def validation_metrics(trajs: Iterable[Trajectory]) -> Dict[str, float]:
    """val/<data_source>/reward, its components, tool-call rate, KG success, sample count."""
    by_source: Dict[str, List[Trajectory]] = defaultdict(list)
    for t in trajs:
        by_source[str((t.row or {}).get("data_source", "unknown"))].append(t)
    out: Dict[str, float] = {}
    for ds, ts in sorted(by_source.items()):
        r = reward_metrics(ts, prefix=f"val/{ds}")
        out[f"val/{ds}/reward"] = r.pop(f"val/{ds}/mean")
        for k in ("std", "max", "min"):
            r.pop(f"val/{ds}/{k}")
        out.update(r)
        ro = rollout_metrics(ts)
        out[f"val/{ds}/tool_call_rate"] = ro["rollout/tool_call_rate"]
        out[f"val/{ds}/num_turns"] = ro["rollout/turns_mean"]
        out[f"val/{ds}/response_length"] = ro["rollout/response_len_mean"]
        if "kg/query_success_rate" in ro:
            out[f"val/{ds}/kg_query_success_rate"] = ro["kg/query_success_rate"]
        out[f"val/{ds}/num_samples"] = float(len(ts))
    return out


SUMMED = {"rollout/launched_groups", "rollout/kept_groups", "rollout/resumed_groups", "rollout/aborted_trajectories",
          "rollout/carried_trajectories", "rollout/extra_trajectories_started", "rollout/gen_tokens",
          "rollout/gen_tokens_per_s"}
MAXED = {"rollout/seconds", "rollout/abort_seconds"}


def merge_worker_metrics(per_worker: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Numeric metrics reported by each worker's scheduler / tool runtime, combined: counts and
    throughputs are summed (`rollout/kept_groups`, `tools/*/calls`, `tools/*/errors/*` ...), wall times and
    maxima take the max, everything else is averaged. Trajectory aggregates (`rollout/turns_mean`,
    `rollout/tool_calls/<tool>/<status>`, `rollout/reward*` ...) are left out: the driver computes them
    exactly over all workers' trajectories (`rollout_metrics`, `reward_metrics`)."""
    acc: Dict[str, List[float]] = defaultdict(list)
    for m in per_worker:
        for k, v in (m or {}).items():
            if is_trajectory_metric(k):
                continue
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                acc[k].append(float(v))
    out = {}
    for k, vs in acc.items():
        leaf = k.rsplit("/", 1)[-1]
        if k in SUMMED or leaf in ("calls", "retries", "truncated") or "/errors/" in k:
            out[k] = float(sum(vs))
        elif k in MAXED or leaf.endswith("_max") or leaf.endswith("_p99_s"):
            out[k] = max(vs)
        else:
            out[k] = mean(vs)
    return out
