"""Test tools for the real ToolRuntime: artificial latency, counted create / release."""
from __future__ import annotations

import asyncio

from agent_rl.tool_runtime.base import BaseTool, ToolResponse
from agent_rl.tool_runtime.runtime import ToolRuntime


def schema(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"test tool {name}",
                                             "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}


class SleepTool(BaseTool):
    """Sleeps `delay` seconds per call; tracks live instances."""

    def __init__(self, config, tool_schema):
        super().__init__(config, tool_schema)
        self.delay = float(self.config.get("delay", 0.0))
        self.created, self.released, self.live = 0, 0, set()
        self.executed = 0

    async def create(self, instance_id, **kw):
        self.created += 1
        self.live.add(instance_id)

    async def execute(self, instance_id, arguments, **kw):
        await asyncio.sleep(self.delay)
        self.executed += 1
        return ToolResponse(text=f"slept {self.delay} for {arguments.get('x', '')}"), 0.0, {"success": True}

    async def calc_reward(self, instance_id, **kw):
        return 0.5

    async def release(self, instance_id, **kw):
        self.released += 1
        self.live.discard(instance_id)


def sleep_runtime(tokenizer, delay: float = 0.0, name: str = "sleep") -> tuple:
    tool = SleepTool({"type": "native", "delay": delay, "timeout_s": 30, "max_concurrency": None}, schema(name))
    return ToolRuntime([tool], tokenizer=tokenizer, max_tool_response_tokens=64), tool
