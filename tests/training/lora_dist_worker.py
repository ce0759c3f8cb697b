"""Subprocess for test_lora's FSDP2 test: one rank of a gloo job with a LoRA actor (or the single-process reference
when WORLD_SIZE is unset). Two updates with the KL loss against the adapter-off reference, a weight sync, a
checkpoint and a load into a fresh actor; writes what it ended with."""
import asyncio
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import make_batch, make_cfgs  # noqa: E402

from agent_rl.config.schema import LoraConfig  # noqa: E402
from agent_rl.training import checkpoint as C  # noqa: E402
from agent_rl.training.actor import Actor  # noqa: E402
from agent_rl.training.dist import get_rank, get_world_size, init_distributed  # noqa: E402
from agent_rl.training.lora import adapter_state_dict  # noqa: E402
from agent_rl.training.microbatch import split_for_ranks  # noqa: E402
from agent_rl.training.policy import select_rows  # noqa: E402
from agent_rl.training.ref import AdapterOffReference  # noqa: E402
from agent_rl.training.weight_sync import iter_full_params, sync_weights  # noqa: E402


class Recorder:
    def __init__(self):
        self.sent = {}

    async def update_weights(self, named):
        self.sent.update({n: t.clone() for n, t in named})

    async def flush_cache(self):
        pass


def _full(t):
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def main(model_path, out_dir):
    init_distributed("gloo")
    rank, world = get_rank(), get_world_size()
    model, actor_cfg, algo, ref_cfg = make_cfgs(model_path, lr=1e-3, use_kl_loss=True, kl_loss_coef=0.1,
                                                ppo_max_token_len_per_gpu=30, grad_clip=1.0)
    actor_cfg.lora = LoraConfig(rank=4, alpha=16.0)
    torch.manual_seed(0)  # the same adapter init on every rank and in the single process
    actor = Actor(model, actor_cfg, algo, device=torch.device("cpu"))
    base0 = {n: _full(p) for n, p in actor.model.named_parameters() if not p.requires_grad}
    ref = AdapterOffReference(actor.policy, ref_cfg)
    full = make_batch(B=8, L=20, seed=11)
    rows = split_for_ranks(full["attention_mask"].sum(-1).tolist(), world)[rank]
    batch = select_rows(full, rows)
    metrics = []
    for _ in range(2):
        batch["ref_logprobs"] = ref.compute_ref_log_probs(batch)
        metrics.append(actor.update(batch))
    base_unchanged = all(torch.equal(_full(p), base0[n]) for n, p in actor.model.named_parameters()
                         if not p.requires_grad)
    rec = Recorder()
    asyncio.run(sync_weights(actor, rec if rank == 0 or world == 1 else None, bucket_mb=0.05))
    adapter = adapter_state_dict(actor.model)  # collective
    ck = C.save_checkpoint(os.path.join(out_dir, "ckpt"), 2, actor, None, {"step": 2}, max_to_keep=1)
    torch.manual_seed(99)
    fresh = Actor(model, actor_cfg, algo, device=torch.device("cpu"))
    C.load_checkpoint(ck, fresh)
    again = adapter_state_dict(fresh.model)
    merged = dict(iter_full_params(actor))
    merged_fresh = dict(iter_full_params(fresh))
    same_after_load = all(torch.equal(again[k], adapter[k]) for k in adapter) and \
        all(torch.equal(merged_fresh[k], merged[k]) for k in merged)
    torch.save({"adapter": adapter, "metrics": metrics, "sent": rec.sent, "same_after_load": same_after_load,
                "base_unchanged": base_unchanged, "fsdp": actor.policy.fsdp},
               os.path.join(out_dir, f"result_rank{rank}.pt"))


if __name__ == "__main__":
    from ranks import rank_main

    rank_main(main, sys.argv[1], sys.argv[2])
