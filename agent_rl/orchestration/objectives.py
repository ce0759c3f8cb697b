"""The training batch's multi-objective inputs (`reward.objectives`), built by the driver from the step's trajectories.

    objective_scores   float [B, K]  each objective's score (the trajectory's `obj/<name>` component), NaN where the
                                     objective does not apply: GDPO's input (algorithm.norm_per_objective)
    objective_weights  float [K]
    kl_objectives      float [B, K]  1 where objective k applies to the row (its data_sources): per-objective KL
    kl_coef            float [B]     the row's KL loss coefficient: the mean of its objectives' coefficients
                                     (algorithm.kl_ctrl.type=range, one coefficient per objective)
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch

from agent_rl.algorithms.kl import objective_kl_coef
from agent_rl.tasks.objectives import PREFIX, Objective


def objective_tensors(trajs: Sequence, objectives: Sequence[Objective]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(applies [B, K] 1/0 from each row's data_source, scores [B, K] from the `obj/<name>` components, NaN where
    absent)."""
    B, K = len(trajs), len(objectives)
    applies = torch.zeros(B, K, dtype=torch.float32)
    scores = torch.full((B, K), math.nan, dtype=torch.float32)
    for b, t in enumerate(trajs):
        comps = t.reward_components or {}
        for k, o in enumerate(objectives):
            applies[b, k] = 1.0 if o.applies(t.row) else 0.0
            v = comps.get(PREFIX + o.name)
            if v is not None:
                scores[b, k] = float(v)
    return applies, scores


def add_objective_inputs(batch: Dict, trajs: Sequence, objectives: Sequence[Objective], gdpo: bool,
                         kl_ctrl=None) -> Optional[list]:
    """Put the module docstring's tensors into `batch`: GDPO's inputs when `gdpo`; with a KL loss (`kl_ctrl`, the
    coefficient controller, None without KL loss) `kl_objectives`, and `kl_coef` when the controller keeps one
    coefficient per objective (`range`). Returns the objectives' names (the columns of `kl_objectives`, measured by
    the actor as actor/kl/<name>), or None without objectives or KL loss."""
    if not objectives:
        return None
    applies, scores = objective_tensors(trajs, objectives)
    if gdpo:
        batch["objective_scores"] = scores
        batch["objective_weights"] = torch.tensor([o.weight for o in objectives], dtype=torch.float32)
    if kl_ctrl is None:
        return None
    names = [o.name for o in objectives]
    batch["kl_objectives"] = applies
    coefs = getattr(kl_ctrl, "coefs", None)
    if coefs is not None and set(coefs) == set(names):
        batch["kl_coef"] = objective_kl_coef(torch.tensor([coefs[n] for n in names], dtype=torch.float64), applies)
    return names


def drop_driver_only(batch: Dict) -> None:
    """GDPO's inputs are used by the driver only (advantages): not sent to the workers."""
    batch.pop("objective_scores", None)
    batch.pop("objective_weights", None)
