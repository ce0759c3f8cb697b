"""Per-assistant-turn format checks used by the reward functions and the multi-turn advantage."""
from __future__ import annotations

from typing import List

from agent_rl.rollout.parser import extract_answer, parse_tool_calls
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.record import BUDGET, MALFORMED_STATUSES

# A call with one of these statuses was malformed, or never ran (the tool-call budget was spent).
BAD_CALL_STATUSES = MALFORMED_STATUSES + (BUDGET,)


def turn_well_formed(turn: TurnRecord) -> bool:
    """A well-formed turn either makes tool calls that are all valid (parse, known tool, valid
    arguments) and all ran, and gives no answer; or gives an `<answer>` holding a letter or digit
    without tool calls. Calls of the turn that hit the turn or tool-call limit never ran (the turn
    has no call records): that turn is not well-formed. The calls are the ones the configured tool-call
    format found (`turn.calls_parsed`, set by the agent loop); a turn recorded without it is parsed as Hermes."""
    answer = extract_answer(turn.text)
    n_calls = turn.calls_parsed if turn.calls_parsed is not None else len(parse_tool_calls(turn.text).calls)
    if n_calls:
        if answer is not None or len(turn.tool_calls) != n_calls:
            return False
        return not any(r.status in BAD_CALL_STATUSES for r in turn.tool_calls)
    return answer is not None and any(ch.isalnum() for ch in answer)


def turn_format_scores(traj: Trajectory) -> List[float]:
    return [1.0 if turn_well_formed(t) else 0.0 for t in traj.turns]


def assistant_texts(traj: Trajectory) -> List[str]:
    return [t.text for t in traj.turns]
