import pytest
import torch

from agent_rl.orchestration.sharding import balanced_partition, select_rows, shard_batch, split_evenly


def test_split_evenly():
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 2) == [[1], []]


def test_balanced_partition_equal_sizes_and_balanced():
    lengths = [100, 90, 80, 10, 10, 5, 3, 2]
    parts = balanced_partition(lengths, 2)
    assert sorted(i for p in parts for i in p) == list(range(8))
    assert [len(p) for p in parts] == [4, 4]
    sums = [sum(lengths[i] for i in p) for p in parts]
    assert abs(sums[0] - sums[1]) <= 50  # the optimum for these lengths
    with pytest.raises(ValueError):
        balanced_partition([1, 2, 3], 2)


def _batch():
    lens = [6, 2, 4, 3]
    B, L = 4, 6
    am = torch.zeros(B, L, dtype=torch.long)
    for i, n in enumerate(lens):
        am[i, :n] = 1
    ids = torch.arange(B * L).view(B, L) * am
    return {"input_ids": ids, "attention_mask": am, "loss_mask": am.clone(), "advantages": am.float() * 2,
            "rewards": torch.tensor([1.0, 2.0, 3.0, 4.0]), "turn_rewards": torch.full((B, L), 0.5),
            "uids": ["a", "b", "c", "d"], "meta": "x"}


def test_select_rows_trims_to_longest_row():
    b = _batch()
    s = select_rows(b, [1, 3])
    assert s["input_ids"].shape == (2, 3) and s["advantages"].shape == (2, 3)
    assert s["turn_rewards"].shape == (2, 6)          # not a token-axis tensor
    assert s["rewards"].tolist() == [2.0, 4.0] and s["uids"] == ["b", "d"] and s["meta"] == "x"
    assert torch.equal(s["input_ids"], b["input_ids"][[1, 3], :3])


def test_shard_batch_covers_every_row_once():
    b = _batch()
    shards = shard_batch(b, 2)
    assert [len(s["uids"]) for s in shards] == [2, 2]
    assert sorted(u for s in shards for u in s["uids"]) == ["a", "b", "c", "d"]
    total = sum(int(s["attention_mask"].sum()) for s in shards)
    assert total == int(b["attention_mask"].sum())
