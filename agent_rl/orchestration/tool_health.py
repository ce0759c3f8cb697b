"""A step whose tools could not answer must not train as if nothing happened (`tools.max_failed_calls_per_step`).

A tool call that failed on the tool's side (its backend unreachable or erroring, a time-out, an instance that
could not be created, a reply that is not a response) is already a counted error observation the model sees
(`tools/errors/<status>`). With `tools.max_failed_calls_per_step: N`, a step with more than N such calls (all
workers together) stops the run before the update, naming the counts and the first error seen: the checkpoint
of the previous step stays the newest, so a rerun after fixing the backend resumes there. Calls the model got
wrong (parse errors, unknown tools, bad arguments, over budget) never count.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from agent_rl.tool_runtime.record import BAD_RESPONSE, CREATE_FAILED, EXCEPTION, TIMEOUT

FAILED_STATUSES = (EXCEPTION, TIMEOUT, CREATE_FAILED, BAD_RESPONSE)


class ToolFailures(RuntimeError):
    """More tool calls failed on the tool's side in one step than `tools.max_failed_calls_per_step` allows."""


def failed_calls(metrics: Dict[str, Any]) -> Dict[str, int]:
    """Tool-side failures of a step by status, from the merged `tools/errors/<status>` counters."""
    return {s: int(metrics.get(f"tools/errors/{s}", 0)) for s in FAILED_STATUSES if metrics.get(f"tools/errors/{s}")}


def first_failure(trajs: Iterable[Any]) -> Optional[str]:
    for t in trajs:
        for turn in t.turns:
            for c in turn.tool_calls:
                if c.status in FAILED_STATUSES:
                    text = " ".join(str(c.observation or "").split())
                    return f"{c.name}: {text[:160]}"
    return None


def check_tool_failures(step: int, metrics: Dict[str, Any], trajs: Iterable[Any], limit: Optional[int]) -> None:
    if limit is None:
        return
    counts = failed_calls(metrics)
    total = sum(counts.values())
    if total > limit:
        first = first_failure(trajs)
        raise ToolFailures(f"step {step}: {total} tool calls failed on the tool's side "
                           f"({', '.join(f'{k} {v}' for k, v in counts.items())}), more than "
                           f"tools.max_failed_calls_per_step={limit}" + (f"; first: {first}" if first else "")
                           + "; nothing of this step was trained (is the tool's backend up?)")
