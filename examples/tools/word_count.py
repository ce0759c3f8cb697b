"""A minimal tool, kept next to its YAML (class_name: word_count.py:WordCountTool). See docs/tools.md."""
from __future__ import annotations

import re
from typing import Any, Dict, Tuple

from agent_rl.tool_runtime.base import BaseTool, ToolResponse

WORD = re.compile(r"[\w'-]+")


class WordCountTool(BaseTool):
    """Counts the words of a text. create_kwargs `target` (optional) is a count the model should reach;
    calc_reward is 1.0 when its last counted text had exactly that many words."""

    def __init__(self, config: Dict[str, Any], tool_schema: Dict[str, Any]):
        super().__init__(config, tool_schema)
        self.lowercase = bool(self.config.get("lowercase", True))
        self._state: Dict[str, Dict[str, Any]] = {}

    async def create(self, instance_id: str, target: Any = None, **kwargs) -> None:
        if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 0):
            raise ValueError(f"target must be a non-negative integer, got {target!r}")
        self._state[instance_id] = {"target": target, "last": None}

    async def execute(self, instance_id: str, arguments: Dict[str, Any], **kwargs) -> Tuple[ToolResponse, float, Dict[str, Any]]:
        words = WORD.findall(arguments["text"])
        if arguments.get("unique", False):
            words = set(w.lower() if self.lowercase else w for w in words)
        count = len(words)
        self._state[instance_id]["last"] = count
        return ToolResponse(text=f"{count} words"), 0.0, {"words": count}

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        state = self._state.get(instance_id) or {}
        return 1.0 if state.get("target") is not None and state.get("last") == state["target"] else 0.0

    async def release(self, instance_id: str, **kwargs) -> None:
        self._state.pop(instance_id, None)
