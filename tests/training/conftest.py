"""Helpers for the training tests: a synthetic training batch and small configs."""
import pytest
import torch

from agent_rl.config.schema import ActorConfig, AlgorithmConfig, ModelConfig, OptimConfig, RefConfig


def make_batch(B=6, L=20, vocab=400, seed=0, min_len=6):
    """Right-padded batch in the docs/architecture.md layout, prompt of 3 tokens, response after it."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, L + 1, (B,), generator=g)
    ids = torch.randint(1, vocab, (B, L), generator=g)
    am = (torch.arange(L)[None] < lens[:, None]).long()
    ids = ids * am
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    loss_mask = am.clone()
    loss_mask[:, :3] = 0
    loss_mask[:, 7:9] = 0  # a "tool observation" inside the response
    loss_mask = loss_mask * am
    turn_index = torch.where(loss_mask.bool(), (torch.arange(L)[None] >= 9).long().expand(B, L), torch.full((B, L), -1))
    rewards = torch.rand(B, generator=g)
    return {"input_ids": ids, "attention_mask": am, "position_ids": pos, "loss_mask": loss_mask,
            "turn_index": turn_index, "rewards": rewards, "group_index": torch.arange(B) // 2,
            "advantages": (torch.rand(B, generator=g) * 2 - 1)[:, None] * loss_mask}


def make_cfgs(path, **actor_kw):
    model = ModelConfig(path=path, dtype="float32", gradient_checkpointing=False, remove_padding=True)
    optim = OptimConfig(lr=actor_kw.pop("lr", 1e-3), weight_decay=0.0, grad_clip=actor_kw.pop("grad_clip", 1e9))
    actor = ActorConfig(optim=optim, ppo_mini_batch_size=actor_kw.pop("ppo_mini_batch_size", 64),
                        use_kl_loss=actor_kw.pop("use_kl_loss", False), **actor_kw)
    algo = AlgorithmConfig()
    algo.tis.enable = False
    return model, actor, algo, RefConfig(offload=True)


@pytest.fixture
def batch():
    return make_batch()
