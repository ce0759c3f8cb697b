"""Step metrics computed by the driver from the gathered trajectories (all workers together).

reward/*   mean, std, min, max and the mean of every reward component
rollout/*  lengths, turns, tool calls, stop reasons, GRPO groups without signal
kg/*       query success rate of kg_query calls
val/<data_source>/*  the same essentials per data source for validation
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Sequence

from agent_rl.rollout.trajectory import ToolCallRecord, Trajectory

KG_TOOL = "kg_query"
KG_SUCCESS = "KG_SUCCESS"


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _calls(traj: Trajectory) -> List[ToolCallRecord]:
    return [c for turn in traj.turns for c in turn.tool_calls]


def kg_call_succeeded(call: ToolCallRecord) -> bool:
    """A kg_query call that returned results: the KG error type is KG_SUCCESS."""
    if call.status != "ok":
        return False
    m = call.metrics or {}
    for key in ("kg_status", "error_type", "kg_error_type", "status"):
        if isinstance(m.get(key), str):
            return m[key] == KG_SUCCESS
    if "success" in m:
        return bool(m["success"])
    return KG_SUCCESS in (call.observation or "") or not (call.observation or "").startswith("KG_")


def reward_metrics(trajs: Sequence[Trajectory], prefix: str = "reward") -> Dict[str, float]:
    rewards = [float(t.reward) for t in trajs]
    out = {f"{prefix}/mean": _mean(rewards), f"{prefix}/std": _std(rewards),
           f"{prefix}/max": max(rewards) if rewards else float("nan"),
           f"{prefix}/min": min(rewards) if rewards else float("nan")}
    comps: Dict[str, List[float]] = defaultdict(list)
    for t in trajs:
        for k, v in (t.reward_components or {}).items():
            if isinstance(v, (int, float)):
                comps[k].append(float(v))
    for k, vs in comps.items():
        if k not in ("mean", "std", "max", "min"):
            out[f"{prefix}/{k}"] = _mean(vs)
    return out


def rollout_metrics(trajs: Sequence[Trajectory]) -> Dict[str, float]:
    """Exact over all workers' trajectories; names match the scheduler's per-worker metrics where both exist."""
    if not trajs:
        return {}
    n = float(len(trajs))
    resp = [len(t.response_ids) for t in trajs]
    calls = [_calls(t) for t in trajs]
    all_calls = [c for cs in calls for c in cs]
    out: Dict[str, float] = {
        "rollout/num_trajectories": n,
        "rollout/prompt_len_mean": _mean([len(t.prompt_ids) for t in trajs]),
        "rollout/response_len_mean": _mean(resp),
        "rollout/response_len_max": float(max(resp)),
        "rollout/sampled_len_mean": _mean([t.num_generated for t in trajs]),
        "rollout/turns_mean": _mean([len(t.turns) for t in trajs]),
        "rollout/tool_calls_mean": _mean([len(cs) for cs in calls]),
        "rollout/tool_call_rate": _mean([1.0 if cs else 0.0 for cs in calls]),
    }
    if all_calls:
        out["rollout/tool_error_rate"] = _mean([0.0 if c.status == "ok" else 1.0 for c in all_calls])
    reasons: Dict[str, int] = defaultdict(int)
    for t in trajs:
        reasons[t.stop_reason or "unknown"] += 1
    for r, k in reasons.items():
        out[f"rollout/stop_reason/{r}"] = k / n
    groups: Dict[str, List[float]] = defaultdict(list)
    for t in trajs:
        groups[t.uid].append(float(t.reward))
    out["rollout/groups_without_signal"] = _mean([1.0 if max(g) - min(g) < 1e-8 else 0.0 for g in groups.values()])
    kg = [c for c in all_calls if c.name == KG_TOOL]
    if kg:
        out["kg/query_success_rate"] = _mean([1.0 if kg_call_succeeded(c) else 0.0 for c in kg])
        out["kg/queries_mean"] = len(kg) / n
    drift = [t.drift for t in trajs if t.drift is not None]
    if drift:
        out["rollout/drift_mean"] = _mean(drift)
        out["rollout/drift_nonzero_frac"] = _mean([1.0 if d else 0.0 for d in drift])
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
          "rollout/carried_trajectories", "rollout/gen_tokens", "rollout/gen_tokens_per_s"}
MAXED = {"rollout/seconds", "rollout/abort_seconds"}


def merge_worker_metrics(per_worker: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Numeric metrics reported by each worker's scheduler / tool runtime, combined: counts and
    throughputs are summed (`rollout/kept_groups`, `rollout/tool_calls/<tool>/<status>`, `tools/*/calls`,
    `tools/*/errors/*` ...), wall times and maxima take the max, everything else is averaged.
    `rollout/reward*` is left out: the driver's `reward/*` is exact over all workers."""
    acc: Dict[str, List[float]] = defaultdict(list)
    for m in per_worker:
        for k, v in (m or {}).items():
            if k.startswith("rollout/reward"):
                continue
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                acc[k].append(float(v))
    out = {}
    for k, vs in acc.items():
        leaf = k.rsplit("/", 1)[-1]
        if (k in SUMMED or k.startswith("rollout/tool_calls/") or leaf in ("calls", "retries", "truncated")
                or "/errors/" in k):
            out[k] = float(sum(vs))
        elif k in MAXED or leaf.endswith("_max") or leaf.endswith("_p99_s"):
            out[k] = max(vs)
        else:
            out[k] = _mean(vs)
    return out
