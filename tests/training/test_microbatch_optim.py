import random

import pytest
import torch

from agent_rl.config.schema import OptimConfig
from agent_rl.training.microbatch import balanced_partition, plan_micro_batches, split_even, split_for_ranks
from agent_rl.training.optim import build_optimizer, build_scheduler, lr_factor, warmup_steps_of


def test_balanced_partition_hand_example():
    assert balanced_partition([10, 9, 8, 1, 1, 1], 3) == [[0], [1, 4], [2, 3, 5]]
    # equal_size: two rows each, sums 11 / 10 / 9
    parts = balanced_partition([10, 9, 8, 1, 1, 1], 3, equal_size=True)
    assert sorted(len(p) for p in parts) == [2, 2, 2]
    assert sorted(sum([10, 9, 8, 1, 1, 1][i] for i in p) for p in parts) == [9, 10, 11]


def test_partition_properties_random():
    rng = random.Random(0)
    for _ in range(300):
        n, k = rng.randint(0, 40), rng.randint(1, 9)
        w = [rng.randint(1, 500) for _ in range(n)]
        for eq in (False, True):
            parts = balanced_partition(w, k, eq)
            assert len(parts) == k and sorted(sum(parts, [])) == list(range(n))
            if eq:
                sizes = [len(p) for p in parts]
                assert max(sizes) - min(sizes) <= 1
            elif n >= k:  # greedy LPT bound: no part exceeds the mean by more than the largest item
                sums = [sum(w[i] for i in p) for p in parts]
                assert max(sums) <= sum(w) / k + max(w)


def test_plan_micro_batches_budget_and_oversized_row():
    lengths = [50, 30, 30, 20, 200, 10]
    plan = plan_micro_batches(lengths, budget=60)
    assert sorted(sum(plan, [])) == list(range(6))
    for p in plan:
        assert len(p) == 1 or sum(lengths[i] for i in p) <= 60
    assert [4] in plan  # longer than the budget: alone
    assert len(plan) >= 6  # 340 tokens / 60 -> at least 6


def test_plan_micro_batches_same_count_across_ranks():
    # two "ranks" as threads; sync_max is an all-reduce MAX in lockstep (a barrier around shared slots)
    import threading

    lengths = {0: [100, 100, 100, 100], 1: [10, 10]}
    slots, out = [0, 0], {}
    barrier = threading.Barrier(2)

    def make_sync(rank):
        def sync_max(x):
            slots[rank] = x
            barrier.wait()
            m = max(slots)
            barrier.wait()
            return m
        return sync_max

    threads = [threading.Thread(target=lambda r=r: out.__setitem__(r, plan_micro_batches(lengths[r], 100, make_sync(r))))
               for r in (0, 1)]
    [t.start() for t in threads]
    [t.join(10) for t in threads]
    assert len(out[0]) == len(out[1]) == 4
    assert sum(1 for p in out[1] if not p) == 2 and sorted(sum(out[1], [])) == [0, 1]


def test_split_helpers():
    assert split_even(5, 3) == [[0, 1], [2, 3], [4]]
    assert split_even(1, 3) == [[0], [], []]
    parts = split_for_ranks([100, 90, 10, 5, 50, 45], 2)
    sums = [sum([100, 90, 10, 5, 50, 45][i] for i in p) for p in parts]
    assert [len(p) for p in parts] == [3, 3] and abs(sums[0] - sums[1]) <= 10


def test_lr_factor_hand_values():
    assert lr_factor(0, 4, 100) == pytest.approx(0.25)
    assert lr_factor(3, 4, 100) == pytest.approx(1.0)
    assert lr_factor(50, 4, 100) == 1.0
    assert lr_factor(4, 4, 104, "cosine") == pytest.approx(1.0)
    assert lr_factor(54, 4, 104, "cosine") == pytest.approx(0.5)
    assert lr_factor(104, 4, 104, "cosine", min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_steps_of(0, 0.1, 50) == 5 and warmup_steps_of(3, 0.1, 50) == 3
    with pytest.raises(ValueError):
        lr_factor(10, 0, 10, "linearish")


def test_scheduler_drives_adamw_lr():
    p = torch.nn.Parameter(torch.zeros(3))
    cfg = OptimConfig(lr=0.1, warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.0)
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, cfg, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.1)
    assert lrs[4] == pytest.approx(0.05) and lrs[5] < lrs[4]
