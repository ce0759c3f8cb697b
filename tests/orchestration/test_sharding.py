import torch

from agent_rl.orchestration.sharding import shard_batch, split_evenly
from agent_rl.training.policy import select_rows


def test_split_evenly():
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 2) == [[1], []]


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
    s = select_rows(b, [1, 3], trim=True)
    assert s["input_ids"].shape == (2, 3) and s["advantages"].shape == (2, 3)
    assert s["turn_rewards"].shape == (2, 6)          # not a token-axis tensor
    assert s["rewards"].tolist() == [2.0, 4.0] and s["uids"] == ["b", "d"] and s["meta"] == "x"
    assert torch.equal(s["input_ids"], b["input_ids"][[1, 3], :3])
    full = select_rows(b, [3, 1])                      # the actor's micro-batches: rows only, full width
    assert full["input_ids"].shape == (2, 6) and full["uids"] == ["d", "b"] and full["meta"] == "x"
    assert torch.equal(full["advantages"], b["advantages"][[3, 1]])


def test_shard_batch_covers_every_row_once():
    b = _batch()
    shards = shard_batch(b, 2)
    assert [len(s["uids"]) for s in shards] == [2, 2]
    assert sorted(u for s in shards for u in s["uids"]) == ["a", "b", "c", "d"]
    total = sum(int(s["attention_mask"].sum()) for s in shards)
    assert total == int(b["attention_mask"].sum())


def test_shard_batch_uneven_rows():
    b = _batch()
    shards = shard_batch(b, 3)
    assert sorted(len(s["uids"]) for s in shards) == [1, 1, 2]
    assert sorted(u for s in shards for u in s["uids"]) == ["a", "b", "c", "d"]
