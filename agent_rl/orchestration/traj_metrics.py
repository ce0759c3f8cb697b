"""Step metrics computed by the driver from the gathered trajectories (all workers together).

reward/*   mean, std, min, max and the mean of every reward component  (`rollout.metrics.reward_metrics`)
rollout/*  lengths, turns, tool calls, stop reasons, GRPO groups without signal  (`rollout.metrics.trajectory_metrics`)
<task>/*   what each task's `metrics` hook adds (tasks/registry.py; the KG task: kg/query_success_rate, kg/queries_mean)
hints/share, reward/hinted, reward/unhinted   prompt hints (`data.prompt_augmentation`): the share of hinted groups
           and the mean reward of each kind (only in a step that has both); the trainer adds hints/prob
val/<data_source>/*  the same essentials per data source for validation, plus what the model learned:
           answer_rate (the reward's `answered` component), tool/<name>/success_rate and /calls, and, for rows
           with an integer `extra_info.hops`, hop<k>/* (reward, components, num_samples, and the tasks'
           `group_metrics`: the KG task's kg_queries, kg_lookups)

Workers' copies of the trajectory aggregates are left out by `merge_worker_metrics`: the driver's are exact.
"""
from __future__ import annotations

import math
import numbers
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence

from agent_rl.data.hints import is_hinted
from agent_rl.rollout.metrics import is_trajectory_metric, mean, reward_metrics, tool_calls, trajectory_metrics
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tasks.registry import TASKS, metric_hooks

__all__ = ["hint_metrics", "hop_key", "hop_metrics", "merge_worker_metrics", "reward_metrics", "task_metrics",
           "rollout_metrics", "session_metrics", "tool_success_metrics", "validation_metrics"]

ANSWERED = "answered"   # reward component: 1 when the reward found a final answer to score (every task's reward)


def task_metrics(trajs: Sequence[Trajectory], kind: str = "metrics", prefix: str = "") -> Dict[str, float]:
    """What the tasks' `kind` hooks (`metrics` | `group_metrics`) report for `trajs`, names prefixed."""
    out: Dict[str, float] = {}
    for fn in metric_hooks(kind):
        out.update({f"{prefix}{k}": float(v) for k, v in fn(trajs).items()})
    return out


def hint_metrics(trajs: Sequence[Trajectory], prefix: str = "") -> Dict[str, float]:
    """<prefix>hints/share (hinted GRPO groups over groups; a group shares its row) and, when the step has both
    kinds, <prefix>reward/hinted and <prefix>reward/unhinted (mean trajectory reward). {} when no row went through
    a hint decision (hints off)."""
    flags = [(t, is_hinted(t.row)) for t in trajs]
    flags = [(t, f) for t, f in flags if f is not None]
    if not flags:
        return {}
    groups = {t.uid: f for t, f in flags}
    out = {f"{prefix}hints/share": mean([1.0 if f else 0.0 for f in groups.values()])}
    hinted = [float(t.reward) for t, f in flags if f]
    unhinted = [float(t.reward) for t, f in flags if not f]
    if hinted and unhinted:
        out[f"{prefix}reward/hinted"] = mean(hinted)
        out[f"{prefix}reward/unhinted"] = mean(unhinted)
    return out


def rollout_metrics(trajs: Sequence[Trajectory]) -> Dict[str, float]:
    """The step's trajectory aggregates (the same names as the scheduler's per-worker view) and the tasks' metrics."""
    out = trajectory_metrics(trajs)
    if out:
        out.update(task_metrics(trajs))
    return out


def hop_key(row: Optional[dict]) -> Optional[str]:
    """`hop<k>` for a row whose `extra_info.hops` is an integer k >= 0, `hop_unreachable` for k < 0 (RoG rows
    where no answer entity is reachable in the subgraph), None without hops."""
    extra = (row or {}).get("extra_info")
    hops = extra.get("hops") if isinstance(extra, dict) else None
    if isinstance(hops, bool) or not isinstance(hops, numbers.Real) or not math.isfinite(hops) or hops != int(hops):
        return None
    return f"hop{int(hops)}" if hops >= 0 else "hop_unreachable"


def _hop_order(key: str):
    return (1, 0) if key == "hop_unreachable" else (0, int(key[3:]))


def _reward_essentials(trajs: Sequence[Trajectory], prefix: str) -> Dict[str, float]:
    """<prefix>/reward, the mean of every numeric reward component, and the `answered` component as
    <prefix>/answer_rate."""
    r = reward_metrics(trajs, prefix=prefix)
    out = {f"{prefix}/reward": r.pop(f"{prefix}/mean")}
    for k in ("std", "max", "min"):
        r.pop(f"{prefix}/{k}")
    answered = r.pop(f"{prefix}/{ANSWERED}", None)
    out.update(r)
    if answered is not None:
        out[f"{prefix}/answer_rate"] = answered
    return out


