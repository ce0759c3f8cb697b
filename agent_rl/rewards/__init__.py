"""Reward functions, dispatched by the row's `data_source`.

    score, components = compute_reward(traj, reward_cfg)

Also fills `traj.turn_rewards` (one value per assistant turn, for the multi-turn advantage).
kg_synth / webqsp / cwq -> `kg.kg_reward`; arith_synth / gsm8k -> `arith.arith_reward`;
`register_reward(name, fn)` adds a data source (docs/tools.md, "Rewards for a new data_source").

A data_source with no registered reward is an error (`UnknownDataSourceError`, one line): at load when the
trainer / `agent-rl rollout` check the rows, else at the first trajectory that needs scoring, unless
`reward.default_reward` names a default: `kg` (every unknown source gets the KG reward), `arith` (the
arithmetic reward), `infer` (the row's `ability`: kgqa -> KG, math -> arithmetic; else the ground truth's type:
list -> KG, str / number -> arithmetic).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

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
DEFAULT_REWARD_NAMES = ("kg", "arith", "infer")   # values of reward.default_reward

__all__ = ["compute_reward", "register_reward", "reward_fn_for", "UnknownDataSourceError", "REWARD_FNS",
           "DEFAULT_REWARD_NAMES", "answer_scores", "normalize_answer"]


class UnknownDataSourceError(ValueError):
    """A row's data_source has no reward function and no default reward is configured (the CLIs report it as a
    one-line config error when the rows are loaded)."""


def register_reward(data_source: str, fn: RewardFn) -> None:
    """Score rows of `data_source` with `fn(traj, reward_cfg) -> (score, {component: value})`."""
    if not isinstance(data_source, str) or not data_source:
        raise ValueError(f"register_reward: data_source must be a non-empty string, got {data_source!r}")
    if not callable(fn):
        raise TypeError(f"register_reward({data_source!r}, ...): fn must be callable, got {type(fn).__name__}")
    REWARD_FNS[data_source] = fn


def _infer(row: dict) -> Optional[RewardFn]:
    if row.get("ability") in ABILITY_FNS:
        return ABILITY_FNS[row["ability"]]
    gt = (row.get("reward_model") or {}).get("ground_truth")
    if isinstance(gt, (list, tuple)):
        return kg_reward
    if isinstance(gt, (str, int, float)) and not isinstance(gt, bool):
        return arith_reward
    return None


def _unknown(source, detail: str = "") -> UnknownDataSourceError:
    known = ", ".join(sorted(REWARD_FNS))
    return UnknownDataSourceError(
        f"no reward function for data_source {source!r}{detail} (known: {known}); register one with "
        f"agent_rl.rewards.register_reward({source!r}, fn) in a module the run imports (e.g. your tool's module), "
        f"or set a default: reward.default_reward=arith|kg|infer (docs/tools.md, 'Rewards for a new data_source')")


def reward_fn_for(row: dict, default: Optional[str] = None) -> RewardFn:
    """The reward function of a row: its data_source's, else `default` (reward.default_reward: kg | arith | infer);
    raises UnknownDataSourceError."""
    source = row.get("data_source")
    if source in REWARD_FNS:
        return REWARD_FNS[source]
    if default is None:
        raise _unknown(source)
    if default not in DEFAULT_REWARD_NAMES:
        raise ValueError(f"reward.default_reward: {default!r} is not one of {', '.join(DEFAULT_REWARD_NAMES)}")
    if default == "infer":
        fn = _infer(row)
        if fn is None:
            raise _unknown(source, " (the default 'infer' found no ability kgqa|math and no str / number / list "
                                   "ground truth)")
        return fn
    return kg_reward if default == "kg" else arith_reward


def compute_reward(traj: Trajectory, reward_cfg) -> Tuple[float, Dict[str, float]]:
    """(score, components) of a finished trajectory; sets `traj.turn_rewards`."""
    score, comps = reward_fn_for(traj.row, getattr(reward_cfg, "default_reward", None))(traj, reward_cfg)
    return float(score), {k: float(v) for k, v in comps.items()}
