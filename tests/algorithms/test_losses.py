import math

import pytest
import torch

from agent_rl.algorithms import (aggregate, entropy_bonus, entropy_from_logits, kl_penalty, logprobs_and_entropy,
                                 mismatch_metrics, ppo_clip_loss, truncated_importance_weights)


def _ppo_case():
    # row 0: three tokens; row 1: one token + a masked token with absurd values + padding
    ratio = torch.tensor([[1.5, 0.5, 5.0], [1.0, 1e6, 1.0]])
    old = torch.full((2, 3), -2.0)
    logp = (old + ratio.log()).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, -1.0], [2.0, 1e4, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    return logp, old, adv, mask


def test_ppo_clip_token_mean_and_metrics_hand_computed():
    logp, old, adv, mask = _ppo_case()
    loss, m = ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, clip_c=3.0)
    # per token: -1.28 (high clip), 0.8 (low clip), 3.0 (dual clip: min(3, 5)), -2.0
    assert loss.item() == pytest.approx((-1.28 + 0.8 + 3.0 - 2.0) / 4, abs=1e-5)
    assert m["clip_frac"].item() == pytest.approx(0.5)
    assert m["dual_clip_frac"].item() == pytest.approx(0.25)
    assert m["ppo_kl"].item() == pytest.approx(-(math.log(1.5) + math.log(0.5) + math.log(5.0)) / 4, abs=1e-5)
    loss.backward()
    assert logp.grad[1, 1] == 0 and logp.grad[1, 2] == 0  # masked tokens contribute nothing
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == 0 and logp.grad[0, 2] == 0  # clipped: no gradient
    assert logp.grad[1, 0].item() == pytest.approx(-2.0 / 4)


def test_ppo_dual_clip_off():
    logp, old, adv, mask = _ppo_case()
    loss, m = ppo_clip_loss(logp, old, adv, mask, clip_c=None)
    assert loss.item() == pytest.approx((-1.28 + 0.8 + 5.0 - 2.0) / 4, abs=1e-5)
    assert m["dual_clip_frac"].item() == 0


@pytest.mark.parametrize("mode,expected", [
    ("token-mean", (-1.28 + 0.8 + 3.0 - 2.0) / 4),
    ("seq-mean-token-sum", ((-1.28 + 0.8 + 3.0) + (-2.0)) / 2),
    ("seq-mean-token-mean", ((-1.28 + 0.8 + 3.0) / 3 + (-2.0)) / 2),
])
def test_ppo_aggregation_modes(mode, expected):
    logp, old, adv, mask = _ppo_case()
    loss, _ = ppo_clip_loss(logp, old, adv, mask, agg_mode=mode)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_aggregate_global_denominators_split_equals_whole():
    torch.manual_seed(0)
    v = torch.randn(6, 5)
    mask = (torch.rand(6, 5) > 0.4).long()
    mask[2] = 0  # a row without tokens is not a sequence
    for mode in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"):
        whole = aggregate(v, mask, mode)
        gt, gs = mask.sum().item(), (mask.sum(-1) > 0).sum().item()
        parts = sum(aggregate(v[s], mask[s], mode, gt, gs) for s in (slice(0, 1), slice(1, 4), slice(4, 6)))
        assert parts.item() == pytest.approx(whole.item(), abs=1e-6)
    with pytest.raises(ValueError):
        aggregate(v, mask, "bogus")


def test_ppo_weights_multiply_per_token_loss():
    logp, old, adv, mask = _ppo_case()
    w = torch.tensor([[2.0, 1.0, 0.5], [0.0, 7.0, 7.0]])
    loss, _ = ppo_clip_loss(logp, old, adv, mask, weights=w)
    assert loss.item() == pytest.approx((-1.28 * 2 + 0.8 + 1.5 + 0.0) / 4, abs=1e-5)


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_penalty(logp, ref, "kl").item() == pytest.approx(1.0)
    assert kl_penalty(ref, logp, "abs").item() == pytest.approx(1.0)
    assert kl_penalty(logp, ref, "mse").item() == pytest.approx(0.5)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5)
    # k3 closed form: exp(ref-logp) - (ref-logp) - 1
    for a, b in [(-1.0, -2.0), (-3.0, -0.5), (-0.1, -0.1)]:
        d = b - a
        assert kl_penalty(torch.tensor([a]), torch.tensor([b]), "low_var_kl").item() == pytest.approx(math.exp(d) - d - 1, abs=1e-6)
    # clamps to [-10, 10]
    assert kl_penalty(torch.tensor([-20.0]), torch.tensor([0.0]), "low_var_kl").item() == 10.0
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "nope")


