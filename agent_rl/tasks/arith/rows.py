"""The rows of the arithmetic task and of GSM8K: the tool names, the prompt texts, the tools kwargs of a row, and what
the tasks require of their rows (the registry's `rows` hook, checked when they are written and loaded:
agent_rl/tasks/rows.py).

    ability       math
    ground truth  the answer as a non-empty string ("42")
    extra_info    question, and tools_kwargs.calc_gsm8k_reward.create_kwargs {ground_truth}
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

CALCULATOR_TOOL = "calculator"
MATH_REWARD_TOOL = "calc_gsm8k_reward"
ABILITY = "math"

MATH_INSTRUCTIONS = """Solve the problem step by step. Use the calculator tool for arithmetic, e.g.
<tool_call>
{"name": "calculator", "arguments": {"expression": "12 * 7 + 5"}}
</tool_call>
You may submit your answer with calc_gsm8k_reward (argument: answer; each extra submission lowers the score). Give the final number as <answer>n</answer>."""

MATH_QUESTION = "Problem: {question}"


def math_prompt(question: str) -> List[Dict[str, str]]:
    """The chat messages of a math word problem (one user message)."""
    return [{"role": "user", "content": MATH_INSTRUCTIONS + "\n\n" + MATH_QUESTION.format(question=question.strip())}]


def math_tools_kwargs(ground_truth: str) -> Dict[str, Any]:
    return {MATH_REWARD_TOOL: {"create_kwargs": {"ground_truth": str(ground_truth)}}}


def row_problem(row: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a math row beyond the schema every row follows (`field: problem`), or None."""
    ability = row.get("ability")
    if ability != ABILITY:
        return f"ability: {ability!r} does not match data_source {row.get('data_source')!r} (expected {ABILITY!r})"
    gt = (row.get("reward_model") or {}).get("ground_truth")
    if not isinstance(gt, str) or not gt:
        return f"reward_model.ground_truth: math ground truth must be a non-empty string, got {gt!r}"
    return None