def tool_success_metrics(trajs: Sequence[Trajectory], prefix: str) -> Dict[str, float]:
    """<prefix>/tool/<name>/success_rate (`ToolCallRecord.succeeded`) and /calls (per trajectory), for every
    tool name called (a call without a name: `<none>`)."""
    by_tool: Dict[str, List[float]] = defaultdict(list)
    for t in trajs:
        for c in tool_calls(t):
            by_tool[c.name or "<none>"].append(1.0 if c.succeeded else 0.0)
    out: Dict[str, float] = {}
    for name, oks in sorted(by_tool.items()):
        out[f"{prefix}/tool/{name}/success_rate"] = mean(oks)
        out[f"{prefix}/tool/{name}/calls"] = len(oks) / float(len(trajs))
    return out


def hop_metrics(trajs: Sequence[Trajectory], prefix: str) -> Dict[str, float]:
    """Per hop count of the rows (`hop_key`): reward, reward components, answer_rate, the tasks' group metrics
    (KG: kg_queries, kg_lookups per trajectory), num_samples."""
    by_hop: Dict[str, List[Trajectory]] = defaultdict(list)
    for t in trajs:
        key = hop_key(t.row)
        if key is not None:
            by_hop[key].append(t)
    out: Dict[str, float] = {}
    for key in sorted(by_hop, key=_hop_order):
        ts, p = by_hop[key], f"{prefix}/{key}"
        out.update(_reward_essentials(ts, p))
        out.update(task_metrics(ts, "group_metrics", f"{p}/"))
        out[f"{p}/num_samples"] = float(len(ts))
    return out


def validation_metrics(trajs: Iterable[Trajectory]) -> Dict[str, float]:
    """val/<data_source>/reward, its components, answer rate, tool-call rate, the tasks' `val_metrics` (KG query
    success), success by tool, per-hop metrics, sample count."""
    by_source: Dict[str, List[Trajectory]] = defaultdict(list)
    for t in trajs:
        by_source[str((t.row or {}).get("data_source", "unknown"))].append(t)
    out: Dict[str, float] = {}
    for ds, ts in sorted(by_source.items()):
        p = f"val/{ds}"
        out.update(_reward_essentials(ts, p))
        ro = rollout_metrics(ts)
        out[f"{p}/tool_call_rate"] = ro["rollout/tool_call_rate"]
        out[f"{p}/num_turns"] = ro["rollout/turns_mean"]
        out[f"{p}/response_length"] = ro["rollout/response_len_mean"]
        for task in TASKS.values():           # the tasks' step metrics that validation reports too (Task.val_metrics)
            out.update({f"{p}/{name}": ro[step] for step, name in task.val_metrics if step in ro})
        out.update(tool_success_metrics(ts, p))
        out.update(hop_metrics(ts, p))
        out[f"{p}/num_samples"] = float(len(ts))
    return out


SUMMED = {"rollout/launched_groups", "rollout/kept_groups", "rollout/resumed_groups", "rollout/aborted_trajectories",
          "rollout/carried_trajectories", "rollout/extra_trajectories_started", "rollout/gen_tokens",
          "rollout/gen_tokens_per_s", "rollout/filtered_groups"}
MAXED = {"rollout/seconds", "rollout/abort_seconds"}
SESSIONS = "rollout/kv_sessions/"   # + an event of engines/kv_sessions.py (appended, started, full, ...): counts


def _counted(key: str) -> bool:
    """A worker metric that counts events (summed over workers and rounds)."""
    leaf = key.rsplit("/", 1)[-1]
    return key in SUMMED or leaf in ("calls", "retries", "truncated") or "/errors/" in key or key.startswith(SESSIONS)


def session_metrics(before: Optional[Dict[str, int]], after: Optional[Dict[str, int]]) -> Dict[str, float]:
    """How a rollout's turns met their KV sessions: `rollout/kv_sessions/<event>`, the engine's counts
    (`engines/replicas.session_counts`) after it less those before; nothing for an engine without sessions."""
    if after is None:
        return {}
    return {SESSIONS + k: float(v - (before or {}).get(k, 0)) for k, v in sorted(after.items())}


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
        if _counted(k):
            out[k] = float(sum(vs))
        elif k in MAXED or leaf.endswith("_max") or leaf.endswith("_p99_s"):
            out[k] = max(vs)
        else:
            out[k] = mean(vs)
    return out


def merge_rounds(rounds: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The merged worker metrics of a step's generation rounds (dynamic sampling), run one after the other: counts
    and wall times add up, the token rate is recomputed over the whole rollout, anything else is the last round's."""
    out: Dict[str, float] = {}
    for m in rounds:
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + v if _counted(k) or k in MAXED else v
    if out.get("rollout/seconds"):
        out["rollout/gen_tokens_per_s"] = out.get("rollout/gen_tokens", 0.0) / out["rollout/seconds"]
    return out
