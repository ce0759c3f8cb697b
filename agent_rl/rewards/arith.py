"""Arithmetic word problems and GSM8K: numeric match of the final answer.

The final answer is the last `<answer>...</answer>` of the assistant turns, else the last `#### n`;
its last number is compared with the ground truth (relative/absolute tolerance 1e-6).

components: correct (0/1), format (1 when a final answer was given in one of the two forms),
calc_reward (the `calc_gsm8k_reward` tool's calc_reward, only when the trajectory called it; logged,
not added). score = correct + reward.arith_format_weight * format.
turn_rewards[t] = arith_format_weight * (turn t well-formed).
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

from agent_rl.rewards.text import final_answer, final_hash_answer, parse_number
from agent_rl.rewards.turns import assistant_texts, turn_format_scores
from agent_rl.rollout.trajectory import Trajectory

GSM8K_TOOL = "calc_gsm8k_reward"


def numbers_match(a, b) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def arith_reward(traj: Trajectory, cfg) -> Tuple[float, Dict[str, float]]:
    texts = assistant_texts(traj)
    answer = final_answer(texts)
    if answer is None:
        answer = final_hash_answer(texts)
    truth = parse_number((traj.row.get("reward_model") or {}).get("ground_truth"))
    pred = parse_number(answer)
    correct = 1.0 if numbers_match(pred, truth) else 0.0
    fmt = 1.0 if answer is not None and pred is not None else 0.0
    w = float(getattr(cfg, "arith_format_weight", 0.0))
    comps: Dict[str, float] = {"correct": correct, "format": fmt}
    if any(c.name == GSM8K_TOOL for t in traj.turns for c in t.tool_calls):
        comps["calc_reward"] = float(traj.tool_rewards.get(GSM8K_TOOL, 0.0))
    traj.turn_rewards = [w * s for s in turn_format_scores(traj)]
    return correct + w * fmt, comps
