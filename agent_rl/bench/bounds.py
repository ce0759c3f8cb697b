"""What a rollout step could take at best on the benchmark's workload: the bounds its summaries print beside the
measured figures (`bench rollout`, `bench suite`).

- `tool_wait_floor`: the tool waiting no scheduler hides, generation free.
- `ideal_steps`: a step of async and of turn-batched on an engine that costs only its decode passes, each priced at
  the engine's decode cost (a pass + a row, `decode_cost`), tools their planned latency; no prefill, no CPU.
- `tail_bounds`: the step-time cut over-sampling / carry-over could reach on the heavy tail's draws, and the kept
  trajectories' latency p50 against plain async's there.
- `decode_cost`: that cost, fitted on raw-engine runs at two or more concurrencies.
"""
from __future__ import annotations

import collections
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent_rl.bench.workload import TrajectoryPlan, Workload


def tool_wait_floor(plans: Sequence[TrajectoryPlan]) -> Dict[str, Optional[float]]:
    """The tool waiting no scheduler can hide, for one step's trajectories, as if generation cost nothing:
    turn-batched waits for the slowest call of each tool phase, async (every trajectory kept, no carry-over) for
    the trajectory whose calls add up to the most. Their ratio is async's speed-up over turn-batched with free
    generation. It is not an upper bound once generation costs time: turn-batched generates each turn of every
    trajectory at the full batch, async's slowest trajectory mostly at smaller ones, so measured ratios pass it (1.81x
    against 1.59x at 135M 128x8 on the H200, 2026-12-04)."""
    phases = max((len(p.tool_latency_s) for p in plans), default=0)
    tb = sum(max(p.tool_latency_s[k] for p in plans if k < len(p.tool_latency_s)) for k in range(phases))
    asy = max((sum(p.tool_latency_s) for p in plans), default=0.0)
    return {"turn_batched_s": tb, "async_s": asy, "async_speedup_bound": tb / asy if asy > 0 else None}


def ideal_steps(plans: Sequence[TrajectoryPlan], cost: Tuple[float, float]) -> Dict[str, float]:
    """One step of `plans` (every trajectory launched at its start, all kept) on an engine that costs nothing but its
    decode passes, each `cost` = (seconds a pass, seconds a row) priced by the trajectories decoding in it; prefill, turn
    boundaries and the rollout's CPU free, each tool call its planned latency. `async_s`: each trajectory decodes one
    token a pass until its turn ends, waits for its call, and joins the next pass after the call returns; the step ends
    with its last trajectory. `turn_batched_s`: every turn of all trajectories decoded together, then the slowest call
    of that turn's tools. At the engine's fitted cost an estimate of what no scheduler beats: turn-batched's measured
    step over `async_s` is as fast as async can be against it."""
    per_pass, per_row = cost
    if not plans:
        return {"async_s": 0.0, "turn_batched_s": 0.0}
    tb = 0.0
    for k in range(max(p.turns for p in plans)):
        tokens = [p.gen_tokens[k] for p in plans if k < p.turns]
        waits = [p.tool_latency_s[k] for p in plans if k < len(p.tool_latency_s)]
        tb += per_pass * max(tokens) + per_row * sum(tokens) + max(waits, default=0.0)
    turn = np.zeros(len(plans), dtype=int)
    left = np.array([p.gen_tokens[0] for p in plans], dtype=float)   # tokens left in the turn being decoded
    ready = np.zeros(len(plans))                                       # when a trajectory's tool call returns
    waiting = np.zeros(len(plans), dtype=bool)
    done = np.zeros(len(plans), dtype=bool)
    t = 0.0
    while not done.all():
        decoding = ~done & ~waiting
        if not decoding.any():   # every running trajectory waits for its tool: the engine idles until the first returns
            t = max(t, float(ready[waiting].min()))
        else:
            passes = float(left[decoding].min())   # until the first turn ends, or the first call returns
            seconds = per_pass + per_row * int(decoding.sum())
            if waiting.any() and seconds > 0:
                passes = min(passes, max(1.0, math.ceil((float(ready[waiting].min()) - t) / seconds - 1e-9)))
            t += passes * seconds
            left[decoding] -= passes
            for i in np.flatnonzero(decoding & (left <= 0)):
                plan, k = plans[i], turn[i]
                if k + 1 < plan.turns:
                    turn[i], left[i] = k + 1, plan.gen_tokens[k + 1]
                    ready[i], waiting[i] = t + plan.tool_latency_s[k], True
                else:
                    done[i] = True
        waiting &= ready > t + 1e-12
    return {"async_s": t, "turn_batched_s": tb}


