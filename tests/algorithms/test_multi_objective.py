"""Multi-objective advantages (GDPO, algorithm.norm_per_objective) and per-objective KL coefficients, by hand."""
import math

import pytest
import torch

from agent_rl.algorithms.advantage import (ESTIMATORS, compute_advantages, gdpo_outcome_advantage,
                                           grpo_outcome_advantage, outcome_advantage)
from agent_rl.algorithms.aggregate import aggregate, row_terms
from agent_rl.algorithms.kl import objective_kl_coef
from agent_rl.algorithms.kl_ctrl import TargetRangeKLController, build_kl_controller, kl_coef_metrics
from agent_rl.config.schema import KLCtrlConfig

NAN = math.nan
A = 1 / math.sqrt(2)     # (1 - 0.5) / unbiased std of {1, 0}


def test_grpo_on_the_sum_collapses_what_gdpo_keeps():
    """Two groups of two, objectives (answer, format), weights 1: group 0 rewards (1, 0) vs (0, 0), group 1 (1, 1) vs
    (0, 0). GRPO on the sums [1, 0] and [2, 0] gives both groups +-1/sqrt 2: getting both objectives right earns
    nothing more. GDPO: group 0 S = [A, -A] (format has no spread: 0), group 1 S = [2A, -2A]; the batch std of
    [A, -A, 2A, -2A] is A sqrt(10/3), so A = sqrt(3/10) * [1, -1, 2, -2]."""
    scores = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    gi = torch.tensor([0, 0, 1, 1])
    grpo = grpo_outcome_advantage(scores.sum(1), gi)
    assert grpo.tolist() == pytest.approx([A, -A, A, -A], rel=1e-5)
    gdpo = gdpo_outcome_advantage(scores, torch.tensor([1.0, 1.0]), gi)
    r = math.sqrt(0.3)
    assert gdpo.tolist() == pytest.approx([r, -r, 2 * r, -2 * r], rel=1e-5)


def test_a_large_scale_objective_does_not_drown_a_small_one():
    """One group of four, answer in {0, 1} and length in {0, 10}: GRPO on the sum [1, 11, 0, 10] ranks (answer right,
    length wrong) at -0.776 and (answer wrong, length right) at +0.776: the length objective decides. GDPO:
    answer -> [.866, .866, -.866, -.866], length -> [-.866, .866, -.866, .866], S = [0, sqrt 3, -sqrt 3, 0] with batch
    std sqrt 2: [0, 1.2247, -1.2247, 0] - both objectives count the same. With norm_by_std off each objective is only
    centred (A_k = s_k - mean): S = [-4.5, 5.5, -5.5, 4.5], the sum's deviations, so the scale comes back."""
    scores = torch.tensor([[1.0, 0.0], [1.0, 10.0], [0.0, 0.0], [0.0, 10.0]])
    gi = torch.zeros(4, dtype=torch.long)
    std = math.sqrt(101 / 3)
    grpo = [-4.5 / std, 5.5 / std, -5.5 / std, 4.5 / std]
    assert grpo_outcome_advantage(scores.sum(1), gi).tolist() == pytest.approx(grpo, rel=1e-5)
    w = torch.tensor([1.0, 1.0])
    assert gdpo_outcome_advantage(scores, w, gi).tolist() == pytest.approx([0, math.sqrt(1.5), -math.sqrt(1.5), 0],
                                                                           abs=1e-5)
    assert gdpo_outcome_advantage(scores, w, gi, norm_by_std=False).tolist() == pytest.approx(grpo, rel=1e-5)


