"""PPO clipped policy loss with asymmetric clip range and dual clip (verl's compute_policy_loss)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from agent_rl.algorithms.aggregate import aggregate, masked_mean


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                  clip_low: float = 0.2, clip_high: float = 0.28, clip_c: Optional[float] = 3.0,
                  agg_mode: str = "token-mean", weights: Optional[torch.Tensor] = None,
                  global_tokens: Optional[float] = None, global_seqs: Optional[float] = None,
                  ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """All tensors [B, L]. ratio = exp(logp - old_logp) (log-ratio clamped to [-20, 20]).

    per-token loss = max(-A·ratio, -A·clip(ratio, 1-clip_low, 1+clip_high)); for A < 0 it is further
    bounded by clip_c·|A| (dual clip, clip_c > 1, None = off). `weights` (e.g. truncated importance
    weights, treated as constants) multiply the per-token loss before aggregation.
    Returns (loss, metrics) with metrics clip_frac, ppo_kl, dual_clip_frac (masked token means, detached).
    """
    mask = mask.to(logp.dtype)
    adv = adv.to(logp.dtype)
    log_ratio = torch.clamp(logp - old_logp, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    loss1 = -adv * ratio
    loss2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(loss1, loss2)
    metrics = {
        "clip_frac": masked_mean((loss2 > loss1).to(logp.dtype), mask).detach(),
        "ppo_kl": masked_mean(-log_ratio, mask).detach(),
    }
    if clip_c is not None:
        if clip_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1, got {clip_c}")
        loss3 = -adv * clip_c
        dual = torch.minimum(loss3, clipped)
        neg = adv < 0
        metrics["dual_clip_frac"] = masked_mean(((clipped > loss3) & neg).to(logp.dtype), mask).detach()
        per_token = torch.where(neg, dual, clipped)
    else:
        metrics["dual_clip_frac"] = torch.zeros((), dtype=logp.dtype)
        per_token = clipped
    if weights is not None:
        per_token = per_token * weights.detach().to(per_token.dtype)
    loss = aggregate(per_token, mask, agg_mode, global_tokens, global_seqs)
    return loss, metrics
