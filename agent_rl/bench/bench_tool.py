"""The benchmark's tool: sleeps for the planned latency of one call, then returns a fixed observation
or fails, as the workload says. Stateless: the call is identified by its arguments
`{group, sample, call}`, so every mode that makes the same call gets the same latency and outcome.
"""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Tuple

from agent_rl.bench.workload import Dist, Workload
from agent_rl.tool_runtime.base import BaseTool, ToolResponse

TOOL_NAME = "bench_wait"

TOOL_SCHEMA: Dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Benchmark tool: waits for a planned time and returns a fixed observation.",
        "parameters": {
            "type": "object",
            "properties": {
                "group": {"type": "integer", "minimum": 0},
                "sample": {"type": "integer", "minimum": 0},
                "call": {"type": "integer", "minimum": 0},
            },
            "required": ["group", "sample", "call"],
        },
    },
}


class InjectedToolFailure(RuntimeError):
    """The failure the workload asked for (becomes an error observation, like any tool exception)."""


def workload_from_config(cfg: Dict[str, Any]) -> Workload:
    w = dict(cfg)
    for k in ("turns", "tokens_per_turn", "tool_latency"):
        w[k] = Dist.parse(w[k])
    return Workload(**w)


def observation_text(words: int) -> str:
    """What the bench tool answers: `words` words."""
    return " ".join(["data"] * words)


class BenchTool(BaseTool):
    """config: {"workload": Workload.to_json(), "observation_words": 8} (+ runtime options: no concurrency
    cap and a long timeout, so the runtime never changes the planned latencies)."""

    def __init__(self, config: Dict[str, Any], tool_schema: Dict[str, Any] = TOOL_SCHEMA):
        super().__init__(config, tool_schema)
        self.workload = workload_from_config(self.config["workload"])
        self.observation_words = int(self.config.get("observation_words", 8))

    @classmethod
    def for_workload(cls, workload: Workload, observation_words: int = 8) -> "BenchTool":
        tool = cls({"workload": workload.to_json(), "observation_words": observation_words,
                    "max_concurrency": None, "timeout_s": 24 * 3600.0}, TOOL_SCHEMA)
        tool.workload = workload   # the same object as the benchmark's hooks: each plan is drawn once
        return tool

    def outcome(self, group: int, sample: int, call: int) -> Tuple[float, bool]:
        plan = self.workload.plan(group, sample)
        if call >= len(plan.tool_latency_s):
            return 0.0, False
        return plan.tool_latency_s[call], plan.tool_fails[call]

    async def execute(self, instance_id: str, arguments: Dict[str, Any], **execute_kwargs):
        latency, fails = self.outcome(int(arguments["group"]), int(arguments["sample"]), int(arguments["call"]))
        if latency > 0:
            await asyncio.sleep(latency)
        if fails:
            raise InjectedToolFailure(f"injected failure (call {arguments['call']})")
        text = observation_text(self.observation_words)
        return ToolResponse(text=text), 0.0, {"planned_latency_s": latency}
