"""Rollout / training log-prob mismatch: truncated importance sampling (TIS) and metrics.

The engine samples with pi_rollout (e.g. SGLang bf16 kernels); the trainer's recomputed old
log-probs are pi_old. The policy gradient is estimated with samples from pi_rollout, so each token's
loss is weighted by min(pi_old / pi_rollout, cap) (detached), as in "Your efficient RL framework
secretly brings you off-policy RL training" (Yao et al., 2025).
"""
from __future__ import annotations

import math
from typing import Dict

import torch


def truncated_importance_weights(old_logp_train: torch.Tensor, rollout_logp: torch.Tensor,
                                 mask: torch.Tensor, cap: float = 2.0) -> torch.Tensor:
    """min(exp(old_logp_train - rollout_logp), cap), detached, 0 where mask is 0. [B, L]."""
    if cap <= 0:
        raise ValueError("TIS cap must be > 0")
    delta = (old_logp_train.detach().float() - rollout_logp.detach().float())
    w = torch.exp(torch.clamp(delta, max=math.log(cap)))  # == min(exp(delta), cap), no overflow
    return torch.where(mask.bool(), w, torch.zeros_like(w))


def mismatch_metrics(old_logp_train: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
                     cap: float = 2.0) -> Dict[str, float]:
    """Statistics over masked tokens of the ratio pi_train / pi_rollout."""
    m = mask.bool()
    delta = (old_logp_train.detach().float() - rollout_logp.detach().float())[m]
    if delta.numel() == 0:
        return {}
    ratio = torch.exp(torch.clamp(delta, max=50.0))
    q = torch.quantile(ratio.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    # KL(pi_rollout || pi_train) from rollout samples, k3 estimator with r = pi_train / pi_rollout
    k3 = (ratio - 1.0 - delta).mean()
    return {
        "mismatch/abs_logp_diff_mean": delta.abs().mean().item(),
        "mismatch/abs_logp_diff_max": delta.abs().max().item(),
        "mismatch/ratio_p50": q[0].item(),
        "mismatch/ratio_p90": q[1].item(),
        "mismatch/ratio_p99": q[2].item(),
        "mismatch/ratio_max": ratio.max().item(),
        "mismatch/ratio_min": ratio.min().item(),
        "mismatch/kl_k3": k3.item(),
        "mismatch/tis_clip_frac": (ratio > cap).float().mean().item(),
        "mismatch/tokens": float(delta.numel()),
    }
