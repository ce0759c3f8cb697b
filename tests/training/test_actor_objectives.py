"""Per-objective KL in the actor: each row's coefficient reaches the loss, each objective's KL is measured on its rows."""
import pytest
import torch

from conftest import make_batch, make_cfgs
from agent_rl.algorithms.kl import k3
from agent_rl.training.actor import Actor

CPU = torch.device("cpu")


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_per_sample_coefficient_reaches_the_loss_and_kl_is_measured_per_objective(tiny_model_path, monkeypatch, agg):
    """Zero advantages: the loss is the KL term alone, aggregate(coef_row * k3) (token-mean: sum of coef_row * k3 over
    trained tokens / their count). actor/kl/<name> is the KL aggregated over the rows the objective applies to;
    actor/kl_loss (all rows, unweighted) is unchanged."""
    model, actor_cfg, algo, _ = make_cfgs(tiny_model_path, lr=0.0, use_kl_loss=True, kl_loss_coef=0.5,
                                          loss_agg_mode=agg)
    actor = Actor(model, actor_cfg, algo, device=CPU)
    batch = make_batch(B=4, L=14, seed=3)
    lp, _ = actor.compute_log_probs(batch)
    ref = (lp + 0.3 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(5))) * batch["loss_mask"]
    batch["advantages"] = torch.zeros_like(lp)
    batch["ref_logprobs"] = ref
    coefs = torch.tensor([0.1, 2.0, 0.0, 1.0])
    batch["kl_coef"] = coefs
    batch["kl_objectives"] = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])

    losses = []
    real = Actor._micro_loss

    def spy(self, *a, **k):
        out = real(self, *a, **k)
        losses.append(float(out.detach()))
        return out

    monkeypatch.setattr(Actor, "_micro_loss", spy)
    m = actor.update(batch, kl_objectives=["answer", "format"])

    mask = batch["loss_mask"].float()
    kl = k3(lp, ref) * mask

    def agg_rows(values, rows):
        rows = torch.tensor(rows)
        if agg == "token-mean":
            return float(values[rows].sum() / mask[rows].sum())
        return float((values[rows].sum(-1) / mask[rows].sum(-1)).mean())

    assert sum(losses) == pytest.approx(agg_rows(coefs[:, None] * kl, [0, 1, 2, 3]), rel=1e-4)
    assert m["actor/kl_loss"] == pytest.approx(agg_rows(kl, [0, 1, 2, 3]), rel=1e-4)
    assert m["actor/kl/answer"] == pytest.approx(agg_rows(kl, [0, 1, 3]), rel=1e-4)
    assert m["actor/kl/format"] == pytest.approx(agg_rows(kl, [1, 2]), rel=1e-4)
    assert m["actor/kl/answer"] != pytest.approx(m["actor/kl/format"], rel=1e-3)


def test_without_objectives_nothing_changes(tiny_model_path):
    model, actor_cfg, algo, _ = make_cfgs(tiny_model_path, lr=0.0, use_kl_loss=True, kl_loss_coef=0.5)
    actor = Actor(model, actor_cfg, algo, device=CPU)
    batch = make_batch(B=3, L=12, seed=4)
    lp, _ = actor.compute_log_probs(batch)
    batch["ref_logprobs"] = lp * 0.9
    m = actor.update(batch)
    assert not [k for k in m if k.startswith("actor/kl/")]
