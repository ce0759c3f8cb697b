"""Splitting work between data-parallel workers.

- `split_evenly(items, n)`: contiguous near-equal parts (prompt rows for rollout, in order).
- `shard_batch(batch, n)`: the training batch in `n` shards whose row counts differ by at most one,
  balanced by tokens (`training.microbatch.split_for_ranks`), each trimmed to its own longest row
  (`training.policy.select_rows`).
  The actor agrees the number of mini/micro-batches across ranks, so uneven shards are fine.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, TypeVar

from agent_rl.training.microbatch import split_even, split_for_ranks
from agent_rl.training.policy import select_rows

T = TypeVar("T")


def split_evenly(items: Sequence[T], n: int) -> List[List[T]]:
    """`items` in `n` contiguous parts whose sizes differ by at most one (`training.microbatch.split_even`)."""
    return [[items[i] for i in part] for part in split_even(len(items), n)]


def shard_batch(batch: Dict[str, Any], n: int) -> List[Dict[str, Any]]:
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [select_rows(batch, part, trim=True) for part in split_for_ranks(lengths, n)]
