import math

import torch

from agent_rl.algorithms import (broadcast_to_tokens, compute_advantages, grpo_multi_turn_advantage,
                                 grpo_outcome_advantage, turn_advantage)


def test_outcome_advantage_unbiased_std_and_group_of_one():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0])
    g = torch.tensor([7, 7, 7, 7, 3])
    adv = grpo_outcome_advantage(r, g, eps=0.0)
    s = math.sqrt(1.0 / 3.0)  # unbiased: sum((±0.5)^2)=1 over n-1=3
    assert torch.allclose(adv, torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0]), atol=1e-6)


def test_outcome_advantage_std_off_and_eps():
    r = torch.tensor([3.0, 1.0, 2.0, 2.0])
    g = torch.tensor([0, 0, 1, 1])
    assert torch.allclose(grpo_outcome_advantage(r, g, norm_by_std=False), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    # identical rewards: std 0, eps keeps it finite and zero
    adv = grpo_outcome_advantage(r, g, norm_by_std=True, eps=1e-6)
    assert torch.isfinite(adv).all() and adv[2] == 0 and adv[3] == 0
    assert torch.allclose(adv[:2], torch.tensor([1.0, -1.0]) / (math.sqrt(2.0) + 1e-6))


def test_broadcast_under_mask():
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert torch.equal(broadcast_to_tokens(adv, mask), torch.tensor([[0.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]))


def test_turn_advantage_nan_and_single_member():
    tr = torch.tensor([[1.0, 0.5], [0.0, float("nan")], [0.5, 0.3]])
    g = torch.tensor([0, 0, 1])
    out = turn_advantage(tr, g, norm_by_std=False)
    assert torch.allclose(out, torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.0]]))


def test_multi_turn_token_advantage_hand_computed():
    rewards = torch.tensor([1.0, 0.0])
    g = torch.tensor([0, 0])
    tr = torch.tensor([[1.0, 0.5], [0.0, float("nan")]])
    turn_index = torch.tensor([[-1, 0, 0, 1], [-1, 0, 0, -1]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    a = 1.0 / math.sqrt(2.0)  # (1 - 0.5) / unbiased std sqrt(0.5)
    out = grpo_multi_turn_advantage(rewards, tr, g, turn_index, mask, coef=0.5, eps=0.0)
    exp = torch.tensor([[0.0, a + 0.5 * a, a + 0.5 * a, a], [0.0, -a - 0.5 * a, -a - 0.5 * a, 0.0]])
    assert torch.allclose(out, exp, atol=1e-6)


def test_compute_advantages_dispatch():
    batch = {"rewards": torch.tensor([1.0, 0.0]), "group_index": torch.tensor([0, 0]),
             "loss_mask": torch.tensor([[0, 1], [1, 1]]), "turn_index": torch.tensor([[-1, 0], [0, 0]]),
             "turn_rewards": torch.tensor([[1.0], [1.0]])}
    a = compute_advantages(batch, "grpo", norm_by_std=False)
    assert torch.allclose(a, torch.tensor([[0.0, 0.5], [-0.5, -0.5]]))
    # equal turn rewards -> no turn bonus
    b = compute_advantages(batch, "grpo_multi_turn", norm_by_std=False)
    assert torch.allclose(a, b)
