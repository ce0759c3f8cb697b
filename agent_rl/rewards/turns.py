"""Per-assistant-turn format checks used by the reward functions and the multi-turn advantage."""
from __future__ import annotations

from typing import List

from agent_rl.rollout.parser import extract_answer, parse_tool_calls
from agent_rl.rollout.trajectory import Trajectory, TurnRecord

BAD_CALL_STATUSES = ("parse_error", "unknown_tool", "invalid_arguments")


def turn_well_formed(turn: TurnRecord) -> bool:
    """A well-formed turn either makes tool calls that are all valid (parse, known tool, valid
    arguments) and gives no answer, or gives an `<answer>` without tool calls."""
    parsed = parse_tool_calls(turn.text)
    has_answer = extract_answer(turn.text) is not None
    if parsed.has_calls:
        if has_answer or not all(c.ok for c in parsed.calls):
            return False
        return not any(r.status in BAD_CALL_STATUSES for r in turn.tool_calls)
    return has_answer


def turn_format_scores(traj: Trajectory) -> List[float]:
    return [1.0 if turn_well_formed(t) else 0.0 for t in traj.turns]


def assistant_texts(traj: Trajectory) -> List[str]:
    return [t.text for t in traj.turns]
