"""Dynamic micro-batching by token budget, balanced across ranks.

Sequences are packed into micro-batches whose token count stays within a budget
(`ppo_max_token_len_per_gpu`); a partition balances the token counts of the parts (longest-first
greedy). FSDP needs every rank to run the same number of forward/backward passes, so the number of
micro-batches is agreed across ranks (max), and a rank with fewer sequences than micro-batches runs
empty ones (a dummy forward whose loss is multiplied by 0).
"""
from __future__ import annotations

import heapq
import math
from typing import Callable, List, Sequence


def balanced_partition(weights: Sequence[int], k: int, equal_size: bool = False) -> List[List[int]]:
    """Split indices of `weights` into k parts with near-equal weight sums (longest-processing-time
    greedy). equal_size: part sizes differ by at most one item. Parts hold ascending indices;
    some parts are empty when k > len(weights)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    n = len(weights)
    order = sorted(range(n), key=lambda i: (-int(weights[i]), i))
    parts: List[List[int]] = [[] for _ in range(k)]
    if equal_size:
        # at most n % k parts (all k when it divides) reach ceil(n / k) items; the others stop one below
        hi, n_hi = math.ceil(n / k), (n % k) or k
        sums = [0] * k
        for i in order:
            at_hi = sum(1 for p in parts if len(p) == hi)
            room = [p for p in range(k) if len(parts[p]) < hi - 1 or (len(parts[p]) == hi - 1 and at_hi < n_hi)]
            best = min(room, key=lambda p: (sums[p], p))
            parts[best].append(i)
            sums[best] += int(weights[i])
    else:
        heap = [(0, p) for p in range(k)]
        for i in order:
            s, p = heapq.heappop(heap)
            parts[p].append(i)
            heapq.heappush(heap, (s + int(weights[i]), p))
    return [sorted(p) for p in parts]


def split_for_ranks(lengths: Sequence[int], world_size: int) -> List[List[int]]:
    """Indices of the batch rows each rank trains on: near-equal token counts and equal row counts
    (+-1). For the dispatcher that shards a training batch over the data-parallel ranks."""
    return balanced_partition(lengths, world_size, equal_size=True)


def _fits(parts: List[List[int]], lengths: Sequence[int], budget: int) -> bool:
    return all(len(p) <= 1 or sum(int(lengths[i]) for i in p) <= budget for p in parts)


def plan_micro_batches(lengths: Sequence[int], budget: int, sync_max: Callable[[int], int] = lambda x: x,
                       min_count: int = 1) -> List[List[int]]:
    """Partition row indices into micro-batches of at most `budget` tokens each (a longer single row
    gets a micro-batch of its own). `sync_max` agrees on a number across ranks (all-reduce max), so
    every rank returns the same number of micro-batches (some possibly empty)."""
    if budget < 1:
        raise ValueError("token budget must be >= 1")
    n = len(lengths)
    k = max(min_count, math.ceil(sum(int(x) for x in lengths) / budget), 1)
    while True:
        k = sync_max(k)
        parts = balanced_partition(lengths, k)
        bad = 0 if (_fits(parts, lengths, budget) or k >= n) else 1
        if sync_max(bad) == 0:
            # longest micro-batches first: peak memory shows up at once
            return sorted(parts, key=lambda p: -sum(int(lengths[i]) for i in p))
        k += 1


def split_even(n: int, k: int) -> List[List[int]]:
    """0..n-1 into k contiguous chunks whose sizes differ by at most one (some empty when k > n)."""
    base, extra = divmod(n, k)
    out, start = [], 0
    for p in range(k):
        size = base + (1 if p < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out
