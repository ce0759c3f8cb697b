"""Subprocess for test_fsdp_dist: one rank of a gloo FSDP2 job (or the single-process reference when
WORLD_SIZE is unset). Trains two steps on its shard of a fixed batch and writes what it ended with."""
import asyncio
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import make_batch, make_cfgs  # noqa: E402

from agent_rl.training import checkpoint as C  # noqa: E402
from agent_rl.training.actor import Actor  # noqa: E402
from agent_rl.training.dist import get_rank, get_world_size, init_distributed  # noqa: E402
from agent_rl.training.microbatch import split_for_ranks  # noqa: E402
from agent_rl.training.policy import PolicyModel, select_rows  # noqa: E402

# exercise the packed (padding-free) path on CPU: sdpa isolates packed rows correctly, only less efficiently
PolicyModel._varlen_attention = lambda self: True
from agent_rl.training.ref import ReferenceModel  # noqa: E402
from agent_rl.training.weight_sync import sync_weights  # noqa: E402


class Recorder:
    def __init__(self):
        self.sent = {}

    async def update_weights(self, named):
        self.sent.update({n: t.clone() for n, t in named})

    async def flush_cache(self):
        pass


def main(model_path, out_dir):
    torch.manual_seed(0)
    init_distributed("gloo")
    rank, world = get_rank(), get_world_size()
    model, actor_cfg, algo, ref_cfg = make_cfgs(model_path, lr=1e-3, use_kl_loss=True, kl_loss_coef=0.1,
                                                ppo_max_token_len_per_gpu=30, grad_clip=1.0)
    algo.tis.enable = True
    actor = Actor(model, actor_cfg, algo, device=torch.device("cpu"))
    assert actor.policy.fsdp == (world > 1)
    ref = ReferenceModel(model, ref_cfg, device=torch.device("cpu"))
    full = make_batch(B=8, L=20, seed=11)
    # a fixed rollout/training mismatch, defined on the full batch
    full["rollout_noise"] = 0.05 * torch.sin(torch.arange(full["input_ids"].numel()).view(full["input_ids"].shape).float())
    rows = split_for_ranks(full["attention_mask"].sum(-1).tolist(), world)[rank]
    batch = select_rows(full, rows)
    noise = batch.pop("rollout_noise")
    metrics = []
    for step in range(2):
        batch["ref_logprobs"] = ref.compute_ref_log_probs(batch)
        lp, _ = actor.compute_log_probs(batch, with_entropy=False)
        batch["rollout_logprobs"] = lp + noise * batch["loss_mask"]
        metrics.append(actor.update(batch))
    rec = Recorder()
    asyncio.run(sync_weights(actor, rec if rank == 0 or world == 1 else None, bucket_mb=0.05))
    sd = C.full_model_state_dict(actor.model)  # collective; every rank gets the full parameters
    ck = C.save_checkpoint(os.path.join(out_dir, "ckpt"), 2, actor, None, {"step": 2}, max_to_keep=1)
    fresh = Actor(model, actor_cfg, algo, device=torch.device("cpu"))
    C.load_checkpoint(ck, fresh)
    resumed = C.full_model_state_dict(fresh.model)
    same_after_load = all(torch.equal(resumed[k], sd[k]) for k in sd)
    torch.save({"params": sd, "metrics": metrics, "sent": rec.sent, "same_after_load": same_after_load,
                "packing": actor.policy.packing},
               os.path.join(out_dir, f"result_ws{world}_rank{rank}.pt"))


if __name__ == "__main__":
    from ranks import rank_main

    rank_main(main, sys.argv[1], sys.argv[2])