def test_weights_and_objectives_that_do_not_apply():
    """format (weight 2) applies to group 1 only (NaN in group 0). Group 0: S = [A, -A]; group 1: answer [1, 0] ->
    [A, -A], format [0, 1] -> [-A, A], S = [A - 2A, -A + 2A] = [-A, A]. Batch std of [A, -A, -A, A] is A * 2/sqrt 3:
    [sqrt 3/2, -sqrt 3/2, -sqrt 3/2, sqrt 3/2]. A group of one has no baseline: 0, and it is not in the batch std."""
    scores = torch.tensor([[1.0, NAN], [0.0, NAN], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    gi = torch.tensor([0, 0, 1, 1, 2])
    h = math.sqrt(3) / 2
    out = gdpo_outcome_advantage(scores, torch.tensor([1.0, 2.0]), gi)
    assert out.tolist() == pytest.approx([h, -h, -h, h, 0.0], rel=1e-5)


def test_no_signal_gives_zero_not_a_division_by_zero():
    scores = torch.tensor([[1.0, 0.5], [1.0, 0.5], [0.0, 0.0], [0.0, 0.0]])
    out = gdpo_outcome_advantage(scores, torch.tensor([1.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    assert out.tolist() == [0.0, 0.0, 0.0, 0.0]


def _batch(scores, weights, gi, L=3):
    B = scores.shape[0]
    return {"rewards": (torch.nan_to_num(scores) * weights).sum(1), "group_index": gi,
            "loss_mask": torch.ones(B, L), "turn_index": torch.zeros(B, L, dtype=torch.long),
            "turn_rewards": torch.full((B, 1), NAN), "objective_scores": scores, "objective_weights": weights}


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_takes_gdpo_outcome_when_the_batch_holds_objectives(estimator):
    scores = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    batch = _batch(scores, torch.tensor([1.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    tok = compute_advantages(batch, estimator)
    r = math.sqrt(0.3)
    assert tok[:, 0].tolist() == pytest.approx([r, -r, 2 * r, -2 * r], rel=1e-5)
    assert (tok == tok[:, :1]).all()
    # without the objective tensors: GRPO on the weighted sum, as before
    del batch["objective_scores"], batch["objective_weights"]
    assert compute_advantages(batch, estimator)[:, 0].tolist() == pytest.approx([A, -A, A, -A], rel=1e-5)
    assert outcome_advantage(batch).tolist() == pytest.approx([A, -A, A, -A], rel=1e-5)


def test_multi_turn_bonus_is_bounded_by_the_gdpo_outcome():
    """grpo_multi_turn under GDPO: turn bonuses are clipped to half of the GDPO outcome advantage."""
    scores = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    batch = _batch(scores, torch.tensor([1.0, 1.0]), torch.tensor([0, 0]), L=2)
    batch["turn_index"] = torch.tensor([[0, 1], [0, 1]])
    batch["turn_rewards"] = torch.tensor([[5.0, 0.0], [0.0, 0.0]])
    tok = compute_advantages(batch, "grpo_multi_turn")
    a = gdpo_outcome_advantage(scores, torch.tensor([1.0, 1.0]), torch.tensor([0, 0]))  # [1/sqrt 2, -1/sqrt 2]
    assert a.tolist() == pytest.approx([A, -A], rel=1e-5)
    # turn rewards centred on the group's turn mean 1.25, over the sum's std (1/A): row 0 turn 0 +3.75 A -> clipped
    # to +A/2, every other turn -1.25 A -> clipped to -A/2; added to the outcome +-A
    assert tok[0].tolist() == pytest.approx([1.5 * A, 0.5 * A], rel=1e-5)
    assert tok[1].tolist() == pytest.approx([-1.5 * A, -1.5 * A], rel=1e-5)


# ---------------------------------------------------------------- per-objective KL

def test_range_controller_gets_one_coefficient_per_objective_and_moves_each_alone():
    cfg = KLCtrlConfig(type="range", kl_coef=0.01, target_range=[0.001, 0.01], factor=2.0, min_coef=0.001,
                       max_coef=0.05)
    ctrl = build_kl_controller(cfg, 0.003, ["answer", "format", "judge"])
    assert ctrl.coefs == {"answer": 0.01, "format": 0.01, "judge": 0.01}
    ctrl.update({"answer": 0.05, "format": 0.0005, "judge": 0.005})    # above, below, inside the range
    assert ctrl.coefs == {"answer": 0.02, "format": 0.005, "judge": 0.01}
    ctrl.update({"answer": 0.05, "format": 0.0001})                     # judge not measured this step: kept
    assert ctrl.coefs == {"answer": 0.04, "format": 0.0025, "judge": 0.01}
    ctrl.update({"answer": 0.05, "format": 0.0001})                     # clamped to [min_coef, max_coef]
    assert ctrl.coefs == {"answer": 0.05, "format": 0.00125, "judge": 0.01}
    assert kl_coef_metrics(ctrl)["actor/kl_coef/format"] == 0.00125
    # without objectives: the single `kl` coefficient, as before
    assert build_kl_controller(cfg, 0.003).coefs == {"kl": 0.01}
    # fixed / adaptive keep one coefficient whatever the objectives
    assert not hasattr(build_kl_controller(KLCtrlConfig(type="fixed"), 0.003, ["a", "b"]), "coefs")


def test_per_objective_state_survives_a_checkpoint_and_refuses_other_objectives():
    a = TargetRangeKLController({"answer": 0.01, "format": 0.01}, [0.001, 0.01], factor=2.0)
    a.update({"answer": 1.0})
    b = TargetRangeKLController({"answer": 0.01, "format": 0.01}, [0.001, 0.01], factor=2.0)
    b.load_state_dict(a.state_dict())
    assert b.coefs == {"answer": 0.02, "format": 0.01}
    with pytest.raises(ValueError, match="differ"):
        TargetRangeKLController({"answer": 0.01}, [0.001, 0.01]).load_state_dict(a.state_dict())


def test_row_coefficient_is_the_mean_of_its_objectives():
    coefs = torch.tensor([0.02, 0.005])
    applies = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    out = objective_kl_coef(coefs, applies)
    assert out.tolist() == pytest.approx([0.0125, 0.02, 0.005, 0.0125])      # a row with none: the mean of all


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_row_terms_rebuild_the_aggregate_of_any_subset_of_rows(mode):
    g = torch.Generator().manual_seed(0)
    v = torch.rand(5, 6, generator=g)
    m = (torch.rand(5, 6, generator=g) > 0.4).float()
    m[3] = 0                                      # a row without trained tokens counts nowhere
    num, den = row_terms(v, m, mode)
    for rows in ([0, 1, 2, 3, 4], [1, 3], [0, 4]):
        sub = torch.tensor(rows)
        assert float(num[sub].sum() / den[sub].sum()) == pytest.approx(float(aggregate(v[sub], m[sub], mode)))
    # by hand, token-mean over rows {1}: token sum / token count
    if mode == "token-mean":
        assert float(num[1] / den[1]) == pytest.approx(float((v[1] * m[1]).sum() / m[1].sum()))