def test_k3_plus_value_of_k3_gradient_of_k2():
    """verl's k3+: forward = k3, backward = d/dlogp 0.5 (logp - ref)^2 = logp - ref (pulls toward the ref)."""
    logp = torch.tensor([-1.0, -3.0, -0.5], requires_grad=True)
    ref = torch.tensor([-2.0, -0.5, -0.5])
    v = kl_penalty(logp, ref, "k3+")
    assert torch.allclose(v, kl_penalty(logp.detach(), ref, "k3"))
    assert kl_penalty(logp, ref, "low_var_kl+").tolist() == v.tolist()
    v.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([1.0, -2.5, 0.0]))  # logp - ref: sign and size follow the ref
    logp2 = logp.detach().clone().requires_grad_(True)
    kl_penalty(logp2, ref, "low_var_kl").sum().backward()
    d = ref - logp2.detach()
    assert torch.allclose(logp2.grad, 1 - torch.exp(d))  # k3's own gradient differs


def test_low_var_kl_clamps_before_exp():
    """verl clamps ref - logp to [-20, 20] before exp: finite value and gradient for extreme log-probs."""
    assert kl_penalty(torch.tensor([-math.inf]), torch.tensor([-1.0]), "low_var_kl").item() == 10.0
    logp = torch.tensor([-100.0, -1.0, -1.0], requires_grad=True)
    ref = torch.tensor([-1.0, -100.0, -1.0])
    v = kl_penalty(logp, ref, "low_var_kl")
    assert torch.isfinite(v).all() and v[0].item() == 10.0 and v[1].item() == 10.0
    v.sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[2].item() == 0.0


def test_tis_weights_and_cap():
    old = torch.tensor([[0.0, -1.0, 0.0, 0.0]])
    roll = torch.tensor([[-1.0, 0.0, 0.0, -100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = truncated_importance_weights(old.requires_grad_(True), roll, mask, cap=2.0)
    assert torch.allclose(w, torch.tensor([[2.0, math.exp(-1.0), 1.0, 0.0]]))
    assert not w.requires_grad


def test_mismatch_metrics():
    old = torch.tensor([[0.0, -1.0, 0.0, 5.0]])
    roll = torch.tensor([[-1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    m = mismatch_metrics(old, roll, mask, cap=2.0)
    assert m["mismatch/abs_logp_diff_mean"] == pytest.approx(2.0 / 3)
    assert m["mismatch/ratio_p50"] == pytest.approx(1.0)
    assert m["mismatch/ratio_max"] == pytest.approx(math.e, rel=1e-5)
    assert m["mismatch/tis_clip_frac"] == pytest.approx(1.0 / 3)
    assert m["mismatch/ratio_p90"] <= m["mismatch/ratio_p99"] <= m["mismatch/ratio_max"]
    assert mismatch_metrics(old, roll, torch.zeros_like(mask)) == {}


def test_entropy_and_chunked_logprobs():
    assert entropy_from_logits(torch.zeros(3, 4)).allclose(torch.full((3,), math.log(4)))
    torch.manual_seed(0)
    logits = torch.randn(37, 11, requires_grad=True)
    labels = torch.randint(0, 11, (37,))
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, labels[:, None]).squeeze(-1)
    ref_ent = entropy_from_logits(logits / 0.7)
    lp, ent = logprobs_and_entropy(logits, labels, temperature=0.7, chunk_size=8)
    assert torch.allclose(lp, ref, atol=1e-5) and torch.allclose(ent, ref_ent, atol=1e-5)
    g1 = torch.autograd.grad((lp.sum() + ent.sum()), logits)[0]
    g2 = torch.autograd.grad((ref.sum() + ref_ent.sum()), logits)[0]
    assert torch.allclose(g1, g2, atol=1e-5)
    term, value = entropy_bonus(ent.detach()[None], torch.ones(1, 37), coef=0.1)
    assert term.item() == pytest.approx(-0.1 * ref_ent.mean().item(), abs=1e-5)
