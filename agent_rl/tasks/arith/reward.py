"""Arithmetic word problems and GSM8K: numeric match of the final answer.

The final answer is the last `<answer>...</answer>` of the assistant turns, else the last `#### n`;
its last number is compared with the ground truth (relative/absolute tolerance 1e-6).

components: correct (0/1), format (1 when a final answer holding a number was given in one of the two forms),
answered (the same 1 / 0 under the name every reward function uses for "an answer was given": logged, not
added; validation's answer_rate), and, only
when the trajectory called the `calc_gsm8k_reward` tool: calc_reward (its calc_reward; logged, not added)
and submit_penalty (the sum of its calls' step rewards: `penalty` for every submission after the first).
score = correct + reward.arith_format_weight * format + submit_penalty.
The tool's reply never says whether an answer is right, so a submission carries no information and each
extra one only lowers the score: guessing never pays (docs/rewards.md).
turn_rewards[t] = arith_format_weight * (turn t well-formed).
"""
from __future__ import annotations

from typing import Dict, Tuple

from agent_rl.rewards.text import final_answer, final_hash_answer, numbers_match, parse_number
from agent_rl.rewards.turns import assistant_texts, turn_format_scores
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tasks.arith.config import format_weight
from agent_rl.tasks.arith.rows import MATH_REWARD_TOOL as GSM8K_TOOL


def arith_reward(traj: Trajectory, cfg) -> Tuple[float, Dict[str, float]]:
    texts = assistant_texts(traj)
    answer = final_answer(texts)
    if answer is None:
        answer = final_hash_answer(texts)
    truth = parse_number((traj.row.get("reward_model") or {}).get("ground_truth"))
    pred = parse_number(answer)
    correct = 1.0 if numbers_match(pred, truth) else 0.0
    fmt = 1.0 if answer is not None and pred is not None else 0.0
    w = format_weight(cfg)
    comps: Dict[str, float] = {"correct": correct, "format": fmt, "answered": fmt}
    submissions = [c for t in traj.turns for c in t.tool_calls if c.name == GSM8K_TOOL]
    if submissions:
        comps["calc_reward"] = float(traj.tool_rewards.get(GSM8K_TOOL, 0.0))
        comps["submit_penalty"] = sum(c.step_reward for c in submissions)
    traj.turn_rewards = [w * s for s in turn_format_scores(traj)]
    return correct + w * fmt + comps.get("submit_penalty", 0.0), comps