def tail_bounds(workload: Workload, rate: float, carry: bool, steps: int, warmup: int = 0,
                cost: Optional[Tuple[float, float]] = None) -> Optional[Dict[str, float]]:
    """What over-sampling (`carry` False) or carry-over (True) at `rate` could reach against plain async on this
    workload's draws, every trajectory decoding one token per decode pass from its launch, tools and prefill free:
    `cut`, the step-time cut, and `kept_p50`, the kept trajectories' latency p50 over plain async's, minus 1 (a
    carried trajectory's latency counts its earlier steps, as the bench's does). `cost` = (seconds a pass, seconds a
    row of a pass) prices each pass by the rows still running (`decode_cost`); without it generation does not slow
    with the batch (a pass costs 1, whatever its rows). Plain async's step lasts until its longest trajectory ends;
    an over-sampled step launches ceil(B (1 + rate)) groups, all of them decoding, and ends when B of them are
    complete; carry-over also resumes the cut groups with what they generated (after `warmup` unmeasured steps, as
    the bench runs it). The steps draw the groups the bench's modes draw (`bench/async_modes.AsyncSteps`). None
    without over-sampling."""
    b, n = workload.num_prompts, workload.n
    launched = math.ceil(b * (1 + rate) - 1e-9)
    if launched <= b or steps < 1:
        return None
    per_pass, per_row = cost if cost else (1.0, 0.0)

    def fresh(g: int) -> List[List[float]]:   # [tokens left (0: finished), seconds so far] of each sample of group g
        return [[float(workload.plan(g, k).total_gen_tokens), 0.0] for k in range(n)]

    def clock(groups: List[List[List[float]]]):
        """Seconds from the step's start until the pass that decodes a trajectory's `x`-th token of the step ends."""
        left = collections.Counter(t[0] for g in groups for t in g if t[0] > 0)
        ends, rows, prev, elapsed = {0.0: 0.0}, sum(left.values()), 0.0, 0.0
        for x in sorted(left):
            elapsed += (x - prev) * (per_pass + per_row * rows)
            ends[x], rows, prev = elapsed, rows - left[x], x
        return ends.__getitem__

    plain, plain_lat = [], []
    for s in range(steps):
        groups = [fresh(g) for g in range(s * b, (s + 1) * b)]
        at = clock(groups)
        plain_lat += [at(t[0]) for g in groups for t in g]
        plain.append(max(plain_lat[-b * n:]))
    carried: List[List[List[float]]] = []
    nxt, cut_steps, kept_lat = 0, [], []
    for s in range(warmup + steps):
        groups = carried + [fresh(g) for g in range(nxt, nxt + launched - len(carried))]
        nxt += launched - len(carried)
        at = clock(groups)
        left = [max(t[0] for t in g) for g in groups]
        order = sorted(range(len(groups)), key=lambda i: left[i])
        end = left[order[b - 1]]
        step_s = at(end)
        if s >= warmup:
            cut_steps.append(step_s)
            kept_lat += [t[1] + at(t[0]) for i in order[:b] for t in groups[i]]
        kept = set(order[:b])
        # a cut group's samples as the next step finds them: finished ones (now or before) with their latency
        carried = [[[0.0, t[1] + at(t[0])] if t[0] <= end else [t[0] - end, t[1] + step_s] for t in g]
                   for i, g in enumerate(groups) if i not in kept] if carry else []
    return {"cut": 1.0 - sum(cut_steps) / sum(plain),
            "kept_p50": float(np.percentile(kept_lat, 50)) / float(np.percentile(plain_lat, 50)) - 1.0}


def decode_cost(ceilings: Sequence[Optional[Dict]]) -> Optional[Tuple[float, float]]:
    """(seconds a decode pass, seconds a row of a pass) fitted (least squares) on raw-engine runs of fixed lengths at
    two or more concurrencies: each run's wall time over its new tokens a request is one pass at that many rows
    (its one prefill pass counted in). None with fewer than two concurrencies or a fit that is not two costs >= 0."""
    pts = [(float(c["requests"]), c["wall_s"] / c["max_new_tokens_mean"]) for c in ceilings
           if c and c.get("max_new_tokens_mean") and c.get("wall_s")]
    if len({x for x, _ in pts}) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    per_row = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    per_pass = my - per_row * mx
    return (per_pass, per_row) if per_pass >= 0 and per_row >= 0 else None
