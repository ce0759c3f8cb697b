"""`calc_gsm8k_reward`: the model submits its final answer (after verl's Gsm8kTool, minus the oracle).

create_kwargs: `ground_truth` (str or number, e.g. "1,234" or 72).
execute: `{"answer": "..."}` -> "Answer recorded (parsed: <number>).", the same text whether the answer
is right or wrong: the reply never reveals the reward (verl's replies `reward=1.0 / 0.0`, which turns the
tool into an oracle to guess against). Step reward 0.0 for the first submission, `penalty` (<= 0, default
-0.05) for every later one, whatever its correctness; the arithmetic reward adds these step rewards to the
trajectory's score, so each extra submission costs and guessing never pays (docs/rewards.md).
calc_reward: 1.0 when the last submitted answer equals the ground truth, else 0.0 (logged, not scored).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from agent_rl.rewards.text import numbers_match, parse_number
from agent_rl.tool_runtime.base import BaseTool, ToolResponse


def format_number(x: Optional[float]) -> str:
    if x is None:
        return "None"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class Gsm8kRewardTool(BaseTool):
    """State per instance: ground truth, last parsed answer, number of submissions."""

    def __init__(self, config: Dict[str, Any], tool_schema: Dict[str, Any]):
        super().__init__(config, tool_schema)
        self.penalty = float(self.config.get("penalty", -0.05))
        if not self.penalty <= 0:
            raise ValueError(f"penalty must be <= 0 (a cost per extra submission), got {self.penalty}")
        self._state: Dict[str, Dict[str, Any]] = {}

    async def create(self, instance_id: str, ground_truth: Any = None, **kwargs) -> None:
        if ground_truth is None:
            raise ValueError("calc_gsm8k_reward needs create_kwargs.ground_truth")
        truth = parse_number(ground_truth)
        if truth is None:
            raise ValueError(f"ground_truth {ground_truth!r} is not a number")
        self._state[instance_id] = {"ground_truth": truth, "answer": None, "submissions": 0}

    async def execute(self, instance_id: str, arguments: Dict[str, Any], **kwargs) -> Tuple[ToolResponse, float, Dict[str, Any]]:
        state = self._state.get(instance_id)
        if state is None:
            raise KeyError(f"no instance {instance_id!r} (create was not called or it was released)")
        answer = arguments.get("answer", "")
        parsed = parse_number(answer if isinstance(answer, (int, float)) else str(answer))
        step_reward = self.penalty if state["submissions"] else 0.0
        state["answer"] = parsed
        state["submissions"] += 1
        correct = 1.0 if numbers_match(parsed, state["ground_truth"]) else 0.0
        text = f"Answer recorded (parsed: {format_number(parsed)})."
        return ToolResponse(text=text), step_reward, {"parsed": parsed is not None, "correct": correct}

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        state = self._state.get(instance_id)
        return 1.0 if state and numbers_match(state["answer"], state["ground_truth"]) else 0.0

    async def release(self, instance_id: str, **kwargs) -> None:
        self._state.pop(instance_id, None)
