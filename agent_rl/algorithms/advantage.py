"""GRPO advantages: outcome (one scalar per trajectory) and multi-turn (per-turn rewards, KG-R1).

Group statistics use the *unbiased* standard deviation (`torch.std`, correction=1), as verl does.
A group of one trajectory has no baseline and gets advantage 0 (it carries no learning signal).
"""
from __future__ import annotations

import torch


def _group_ids(group_index: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group ids 0..G-1 for arbitrary integer group labels."""
    _, inverse = torch.unique(group_index, return_inverse=True)
    return inverse, int(inverse.max().item()) + 1 if inverse.numel() else 0


def group_normalize(values: torch.Tensor, group_index: torch.Tensor, valid: torch.Tensor | None = None,
                    norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """(v - mean_g) [/ (std_g + eps)] over the valid members of each group; 0 for invalid members and
    for groups with fewer than two valid members. `values`, `group_index`, `valid`: [B]."""
    v = values.double()
    valid = torch.ones_like(v, dtype=torch.bool) if valid is None else valid.bool()
    v = torch.where(valid, v, torch.zeros_like(v))
    gid, g = _group_ids(group_index)
    w = valid.double()
    count = torch.zeros(g, dtype=torch.float64).index_add_(0, gid, w)
    total = torch.zeros(g, dtype=torch.float64).index_add_(0, gid, v)
    mean = total / count.clamp(min=1)
    dev = (v - mean[gid]) * w
    sq = torch.zeros(g, dtype=torch.float64).index_add_(0, gid, dev * dev)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))  # unbiased
    adv = dev / (std[gid] + eps) if norm_by_std else dev
    keep = valid & (count[gid] >= 2)
    return torch.where(keep, adv, torch.zeros_like(adv)).to(values.dtype if values.is_floating_point() else torch.float32)


def grpo_outcome_advantage(rewards: torch.Tensor, group_index: torch.Tensor, norm_by_std: bool = True,
                           eps: float = 1e-6) -> torch.Tensor:
    """Outcome advantage [B]: (r - mean_group) / (std_group + eps), or r - mean_group with std off (Dr.GRPO)."""
    return group_normalize(rewards.float(), group_index, None, norm_by_std, eps)


def broadcast_to_tokens(adv: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sequence advantages [B] -> token advantages [B, L], zero where loss_mask is 0."""
    return adv.to(torch.float32)[:, None] * loss_mask.to(torch.float32)


def turn_advantage(turn_rewards: torch.Tensor, group_index: torch.Tensor, norm_by_std: bool = True,
                   eps: float = 1e-6) -> torch.Tensor:
    """Per-turn advantages [B, T]: each turn position t is normalised within the group over the members
    that have a turn t (NaN = no such turn). Missing turns and turns held by a single member get 0."""
    tr = turn_rewards.float()
    out = torch.zeros_like(tr)
    for t in range(tr.shape[1]):
        col = tr[:, t]
        valid = ~torch.isnan(col)
        out[:, t] = group_normalize(torch.nan_to_num(col, nan=0.0), group_index, valid, norm_by_std, eps)
    return out


def grpo_multi_turn_advantage(rewards: torch.Tensor, turn_rewards: torch.Tensor, group_index: torch.Tensor,
                              turn_index: torch.Tensor, loss_mask: torch.Tensor, coef: float = 1.0,
                              norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Token advantages [B, L] (KG-R1): outcome advantage of the trajectory plus `coef` times the
    group-normalised reward of the turn the token belongs to (`turn_index` [B, L], -1 = no turn).
    Zero where loss_mask is 0."""
    outcome = grpo_outcome_advantage(rewards, group_index, norm_by_std, eps)
    tok = broadcast_to_tokens(outcome, loss_mask)
    if turn_rewards is None or turn_rewards.numel() == 0:
        return tok
    per_turn = turn_advantage(turn_rewards, group_index, norm_by_std, eps)  # [B, T]
    ti = turn_index.long()
    has_turn = (ti >= 0) & (ti < per_turn.shape[1])
    gathered = torch.gather(per_turn, 1, ti.clamp(min=0, max=max(per_turn.shape[1] - 1, 0)))
    bonus = torch.where(has_turn, gathered, torch.zeros_like(gathered))
    return tok + coef * bonus * loss_mask.to(torch.float32)


def compute_advantages(batch: dict, estimator: str = "grpo", norm_by_std: bool = True, eps: float = 1e-6,
                       turn_coef: float = 1.0) -> torch.Tensor:
    """Token advantages [B, L] for a training batch (docs/architecture.md layout)."""
    if estimator == "grpo":
        adv = grpo_outcome_advantage(batch["rewards"], batch["group_index"], norm_by_std, eps)
        return broadcast_to_tokens(adv, batch["loss_mask"])
    if estimator == "grpo_multi_turn":
        return grpo_multi_turn_advantage(batch["rewards"], batch.get("turn_rewards"), batch["group_index"],
                                         batch["turn_index"], batch["loss_mask"], turn_coef, norm_by_std, eps)
    raise ValueError(f"unknown adv_estimator {estimator!r} (grpo | grpo_multi_turn)")
