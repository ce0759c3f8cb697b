"""The arithmetic task's config keys (`Task.config`, agent_rl/tasks/registry.py; GSM8K shares them): the reward
weight in the `reward` section, under its own name (`reward.arith_format_weight=0.1`, `cfg.reward.arith_format_weight`;
agent_rl/config/extend.py adds it there)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_rl.config.schema import F


@dataclass
class ArithRewardConfig:
    arith_format_weight: float = F(0.0, "weight of the answer-format score for arithmetic / GSM8K")


def format_weight(reward_cfg: Any) -> float:
    """`reward.arith_format_weight`, its default where the section has none (a bare `RewardConfig()` built in code)."""
    return float(getattr(reward_cfg, "arith_format_weight", ArithRewardConfig.arith_format_weight))
