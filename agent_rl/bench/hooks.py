"""Agent-loop hooks that make the model's text irrelevant: the workload decides each turn's length
(per-turn `max_new_tokens` with `ignore_eos`) and whether the turn calls the bench tool.

Both hooks get the trajectory, so a carried trajectory resumed while its tools were pending is parsed
again with the same plan, and one cut inside a turn generates only the rest of that turn's planned length.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from agent_rl.bench.bench_tool import TOOL_NAME
from agent_rl.bench.workload import TrajectoryPlan, Workload
from agent_rl.engines.base import SamplingParams
from agent_rl.rollout.agent_loop import LoopHooks
from agent_rl.rollout.parser import ParseResult, ParsedCall


def bench_row(group: int) -> Dict[str, Any]:
    """A dataset row (project schema) for one benchmark prompt group; `traj_key` reads the group back."""
    return {
        "prompt": [{"role": "user", "content": f"Benchmark question {group}: look it up with the tool, then answer."}],
        "data_source": "bench",
        "ability": "bench",
        "reward_model": {"style": "rule", "ground_truth": ""},
        "extra_info": {"split": "bench", "index": group, "sample_id": f"bench-{group}"},
    }


def traj_key(traj) -> Tuple[int, int]:
    """(group, sample) of a bench trajectory: the group index travels in the row's extra_info."""
    return int(traj.row["extra_info"]["index"]), int(traj.sample_index)


class WorkloadHooks:
    def __init__(self, workload: Workload, temperature: float = 1.0):
        self.workload = workload
        self.temperature = temperature
        self._plans: Dict[Tuple[int, int], TrajectoryPlan] = {}

    def plan(self, group: int, sample: int) -> TrajectoryPlan:
        key = (group, sample)
        if key not in self._plans:
            self._plans[key] = self.workload.plan(group, sample)
        return self._plans[key]

    def sampling(self, traj, turn: int) -> SamplingParams:
        group, sample = traj_key(traj)
        plan = self.plan(group, sample)
        n = plan.gen_tokens[turn] if turn < plan.turns else 1
        last = traj.turns[-1] if traj.turns else None
        if last is not None and last.index == turn and last.finish_reason == "abort":
            n = max(1, n - len(last.output_ids))  # a carried partial turn ends at its planned length, as a model would
        # no stop ids: with ignore_eos every turn samples exactly its planned length
        return SamplingParams(max_new_tokens=n, temperature=self.temperature, stop_token_ids=[], ignore_eos=True)

    def parse(self, traj, text: str, turn: int) -> ParseResult:
        group, sample = traj_key(traj)
        if turn >= self.plan(group, sample).turns - 1:
            return ParseResult([], text)  # the last turn answers
        args = {"group": group, "sample": sample, "call": turn}
        return ParseResult([ParsedCall(TOOL_NAME, args, raw="")], text)

    def loop_hooks(self) -> LoopHooks:
        return LoopHooks(parse=self.parse, sampling=self.sampling)
