"""The KG task's metrics, added to the generic step and validation metrics through its hooks
(tasks/registry.py `Task.metrics`, `Task.group_metrics`; orchestration/traj_metrics.py calls them):

    metrics(trajs)        kg/query_success_rate (kg_query calls that succeeded, `ToolCallRecord.succeeded`) and
                          kg/queries_mean (kg_query calls per trajectory); {} when no trajectory called kg_query
    group_metrics(trajs)  kg_queries and kg_lookups (successful calls) per trajectory of a group of trajectories
                          (the validation rows of one hop count: val/<source>/hop<k>/kg_queries)
"""
from __future__ import annotations

from typing import Dict, Sequence

from agent_rl.rollout.metrics import mean, tool_calls
from agent_rl.tasks.kg.rows import KG_TOOL


def step_metrics(trajs: Sequence) -> Dict[str, float]:
    kg = [c for t in trajs for c in tool_calls(t) if c.name == KG_TOOL]
    if not kg:
        return {}
    return {"kg/query_success_rate": mean([1.0 if c.succeeded else 0.0 for c in kg]),
            "kg/queries_mean": len(kg) / float(len(trajs))}


def group_metrics(trajs: Sequence) -> Dict[str, float]:
    kg = [[c for c in tool_calls(t) if c.name == KG_TOOL] for t in trajs]
    return {"kg_queries": mean([float(len(cs)) for cs in kg]),
            "kg_lookups": mean([float(sum(1 for c in cs if c.succeeded)) for cs in kg])}
