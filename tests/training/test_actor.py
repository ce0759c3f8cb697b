import pytest
import torch

from conftest import make_batch, make_cfgs
from agent_rl.training.actor import Actor
from agent_rl.training.dist import init_distributed
from agent_rl.training.policy import PolicyModel
from agent_rl.training.ref import ReferenceModel

CPU = torch.device("cpu")


def _hf_logprobs(path, batch, temperature=1.0):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        logits = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"]).logits.float() / temperature
    lp = torch.zeros(batch["input_ids"].shape)
    lp[:, 1:] = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    ent = torch.zeros_like(lp)
    p = torch.softmax(logits[:, :-1], -1)
    ent[:, 1:] = -(p * torch.log_softmax(logits[:, :-1], -1)).sum(-1)
    am = batch["attention_mask"].float()
    am[:, 0] = 0
    return lp * am, ent * am


@pytest.mark.parametrize("remove_padding", [True, False])
def test_log_probs_equal_plain_hf_forward(tiny_model_path, remove_padding, monkeypatch):
    # the packed path is normally reserved to varlen (flash) attention; sdpa computes it correctly, densely
    monkeypatch.setattr(PolicyModel, "_varlen_attention", lambda self: True)
    model, actor_cfg, algo, _ = make_cfgs(tiny_model_path, ppo_max_token_len_per_gpu=40)
    model.remove_padding = remove_padding
    actor = Actor(model, actor_cfg, algo, device=CPU)
    assert actor.policy.packing is remove_padding
    batch = make_batch(B=5, L=18)
    lp, ent = actor.compute_log_probs(batch, temperature=0.8)
    ref_lp, ref_ent = _hf_logprobs(tiny_model_path, batch, temperature=0.8)
    assert torch.allclose(lp, ref_lp, atol=1e-5), (lp - ref_lp).abs().max()
    assert torch.allclose(ent, ref_ent, atol=1e-4)
    assert (lp[:, 0] == 0).all() and (lp[batch["attention_mask"] == 0] == 0).all()
    # only trained positions
    lp_m, _ = actor.compute_log_probs(batch, temperature=0.8, positions="loss_mask")
    m = batch["loss_mask"].bool()
    assert torch.allclose(lp_m[m], ref_lp[m], atol=1e-5) and (lp_m[~m] == 0).all()


def test_no_packing_without_varlen_attention(tiny_model_path):
    # sdpa would get a dense [L, L] block mask per packed micro-batch (OOM on an 80 GB H100 at 32k tokens)
    pm = PolicyModel(tiny_model_path, dtype="float32", device=CPU, remove_padding=True)
    assert pm.model.config._attn_implementation == "sdpa" and pm.packing is False


def test_packing_fallback_when_attention_leaks(tiny_model_path, monkeypatch):
    import transformers.masking_utils as mu

    # without packed-sequence detection, packed rows attend across sequence boundaries
    monkeypatch.setattr(mu, "find_packed_sequence_indices", lambda position_ids: None)
    monkeypatch.setattr(PolicyModel, "_varlen_attention", lambda self: True)
    pm = PolicyModel(tiny_model_path, dtype="float32", device=CPU, remove_padding=True)
    assert pm.packing is False


def _grads(actor):
    return {n: p.grad.detach().clone() for n, p in actor.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_dynamic_micro_batches_match_one_big_batch(tiny_model_path, agg):
    model, actor_cfg, algo, _ = make_cfgs(tiny_model_path, lr=0.0, use_kl_loss=True, kl_loss_coef=0.5,
                                          entropy_coeff=0.01, loss_agg_mode=agg, clip_ratio_low=0.05,
                                          clip_ratio_high=0.05)
    algo.tis.enable = True
    actor = Actor(model, actor_cfg, algo, device=CPU)
    batch = make_batch(B=7, L=20, seed=3)
    lp, _ = actor.compute_log_probs(batch)
    g = torch.Generator().manual_seed(1)
    mask = batch["loss_mask"].float()
    batch["old_logprobs"] = (lp + 0.1 * torch.randn(lp.shape, generator=g)) * mask   # ratios off 1: clipping
    batch["ref_logprobs"] = (lp + 0.2 * torch.randn(lp.shape, generator=g)) * mask
    batch["rollout_logprobs"] = (lp + 0.3 * torch.randn(lp.shape, generator=g)) * mask
    actor.cfg.ppo_max_token_len_per_gpu = 10_000
    m1 = actor.update(batch)
    g1 = _grads(actor)
    actor.cfg.ppo_max_token_len_per_gpu = 25  # many micro-batches, every row alone or in pairs
    m2 = actor.update(batch)
    g2 = _grads(actor)
    assert m1["actor/micro_batches"] == 1 and m2["actor/micro_batches"] >= 4
    for k in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/clip_frac", "actor/grad_norm"):
        assert m1[k] == pytest.approx(m2[k], rel=1e-4, abs=1e-6), k
    assert m1["actor/clip_frac"] > 0 and m1["actor/kl_loss"] > 0
    assert set(g1) == set(g2)
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-6, rtol=1e-4), n
    for k in ("mismatch/abs_logp_diff_mean", "mismatch/ratio_p50", "mismatch/ratio_p90", "mismatch/ratio_p99",
              "mismatch/tis_clip_frac"):
        assert k in m1


