"""What the prompt texts of every task share: the answer format `<answer>a | b</answer>`.

Each task's own prompt texts live with the task (`agent_rl/tasks/<task>/rows.py`: the KG question, the math
problem); the tool JSON schemas are injected by the chat template, so those texts only say what to do, show one
short worked example, and fix the answer format.
"""
from __future__ import annotations

ANSWER_SEPARATOR = " | "
