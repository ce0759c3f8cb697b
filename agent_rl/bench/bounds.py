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
import dataclasses
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
    with its last trajectory (`_Replay`). `turn_batched_s`: every turn of all trajectories decoded together, then the
    slowest call of that turn's tools. At the engine's fitted cost an estimate of what no scheduler beats: turn-batched's
    measured step over `async_s` is as fast as async can be against it."""
    per_pass, per_row = cost
    if not plans:
        return {"async_s": 0.0, "turn_batched_s": 0.0}
    tb = 0.0
    for k in range(max(p.turns for p in plans)):
        tokens = [p.gen_tokens[k] for p in plans if k < p.turns]
        waits = [p.tool_latency_s[k] for p in plans if k < len(p.tool_latency_s)]
        tb += per_pass * max(tokens) + per_row * sum(tokens) + max(waits, default=0.0)
    return {"async_s": _Replay([[_Traj(p)] for p in plans], cost).run(len(plans)), "turn_batched_s": tb}


class _Traj:
    """A trajectory as the replay finds it at a step's start: its turn, the tokens left in that turn, the tool wait
    still ahead of it (a call cut by the step's end runs again in full), whether it finished, and its latency so far
    (the earlier steps it ran in, or its finishing time once finished)."""
    __slots__ = ("plan", "turn", "left", "wait", "done", "lat")

    def __init__(self, plan: TrajectoryPlan):
        self.plan, self.turn, self.left = plan, 0, float(plan.gen_tokens[0])
        self.wait: Optional[float] = None
        self.done, self.lat = False, 0.0


class _Replay:
    """One rollout step of `groups` (lists of `_Traj`, in launch order) on an engine that costs only its decode passes:
    every unfinished trajectory decodes one token a pass, each pass priced `cost` = (seconds a pass, seconds a row) by
    the trajectories decoding in it (None: 1 a pass), prefill, turn boundaries and CPU free; a trajectory whose turn
    ends waits for its tool call's planned latency and joins the next pass after the call returns. `run(b)` plays it
    until `b` groups have all their trajectories finished (ties in launch order) and returns the step's seconds."""

    def __init__(self, groups: List[List[_Traj]], cost: Optional[Tuple[float, float]]):
        self.groups, self.cost = groups, cost if cost else (1.0, 0.0)
        self.trajs = [t for g in groups for t in g]
        self.group_of = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
        self.end = np.zeros(len(self.trajs))      # seconds from the step's start when each finished
        self.kept: List[int] = []                  # the first b complete groups, in completion order

    def run(self, b: int) -> float:
        per_pass, per_row = self.cost
        trajs = self.trajs
        left = np.array([t.left for t in trajs])
        turn = np.array([t.turn for t in trajs], dtype=int)
        done = np.array([t.done for t in trajs], dtype=bool)
        ready = np.array([t.wait if t.wait is not None else 0.0 for t in trajs])
        waiting = np.array([t.wait is not None for t in trajs], dtype=bool)
        open_ = collections.Counter(int(g) for g in self.group_of[~done])   # unfinished trajectories a group
        self.kept = [g for g in range(len(self.groups)) if not open_[g]][:b]
        t = 0.0
        while len(self.kept) < b:
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
                complete = []
                for i in np.flatnonzero(decoding & (left <= 0)):
                    plan, k = trajs[i].plan, turn[i]
                    if k + 1 < plan.turns:
                        turn[i], left[i] = k + 1, plan.gen_tokens[k + 1]
                        ready[i], waiting[i] = t + plan.tool_latency_s[k], True
                    else:
                        done[i], self.end[i] = True, t
                        g = int(self.group_of[i])
                        open_[g] -= 1
                        if not open_[g]:
                            complete.append(g)
                self.kept += sorted(complete)[:b - len(self.kept)]
            waiting &= ready > t + 1e-12
        for i, tr in enumerate(trajs):   # each trajectory as the next step would find it (a cut group carried over)
            if tr.done:
                continue
            tr.turn, tr.left, tr.done = int(turn[i]), float(left[i]), bool(done[i])
            tr.lat += self.end[i] if done[i] else t
            tr.wait = tr.plan.tool_latency_s[tr.turn - 1] if waiting[i] else None
        return t


def _replay_steps(workload: Workload, rate: float, carry: bool, steps: int, warmup: int,
                  cost: Optional[Tuple[float, float]], waits: bool = True) -> Tuple[List[float], List[float]]:
    """`warmup + steps` steps of a mode that launches ceil(B (1 + rate)) groups a step (the groups the bench's modes
    draw, `bench/async_modes.AsyncSteps`), keeps the first B to complete and, with `carry`, launches the cut ones first
    in the next step with what they did; the measured steps' seconds and their kept trajectories' latencies (a carried
    trajectory's counting its earlier steps). `waits` False: every tool call returns at once."""
    b, n = workload.num_prompts, workload.n

    def plan(g: int, k: int) -> TrajectoryPlan:
        p = workload.plan(g, k)
        return p if waits else dataclasses.replace(p, tool_latency_s=[0.0] * len(p.tool_latency_s))

    launched = max(b, math.ceil(b * (1 + rate) - 1e-9))
    carried: List[List[_Traj]] = []
    nxt, step_s, kept_lat = 0, [], []
    for s in range(warmup + steps):
        fresh = [[_Traj(plan(g, k)) for k in range(n)] for g in range(nxt, nxt + launched - len(carried))]
        nxt += len(fresh)
        replay = _Replay(carried + fresh, cost)
        seconds = replay.run(b)
        if s >= warmup:
            step_s.append(seconds)
            kept_lat += [t.lat for g in replay.kept for t in replay.groups[g]]
        kept = set(replay.kept)
        carried = [g for i, g in enumerate(replay.groups) if i not in kept] if carry else []
    return step_s, kept_lat


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
    the bench runs it). The workload's tool latencies are not replayed (its heavy tail has none). None without
    over-sampling."""
    if math.ceil(workload.num_prompts * (1 + rate) - 1e-9) <= workload.num_prompts or steps < 1:
        return None
    plain, plain_lat = _replay_steps(workload, 0.0, False, steps, 0, cost, waits=False)
    cut, kept_lat = _replay_steps(workload, rate, carry, steps, warmup, cost, waits=False)
    return {"cut": 1.0 - sum(cut) / sum(plain),
            "kept_p50": float(np.percentile(kept_lat, 50)) / float(np.percentile(plain_lat, 50)) - 1.0}


def carry_steps(workload: Workload, rate: float, steps: int, warmup: int, cost: Tuple[float, float]) -> float:
    """The mean measured step of carry-over at `rate` (after `warmup` unmeasured steps) on an engine that costs only its
    decode passes at `cost`, tools their planned latency (`_Replay`): as `ideal_steps.async_s` for plain async, an
    estimate of what no scheduler beats, to hold turn-batched's measured step against."""
    step_s, _ = _replay_steps(workload, rate, True, steps, warmup, cost)
    return sum(step_s) / len(step_s)


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
