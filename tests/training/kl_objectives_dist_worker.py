"""Subprocess for test_kl_objectives_dist: one of two gloo ranks. The ranks hold different shards (row counts, token
counts, objective memberships), run one actor update per loss_agg_mode with per-objective KL, and write the reported
metrics with what the test needs to compute `actor/kl/<name>` by hand (log-probs, reference, mask, memberships)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import make_batch, make_cfgs  # noqa: E402

from agent_rl.algorithms.kl import objective_kl_coef  # noqa: E402
from agent_rl.training.actor import Actor  # noqa: E402
from agent_rl.training.dist import get_rank, get_world_size, init_distributed  # noqa: E402

NAMES = ["answer", "format", "judge", "unused"]
MODES = ["token-mean", "seq-mean-token-mean"]
# rank 0: 3 rows of 6..20 tokens; rank 1: 5 rows of 14..26 tokens ("judge" applies only to rank 1's rows, "unused"
# to no row at all)
SHARDS = [
    dict(B=3, L=20, seed=21, min_len=6, applies=[[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]]),
    dict(B=5, L=26, seed=22, min_len=14, applies=[[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0],
                                                  [0, 1, 0, 0]]),
]


def main(model_path, out_dir):
    torch.manual_seed(0)
    init_distributed("gloo")
    rank, world = get_rank(), get_world_size()
    assert world == 2
    # lr 0: the policy does not move, so every mini-batch and epoch measures the same per-token KL; 2 epochs and
    # one row per rank per mini-batch (ppo_mini_batch_size 2 over 2 ranks) exercise the sums over the whole update
    model, actor_cfg, algo, _ = make_cfgs(model_path, lr=0.0, use_kl_loss=True, kl_loss_coef=0.1,
                                          ppo_mini_batch_size=2, ppo_epochs=2, ppo_max_token_len_per_gpu=30)
    actor = Actor(model, actor_cfg, algo, device=torch.device("cpu"))
    assert actor.policy.fsdp
    spec = dict(SHARDS[rank])
    applies = torch.tensor(spec.pop("applies"), dtype=torch.float32)
    batch = make_batch(**spec)
    lp, _ = actor.compute_log_probs(batch, with_entropy=False)
    g = torch.Generator().manual_seed(100 + rank)
    ref = (lp + 0.4 * torch.randn(lp.shape, generator=g) + 0.1 * (rank + 1)) * batch["loss_mask"]
    batch["ref_logprobs"] = ref
    batch["kl_objectives"] = applies
    batch["kl_coef"] = objective_kl_coef(torch.tensor([0.1, 0.5, 2.0, 1.0]), applies).float()
    metrics = {}
    for mode in MODES:
        actor.cfg.loss_agg_mode = mode
        metrics[mode] = actor.update(batch, kl_objectives=NAMES)
    torch.save({"metrics": metrics, "logprobs": lp, "ref": ref, "loss_mask": batch["loss_mask"], "applies": applies},
               os.path.join(out_dir, f"kl_rank{rank}.pt"))


if __name__ == "__main__":
    from ranks import rank_main

    rank_main(main, sys.argv[1], sys.argv[2])
