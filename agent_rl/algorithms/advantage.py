"""GRPO advantages: outcome (one scalar per trajectory) and multi-turn (outcome plus bounded per-turn shaping).

Group statistics use the *unbiased* standard deviation (`torch.std`, correction=1), as verl does.
A group of one trajectory has no baseline and gets advantage 0 (it carries no learning signal).

With several reward objectives (`reward.objectives`) the outcome advantage is either GRPO's on the weighted-sum score
(`batch["rewards"]`, the default) or, with `algorithm.norm_per_objective`, GDPO's (`gdpo_outcome_advantage`): the
trainer then puts `objective_scores` [B, K] and `objective_weights` [K] in the batch and every estimator's outcome
term (`outcome_advantage`) is GDPO's.
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


def gdpo_outcome_advantage(scores: torch.Tensor, weights: torch.Tensor, group_index: torch.Tensor,
                           norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GDPO (NVlabs/GDPO, "group reward-decoupled normalization"; TRL `multi_objective_aggregation=
    "normalize_then_sum"`): outcome advantage [B] from per-objective scores [B, K] (NaN = the objective does not
    apply to the row) and weights [K]:

        A_k  = (s_k - mean_g(s_k)) / (std_g(s_k) + eps)     per objective, over the group's members it applies to
                                                             (without the division when norm_by_std is off)
        S    = sum_k w_k * A_k                              objectives not applying add nothing
        A    = (S - mean_B(S)) / (std_B(S) + eps)           over the batch's members in groups of two or more

    A group of one member gets 0, as in GRPO. Every objective applies to all or none of a group's members (they
    share a row), so each A_k sums to 0 over a group and mean_B(S) is 0: the batch step rescales. Unlike GRPO on the
    weighted sum, the objectives' signals do not collapse into one: rewards (1, 0) vs (0, 0) and (1, 1) vs (0, 0)
    give the same GRPO advantages, but the second pair twice the GDPO advantage."""
    s = scores.double()
    applies = ~torch.isnan(s)
    w = weights.double().to(s.device)
    total = torch.zeros(s.shape[0], dtype=torch.float64)
    for k in range(s.shape[1]):
        a_k = group_normalize(torch.nan_to_num(s[:, k], nan=0.0), group_index, applies[:, k], norm_by_std, eps)
        total += w[k] * a_k.double()
    _, _, keep = _group_stats(total, group_index)
    if int(keep.sum()) < 2:
        return torch.zeros_like(total, dtype=torch.float32)
    mean = total[keep].mean()
    std = total[keep].std()
    out = torch.where(keep, (total - mean) / (std + eps), torch.zeros_like(total))
    return out.float()


def outcome_advantage(batch: dict, norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """The outcome advantage [B] of a batch: GDPO's when the batch holds `objective_scores` / `objective_weights`
    (algorithm.norm_per_objective), else GRPO's on `rewards`."""
    if batch.get("objective_scores") is not None:
        return gdpo_outcome_advantage(batch["objective_scores"], batch["objective_weights"], batch["group_index"],
                                      norm_by_std, eps)
    return grpo_outcome_advantage(batch["rewards"], batch["group_index"], norm_by_std, eps)


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
                              norm_by_std: bool = True, eps: float = 1e-6,
                              outcome: torch.Tensor | None = None) -> torch.Tensor:
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

    `outcome` [B] replaces the outcome advantage A (GDPO's, `gdpo_outcome_advantage`); s stays the weighted-sum
    score's group std, the unit the turn rewards (weighted sums too) are in.
    """
    dev, std, keep = _group_stats(rewards.float(), group_index)
    scale = std + eps if norm_by_std else torch.ones_like(std)
    if outcome is None:
        outcome = torch.where(keep, dev / scale, torch.zeros_like(dev))
    else:
        outcome = outcome.double()
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
    return broadcast_to_tokens(outcome_advantage(batch, norm_by_std, eps), batch["loss_mask"])


def _grpo_multi_turn(batch: dict, norm_by_std: bool, eps: float, turn_coef: float) -> torch.Tensor:
    gdpo = outcome_advantage(batch, norm_by_std, eps) if batch.get("objective_scores") is not None else None
    return grpo_multi_turn_advantage(batch["rewards"], batch.get("turn_rewards"), batch["group_index"],
                                     batch["turn_index"], batch["loss_mask"], turn_coef, norm_by_std, eps, gdpo)


# algorithm.adv_estimator -> fn(batch, norm_by_std, eps, turn_coef) -> token advantages [B, L]; config validation
# reads this dict, so an estimator added here is a valid value everywhere. An estimator that takes its outcome term
# from `outcome_advantage(batch, norm_by_std, eps)` honours algorithm.norm_per_objective (GDPO) too
ESTIMATORS = {"grpo": _grpo, "grpo_multi_turn": _grpo_multi_turn}


def compute_advantages(batch: dict, estimator: str = "grpo", norm_by_std: bool = True, eps: float = 1e-6,
                       turn_coef: float = 1.0) -> torch.Tensor:
    """Token advantages [B, L] for a training batch (docs/architecture.md layout)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown adv_estimator {estimator!r} ({' | '.join(ESTIMATORS)})")
    return ESTIMATORS[estimator](batch, norm_by_std, eps, turn_coef)
