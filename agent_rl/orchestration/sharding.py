"""Splitting work between data-parallel workers.

- `split_evenly(items, n)`: contiguous near-equal parts (prompt rows for rollout, in order).
- `shard_batch(batch, n)`: the training batch in `n` shards whose row counts differ by at most one,
  balanced by tokens (`training.microbatch.split_for_ranks`), each trimmed to its own longest row.
  The actor agrees the number of mini/micro-batches across ranks, so uneven shards are fine.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, TypeVar

import torch

T = TypeVar("T")

# [B, L] tensors that follow the token axis (trimmed with it); other tensors are sliced on rows only.
NON_TOKEN_2D = {"turn_rewards"}


def split_evenly(items: Sequence[T], n: int) -> List[List[T]]:
    k, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        size = k + (1 if i < r else 0)
        out.append(list(items[start:start + size]))
        start += size
    return out


def select_rows(batch: Dict[str, Any], rows: Sequence[int], trim: bool = True) -> Dict[str, Any]:
    """Rows of a batch dict (tensors and lists), trimmed to the longest selected row."""
    L = batch["input_ids"].shape[1]
    idx = torch.as_tensor(list(rows), dtype=torch.long)
    width = L
    if trim and "attention_mask" in batch and len(rows):
        width = int(batch["attention_mask"][idx].sum(dim=1).max().item())
    out: Dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == batch["input_ids"].shape[0]:
            t = v[idx]
            if t.dim() >= 2 and v.shape[1] == L and k not in NON_TOKEN_2D:
                t = t[:, :width]
            out[k] = t.contiguous()
        elif isinstance(v, list) and len(v) == batch["input_ids"].shape[0]:
            out[k] = [v[i] for i in rows]
        else:
            out[k] = v
    return out


def shard_batch(batch: Dict[str, Any], n: int) -> List[Dict[str, Any]]:
    from agent_rl.training.microbatch import split_for_ranks

    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [select_rows(batch, part) for part in split_for_ranks(lengths, n)]
