"""Reward functions, dispatched by the row's `data_source`.

    score, components = compute_reward(traj, reward_cfg)

Also fills `traj.turn_rewards` (one value per assistant turn, for the multi-turn advantage).
kg_synth / webqsp / cwq -> `kg.kg_reward`; arith_synth / gsm8k -> `arith.arith_reward`. Another data
source falls back on the row's `ability` (kgqa | math), else on the ground truth's type (list -> KG,
str / number -> math); `register_reward(name, fn)` adds a data source.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

from agent_rl.rewards.arith import arith_reward
from agent_rl.rewards.kg import answer_scores, kg_reward
from agent_rl.rewards.text import normalize_answer
from agent_rl.rollout.trajectory import Trajectory

RewardFn = Callable[[Trajectory, object], Tuple[float, Dict[str, float]]]

REWARD_FNS: Dict[str, RewardFn] = {
    "kg_synth": kg_reward, "webqsp": kg_reward, "cwq": kg_reward,
    "arith_synth": arith_reward, "gsm8k": arith_reward,
}
ABILITY_FNS: Dict[str, RewardFn] = {"kgqa": kg_reward, "math": arith_reward}

__all__ = ["compute_reward", "register_reward", "reward_fn_for", "answer_scores", "normalize_answer"]


def register_reward(data_source: str, fn: RewardFn) -> None:
    REWARD_FNS[data_source] = fn


def reward_fn_for(row: dict) -> RewardFn:
    source = row.get("data_source")
    if source in REWARD_FNS:
        return REWARD_FNS[source]
    if row.get("ability") in ABILITY_FNS:
        return ABILITY_FNS[row["ability"]]
    gt = (row.get("reward_model") or {}).get("ground_truth")
    if isinstance(gt, (list, tuple)):
        return kg_reward
    if isinstance(gt, (str, int, float)):
        return arith_reward
    raise ValueError(f"no reward function for data_source {source!r} (register one with register_reward)")


def compute_reward(traj: Trajectory, reward_cfg) -> Tuple[float, Dict[str, float]]:
    """(score, components) of a finished trajectory; sets `traj.turn_rewards`."""
    score, comps = reward_fn_for(traj.row)(traj, reward_cfg)
    return float(score), {k: float(v) for k, v in comps.items()}
