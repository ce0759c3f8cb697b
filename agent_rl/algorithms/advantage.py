"""GRPO advantages: outcome (one scalar per trajectory) and multi-turn (outcome plus bounded per-turn shaping).

Group statistics use the *unbiased* standard deviation (`torch.std`, correction=1), as verl does.
A group of one trajectory has no baseline and gets advantage 0 (it carries no learning signal).
"""
from __future__ import annotations

import torch

# A turn's shaping bonus is at most this fraction of its trajectory's |outcome advantage|.
MAX_TURN_SHARE = 0.5


def _group_ids(group_index: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group ids 0..G-1 for arbitrary integer group labels."""
    _, inverse = torch.unique(group_index, return_inverse=True)
    return inverse, int(inverse.max().item()) + 1 if inverse.numel() else 0


def _group_stats(values: torch.Tensor, group_index: torch.Tensor, valid: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per member (float64): deviation from its group's mean and the group's unbiased std, over the
    valid members; and whether the member is valid in a group of at least two valid members."""
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
    return dev, std[gid], valid & (count[gid] >= 2)


def group_normalize(values: torch.Tensor, group_index: torch.Tensor, valid: torch.Tensor | None = None,
                    norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """(v - mean_g) [/ (std_g + eps)] over the valid members of each group; 0 for invalid members and
    for groups with fewer than two valid members. `values`, `group_index`, `valid`: [B]."""
    dev, std, keep = _group_stats(values, group_index, valid)
    adv = dev / (std + eps) if norm_by_std else dev
    return torch.where(keep, adv, torch.zeros_like(adv)).to(values.dtype if values.is_floating_point() else torch.float32)


def grpo_outcome_advantage(rewards: torch.Tensor, group_index: torch.Tensor, norm_by_std: bool = True,
                           eps: float = 1e-6) -> torch.Tensor:
    """Outcome advantage [B]: (r - mean_group) / (std_group + eps), or r - mean_group with std off (Dr.GRPO)."""
    return group_normalize(rewards.float(), group_index, None, norm_by_std, eps)


def broadcast_to_tokens(adv: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sequence advantages [B] -> token advantages [B, L], zero where loss_mask is 0."""
    return adv.to(torch.float32)[:, None] * loss_mask.to(torch.float32)


def turn_advantage(turn_rewards: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """Per-turn rewards [B, T] minus the mean turn reward of their group, taken over every turn of every
    member (NaN = no such turn; it gets 0). Not divided by a std of their own, so the weights the reward
    function gave its components are kept; a group with a single turn gets 0."""
    tr = turn_rewards.double()
    valid = ~torch.isnan(tr)
    centred = group_normalize(torch.nan_to_num(tr, nan=0.0).reshape(-1), group_index.repeat_interleave(tr.shape[1]),
                              valid.reshape(-1), norm_by_std=False)
    return centred.reshape(tr.shape).float()


def grpo_multi_turn_advantage(rewards: torch.Tensor, turn_rewards: torch.Tensor, group_index: torch.Tensor,
                              turn_index: torch.Tensor, loss_mask: torch.Tensor, coef: float = 1.0,
                              norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Token advantages [B, L]: the outcome advantage A of the trajectory plus a shaping bonus for the
    turn the token belongs to (`turn_index` [B, L], -1 = no turn). Zero where loss_mask is 0.

    bonus = clip(coef * turn_advantage / s, -MAX_TURN_SHARE * |A|, MAX_TURN_SHARE * |A|), where s is the
    divisor of the outcome advantage (group std + eps, or 1 with std off) so both are in one unit.
    Centred without a std of their own, turn rewards keep their weights relative to the outcome (a 0.1
    format term stays a tenth of a unit of answer). The clip lets shaping move credit between the turns
    of a trajectory but keeps every token's advantage between A/2 and 3A/2: it can neither cancel nor
    flip the outcome, so a wrong answer's tokens stay negative and a right answer's positive. Where A is
    0 (a group whose rewards are all equal, or a member at its group's mean) the bonus is 0 too: the
    outcome reward already holds the trajectory's shaping terms, so such a group had no better
    trajectory to learn from, and shaping alone would reinforce habits whatever the answer
    (docs/rewards.md).
    """
    dev, std, keep = _group_stats(rewards.float(), group_index)
    scale = std + eps if norm_by_std else torch.ones_like(std)
    outcome = torch.where(keep, dev / scale, torch.zeros_like(dev))
    tok = broadcast_to_tokens(outcome, loss_mask)
    if turn_rewards is None or turn_rewards.numel() == 0:
        return tok
    per_turn = turn_advantage(turn_rewards, group_index).double() * coef / scale[:, None]  # [B, T]
    ti = turn_index.long()
    has_turn = (ti >= 0) & (ti < per_turn.shape[1])
    gathered = torch.gather(per_turn, 1, ti.clamp(min=0, max=max(per_turn.shape[1] - 1, 0)))
    bound = MAX_TURN_SHARE * outcome.abs()[:, None]
    bonus = torch.where(has_turn, torch.maximum(torch.minimum(gathered, bound), -bound), torch.zeros_like(gathered))
    return tok + bonus.float() * loss_mask.to(torch.float32)


def _grpo(batch: dict, norm_by_std: bool, eps: float, turn_coef: float) -> torch.Tensor:
    return broadcast_to_tokens(grpo_outcome_advantage(batch["rewards"], batch["group_index"], norm_by_std, eps),
                               batch["loss_mask"])


def _grpo_multi_turn(batch: dict, norm_by_std: bool, eps: float, turn_coef: float) -> torch.Tensor:
    return grpo_multi_turn_advantage(batch["rewards"], batch.get("turn_rewards"), batch["group_index"],
                                     batch["turn_index"], batch["loss_mask"], turn_coef, norm_by_std, eps)


# algorithm.adv_estimator -> fn(batch, norm_by_std, eps, turn_coef) -> token advantages [B, L]; config validation
# reads this dict, so an estimator added here is a valid value everywhere
ESTIMATORS = {"grpo": _grpo, "grpo_multi_turn": _grpo_multi_turn}


def compute_advantages(batch: dict, estimator: str = "grpo", norm_by_std: bool = True, eps: float = 1e-6,
                       turn_coef: float = 1.0) -> torch.Tensor:
    """Token advantages [B, L] for a training batch (docs/architecture.md layout)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown adv_estimator {estimator!r} ({' | '.join(ESTIMATORS)})")
    return ESTIMATORS[estimator](batch, norm_by_std, eps, turn_coef)
