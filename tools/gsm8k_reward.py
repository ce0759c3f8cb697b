"""`calc_gsm8k_reward`: the model submits its final answer; the tool scores it (after verl's Gsm8kTool).

create_kwargs: `ground_truth` (str or number, e.g. "1,234" or 72).
execute: `{"answer": "..."}` -> "Current parsed answer=<number> result=<1.0|0.0>", step reward
0.0 when the answer scores better than the previous one, else `penalty` (verl: -0.05).
calc_reward: 1.0 when the last submitted answer equals the ground truth, else 0.0.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Optional, Tuple

from agent_rl.tool_runtime.base import BaseTool, ToolResponse

_NUMBER = re.compile(r"-?\$?\s*(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def parse_number(text: Any) -> Optional[float]:
    """The last number in `text` ("#### 1,234.5", "$72", "-3", "answer is 0.5") -> float, or None.
    Commas between digits and a leading $ are ignored."""
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    matches = _NUMBER.findall(str(text))
    if not matches:
        return None
    raw = matches[-1].replace(",", "").replace("$", "").replace(" ", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def same_number(a: Optional[float], b: Optional[float]) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def format_number(x: Optional[float]) -> str:
    if x is None:
        return "None"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class Gsm8kRewardTool(BaseTool):
    """State per instance: ground truth, last answer and its score."""

    def __init__(self, config: Dict[str, Any], tool_schema: Dict[str, Any]):
        super().__init__(config, tool_schema)
        self.penalty = float(self.config.get("penalty", -0.05))
        self._state: Dict[str, Dict[str, Any]] = {}

    async def create(self, instance_id: str, ground_truth: Any = None, **kwargs) -> None:
        if ground_truth is None:
            raise ValueError("calc_gsm8k_reward needs create_kwargs.ground_truth")
        truth = parse_number(ground_truth)
        if truth is None:
            raise ValueError(f"ground_truth {ground_truth!r} is not a number")
        self._state[instance_id] = {"ground_truth": truth, "answer": None, "reward": 0.0}

    async def execute(self, instance_id: str, arguments: Dict[str, Any], **kwargs) -> Tuple[ToolResponse, float, Dict[str, Any]]:
        state = self._state.get(instance_id)
        if state is None:
            raise KeyError(f"no instance {instance_id!r} (create was not called or it was released)")
        answer = arguments.get("answer", "")
        parsed = parse_number(answer if isinstance(answer, (int, float)) else str(answer))
        reward = 1.0 if same_number(parsed, state["ground_truth"]) else 0.0
        step_reward = 0.0 if reward > state["reward"] else self.penalty
        state["answer"], state["reward"] = parsed, reward
        text = f"Current parsed answer={format_number(parsed)} result={reward}"
        return ToolResponse(text=text), step_reward, {"parsed": parsed is not None, "correct": reward}

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        state = self._state.get(instance_id)
        return float(state["reward"]) if state else 0.0

    async def release(self, instance_id: str, **kwargs) -> None:
        self._state.pop(instance_id, None)
