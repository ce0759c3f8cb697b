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
    if not trajs:
        return {}
    resp = [len(t.response_ids) for t in trajs]
    gen = [sum(t.loss_mask) for t in trajs]
    calls = [_calls(t) for t in trajs]
    all_calls = [c for cs in calls for c in cs]
    out: Dict[str, float] = {
        "rollout/num_trajectories": float(len(trajs)),
        "rollout/prompt_length/mean": _mean([len(t.prompt_ids) for t in trajs]),
        "rollout/response_length/mean": _mean(resp),
        "rollout/response_length/max": float(max(resp)),
        "rollout/generated_tokens/mean": _mean(gen),
        "rollout/num_turns/mean": _mean([len(t.turns) for t in trajs]),
        "rollout/tool_calls/mean": _mean([len(cs) for cs in calls]),
        "rollout/tool_call_rate": _mean([1.0 if cs else 0.0 for cs in calls]),
    }
    if all_calls:
        out["rollout/tool_error_rate"] = _mean([0.0 if c.status == "ok" else 1.0 for c in all_calls])
    reasons: Dict[str, int] = defaultdict(int)
    for t in trajs:
        reasons[t.stop_reason or "unknown"] += 1
    for r, n in reasons.items():
        out[f"rollout/stop/{r}"] = n / len(trajs)
    groups: Dict[str, List[float]] = defaultdict(list)
    for t in trajs:
        groups[t.uid].append(float(t.reward))
    out["rollout/groups_without_signal"] = _mean([1.0 if max(g) - min(g) < 1e-8 else 0.0 for g in groups.values()])
    kg = [c for c in all_calls if c.name == KG_TOOL]
    if kg:
        out["kg/query_success_rate"] = _mean([1.0 if kg_call_succeeded(c) else 0.0 for c in kg])
        out["kg/queries/mean"] = len(kg) / len(trajs)
    drift = [t.drift for t in trajs if t.drift is not None]
    if drift:
        out["rollout/drift_tokens/mean"] = _mean(drift)
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
        out[f"val/{ds}/num_turns"] = ro["rollout/num_turns/mean"]
        out[f"val/{ds}/response_length"] = ro["rollout/response_length/mean"]
        if "kg/query_success_rate" in ro:
            out[f"val/{ds}/kg_query_success_rate"] = ro["kg/query_success_rate"]
        out[f"val/{ds}/num_samples"] = float(len(ts))
    return out


def merge_worker_metrics(per_worker: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Numeric metrics reported by each worker's scheduler / tool runtime: counts (`.../calls`,
    `.../errors/...`, `..._count`, `.../num_*`) are summed, everything else averaged."""
    acc: Dict[str, List[float]] = defaultdict(list)
    for m in per_worker:
        for k, v in (m or {}).items():
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                acc[k].append(float(v))
    out = {}
    for k, vs in acc.items():
        leaf = k.rsplit("/", 1)[-1]
        summed = (leaf in ("calls", "retries", "truncated") or "/errors/" in k or leaf.endswith("_count")
                  or leaf.startswith("num_") or leaf in ("aborted", "carried", "launched", "kept"))
        out[k] = float(sum(vs)) if summed else _mean(vs)
    return out