def test_update_moves_logprobs_by_advantage_sign(tiny_model_path):
    model, actor_cfg, algo, _ = make_cfgs(tiny_model_path, lr=3e-3)
    actor = Actor(model, actor_cfg, algo, device=CPU)
    batch = make_batch(B=4, L=16, seed=5)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    batch["advantages"] = sign[:, None] * batch["loss_mask"]
    before, _ = actor.compute_log_probs(batch, with_entropy=False)
    losses = [actor.update(batch)["actor/pg_loss"] for _ in range(3)]
    after, _ = actor.compute_log_probs(batch, with_entropy=False)
    m = batch["loss_mask"].bool()
    delta = (after - before)
    assert delta[sign > 0][m[sign > 0]].mean() > 0.05
    assert delta[sign < 0][m[sign < 0]].mean() < -0.05
    # on-policy each step: pg_loss = -mean(adv) over tokens, constant; the fixed-batch PPO loss decreases:
    old = before.clone()
    batch2 = dict(batch, old_logprobs=old)
    from agent_rl.algorithms import ppo_clip_loss
    l_before, _ = ppo_clip_loss(before, old, batch["advantages"], batch["loss_mask"])
    l_after, _ = ppo_clip_loss(after, old, batch["advantages"], batch["loss_mask"])
    assert l_after < l_before
    assert losses[0] == pytest.approx(losses[-1], abs=1e-6)
    assert batch2 is not batch


def test_mini_batches_and_epochs_count_optimizer_steps(tiny_model_path):
    model, actor_cfg, algo, _ = make_cfgs(tiny_model_path, ppo_mini_batch_size=2, ppo_epochs=2)
    actor = Actor(model, actor_cfg, algo, rollout_n=1, device=CPU)
    m = actor.update(make_batch(B=5, L=12))
    assert m["actor/optimizer_steps"] == 3 * 2  # ceil(5 / 2) mini-batches x 2 epochs
    assert m["actor/lr"] == pytest.approx(1e-3)


def test_reference_equals_initial_actor_and_stays_frozen(tiny_model_path):
    model, actor_cfg, algo, ref_cfg = make_cfgs(tiny_model_path)
    actor = Actor(model, actor_cfg, algo, device=CPU)
    ref = ReferenceModel(model, ref_cfg, device=CPU)
    batch = make_batch(B=3, L=14)
    a, _ = actor.compute_log_probs(batch, with_entropy=False)
    r = ref.compute_ref_log_probs(batch)
    assert torch.allclose(a, r, atol=1e-6)
    assert all(not p.requires_grad for p in ref.model.parameters())


def test_init_distributed_without_env_is_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == (0, 1)


def test_kl_coef_argument_replaces_the_configured_coefficient(tiny_model_path):
    """`update(batch, kl_coef=c)` (the trainer's algorithm.kl_ctrl) weighs the KL loss by c instead of
    actor.kl_loss_coef: with zero advantages the gradient is c x the KL gradient."""
    model, actor_cfg, algo, _ = make_cfgs(tiny_model_path, lr=0.0, use_kl_loss=True, kl_loss_coef=0.5)
    actor = Actor(model, actor_cfg, algo, device=CPU)
    batch = make_batch(B=4, L=14, seed=7)
    lp, _ = actor.compute_log_probs(batch)
    batch["advantages"] = torch.zeros_like(lp)
    batch["ref_logprobs"] = (lp + 0.3 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(2))) \
        * batch["loss_mask"]
    actor.update(batch)
    g_cfg = _grads(actor)
    actor.update(batch, kl_coef=0.5)
    g_same = _grads(actor)
    actor.update(batch, kl_coef=2.0)
    g_4x = _grads(actor)
    assert g_cfg
    for n in g_cfg:
        assert torch.allclose(g_same[n], g_cfg[n], atol=1e-7), n
        assert torch.allclose(g_4x[n], 4 * g_cfg[n], rtol=1e-4, atol=1e-7), n
    assert any(g.abs().max() > 0 for g in g_cfg.values())


def test_gradient_checkpointing_without_deprecation_warning(tiny_model_path):
    """model.gradient_checkpointing=true uses transformers' current API (no FutureWarning in a user's log) and
    still checkpoints activations."""
    import warnings

    from agent_rl.training.policy import PolicyModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PolicyModel(tiny_model_path, dtype="float32", gradient_checkpointing=True)
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    m = pm.model
    assert m.is_activation_checkpointing if hasattr(type(m), "is_activation_checkpointing") else m.is_gradient_checkpointing
