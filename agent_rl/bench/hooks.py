"""Agent-loop hooks that make the model's text irrelevant: the workload decides each turn's length
(per-turn `max_new_tokens` with `ignore_eos`) and whether the turn calls the bench tool.

The parse hook only receives `(text, turn)`; the trajectory it belongs to comes from a context
variable that the sampling hook sets. Each trajectory runs in its own asyncio task, and a task's
context is its own, so concurrent trajectories never see each other's value. A carried trajectory
resumed while its tools were pending is parsed again before any sampling call: it gets back the
result it got the first time (remembered by its `(turn, text)`).
"""
from __future__ import annotations

import contextvars
from typing import Dict, Optional, Tuple

from agent_rl.bench.bench_tool import TOOL_NAME
from agent_rl.bench.workload import TrajectoryPlan, Workload
from agent_rl.engines.base import SamplingParams
from agent_rl.rollout.agent_loop import LoopHooks
from agent_rl.rollout.parser import ParseResult, ParsedCall

_current: contextvars.ContextVar = contextvars.ContextVar("agent_rl_bench_traj", default=None)


def traj_key(traj) -> Tuple[int, int]:
    """(group, sample) of a bench trajectory: the group index travels in the row's extra_info."""
    return int(traj.row["extra_info"]["index"]), int(traj.sample_index)


class WorkloadHooks:
    def __init__(self, workload: Workload, temperature: float = 1.0):
        self.workload = workload
        self.temperature = temperature
        self._plans: Dict[Tuple[int, int], TrajectoryPlan] = {}
        self._parsed: Dict[Tuple[int, str], ParseResult] = {}

    def plan(self, group: int, sample: int) -> TrajectoryPlan:
        key = (group, sample)
        if key not in self._plans:
            self._plans[key] = self.workload.plan(group, sample)
        return self._plans[key]

    def sampling(self, traj, turn: int) -> SamplingParams:
        group, sample = traj_key(traj)
        _current.set((group, sample))
        plan = self.plan(group, sample)
        n = plan.gen_tokens[turn] if turn < plan.turns else 1
        # no stop ids: with ignore_eos every turn samples exactly its planned length
        return SamplingParams(max_new_tokens=n, temperature=self.temperature, stop_token_ids=[], ignore_eos=True)

    def parse(self, text: str, turn: int) -> ParseResult:
        key: Optional[Tuple[int, int]] = _current.get()
        if key is None:
            return self._parsed.get((turn, text), ParseResult([], text))
        plan = self.plan(*key)
        if turn >= plan.turns - 1:
            result = ParseResult([], text)  # the last turn answers
        else:
            args = {"group": key[0], "sample": key[1], "call": turn}
            result = ParseResult([ParsedCall(TOOL_NAME, args, raw="")], text)
        self._parsed[(turn, text)] = result
        return result

    def loop_hooks(self) -> LoopHooks:
        return LoopHooks(parse=self.parse, sampling=self.sampling)
