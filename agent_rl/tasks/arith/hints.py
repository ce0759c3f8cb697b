"""Hint texts of the arithmetic and GSM8K tasks (`data.prompt_augmentation`, agent_rl/data/hints.py): how to use the
calculator and submit the answer. Levels: concise | detailed. They say how to work, never what the answer is."""
from __future__ import annotations

from typing import Dict

CONCISE = ("Write the problem as one arithmetic expression, evaluate it with the calculator tool "
           "(argument: expression), then give the number it returns as <answer>n</answer>.")

DETAILED = """Solve it with the tools, not in your head:
1. Read the quantities in the problem and write how they combine as one arithmetic expression (numbers and + - * / ** and parentheses only, no units, no commas inside numbers).
2. Call the calculator: {"name": "calculator", "arguments": {"expression": "<your expression>"}}. Split a long problem into several calls if that is easier.
3. Check that the result answers what the question asks; if not, fix the expression and call the calculator again.
4. Give the final number as <answer>n</answer>. Submit it with calc_gsm8k_reward at most once: each extra submission lowers the score."""


def hint_texts() -> Dict[str, str]:
    return {"concise": CONCISE, "detailed": DETAILED}
