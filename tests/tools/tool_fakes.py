"""Scriptable tools for the runtime tests (behaviour given as async callables)."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Dict, List, Optional

from agent_rl.tool_runtime.base import BaseTool, ToolResponse


def fn_schema(name: str, properties: Optional[Dict[str, Any]] = None, required: Optional[List[str]] = None) -> Dict[str, Any]:
    params: Dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        params["required"] = required
    return {"type": "function", "function": {"name": name, "description": f"test tool {name}", "parameters": params}}


async def echo(tool, instance_id, arguments, **kw):
    return ToolResponse(text=f"echo {arguments}"), 0.5, {"ok": True}


class ScriptedTool(BaseTool):
    """config keys besides the runtime options: `execute`, `create`, `release`, `calc_reward` (async callables)."""

    def __init__(self, name: str = "scripted", execute: Callable[..., Awaitable] = echo, create=None, release=None,
                 calc_reward=None, schema: Optional[Dict[str, Any]] = None, **options):
        super().__init__(dict(options), schema or fn_schema(name))
        self._execute, self._create, self._release, self._calc = execute, create, release, calc_reward
        self.created: List[str] = []
        self.released: List[str] = []
        self.executed: List[Dict[str, Any]] = []
        self.create_kwargs: Dict[str, Dict[str, Any]] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    async def create(self, instance_id, **kwargs):
        self.created.append(instance_id)
        self.create_kwargs[instance_id] = kwargs
        if self._create:
            await self._create(self, instance_id, **kwargs)

    async def execute(self, instance_id, arguments, **kwargs):
        self.executed.append({"instance_id": instance_id, "arguments": arguments, **kwargs})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._execute(self, instance_id, arguments, **kwargs)
        finally:
            self.in_flight -= 1

    async def calc_reward(self, instance_id, **kwargs):
        if self._calc:
            return await self._calc(self, instance_id, **kwargs)
        return 1.0

    async def release(self, instance_id, **kwargs):
        self.released.append(instance_id)
        if self._release:
            await self._release(self, instance_id, **kwargs)


async def hang_forever(*a, **k):
    await asyncio.Event().wait()


class IgnoresCancel:
    """A tool body that swallows cancellation until `stop()` (so the test's loop can still shut down)."""

    def __init__(self):
        self.stopped = False
        self.cancels = 0

    def stop(self):
        self.stopped = True

    async def __call__(self, *a, **k):
        while not self.stopped:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancels += 1
        return "too late", 0.0, {}
