"""GRPO advantages, PPO-clip loss, KL estimators, entropy and mismatch correction (pure torch functions)."""
from agent_rl.algorithms.advantage import (ESTIMATORS, broadcast_to_tokens, compute_advantages, grpo_multi_turn_advantage,
                                           grpo_outcome_advantage, turn_advantage)
from agent_rl.algorithms.aggregate import AGG_MODES, aggregate, masked_mean
from agent_rl.algorithms.entropy import entropy_bonus, entropy_from_logits, logprobs_and_entropy
from agent_rl.algorithms.kl import KL_KINDS, kl_penalty
from agent_rl.algorithms.mismatch import mismatch_metrics, truncated_importance_weights
from agent_rl.algorithms.policy_loss import ppo_clip_loss

__all__ = [
    "AGG_MODES", "ESTIMATORS", "KL_KINDS", "aggregate", "broadcast_to_tokens", "compute_advantages", "entropy_bonus",
    "entropy_from_logits", "grpo_multi_turn_advantage", "grpo_outcome_advantage", "kl_penalty",
    "logprobs_and_entropy", "masked_mean", "mismatch_metrics", "ppo_clip_loss", "truncated_importance_weights",
    "turn_advantage",
]
