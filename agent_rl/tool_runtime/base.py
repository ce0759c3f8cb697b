"""The tool interface (verl-compatible lifecycle, async).

A tool class is referenced by `class_name` in the tool YAML and built as `cls(config, tool_schema)`.
One instance per trajectory: `create` -> `execute`* -> `calc_reward` -> `release` (release always
runs, also on abort / cancellation). `close` (optional) frees process-wide resources such as a
shared HTTP session; `ToolRuntime.close()` calls it once per tool object.

`execute` returns `(response, step_reward, metrics)`. `response` should be a `ToolResponse` (a plain
`str` is accepted too); how the runtime treats other values is documented in docs/tools.md.
Raise `TransientToolError` for failures worth retrying; any other exception becomes an error
observation (`Error: ...`) for the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


class TransientToolError(Exception):
    """Raise from `execute` for failures worth retrying (connection reset, 503, ...)."""


@dataclass
class ToolResponse:
    text: Optional[str] = None
    # Room for multimodal observations; the text rollout ignores them.
    images: List[Any] = field(default_factory=list)


class BaseTool:
    def __init__(self, config: Dict[str, Any], tool_schema: Dict[str, Any]):
        self.config = dict(config or {})
        self.tool_schema = tool_schema
        self.name: str = tool_schema["function"]["name"]

    async def create(self, instance_id: str, **create_kwargs) -> None:
        """Set up per-trajectory state (create_kwargs come from extra_info.tools_kwargs[name].create_kwargs)."""

    async def execute(self, instance_id: str, arguments: Dict[str, Any], **execute_kwargs) -> Tuple[ToolResponse, float, Dict[str, Any]]:
        """Run one call with validated arguments -> (response, step_reward, metrics)."""
        raise NotImplementedError

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs) -> None:
        """Free per-trajectory state. Must be safe to call for an instance whose create failed."""

    async def close(self) -> None:
        """Free process-wide resources (shared HTTP sessions, ...). Called by `ToolRuntime.close()`."""
