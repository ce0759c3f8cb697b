"""Async modes: the project's own scheduler (`RolloutScheduler`: one task per trajectory, optional
over-sampling and carry-over) with hooks that force the workload's turns and lengths."""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import List

from agent_rl.bench.hooks import WorkloadHooks, bench_row, traj_key
from agent_rl.bench.modes import ModeSpec
from agent_rl.bench.results import StepStat, TrajStat
from agent_rl.bench.variants import rollout_overrides
from agent_rl.config.schema import MultiTurnConfig, SamplingConfig
from agent_rl.rollout.agent_loop import LoopHooks
from agent_rl.rollout.scheduler import RolloutScheduler


def bench_rollout_config(base, spec: ModeSpec, workload, temperature: float, max_tool_response_tokens: int,
                         progress: bool):
    """The rollout config of one async mode: the workload's budgets, the mode's over-sampling / carry-over (and what
    its variant sets, `async+oversample 0.5@load0.25`)."""
    launched = spec.launched_trajectories(workload.num_prompts, workload.n)
    mt = MultiTurnConfig(enable=True, max_assistant_turns=workload.max_turns(), max_tool_calls=workload.max_turns(),
                         max_parallel_tool_calls=1, max_new_tokens_per_turn=workload.max_tokens_per_turn(),
                         max_response_tokens=base.max_model_len, max_tool_response_tokens=max_tool_response_tokens)
    return dataclasses.replace(base, n=workload.n, sampling=SamplingConfig(temperature=temperature), multi_turn=mt,
                               over_sample_rate=spec.over_sample_rate, partial_rollout=spec.partial_rollout,
                               max_concurrent_trajectories=max(base.max_concurrent_trajectories, launched),
                               progress_bar=progress, **rollout_overrides(spec.variant))


def _stat(traj, step: int, kept: bool, t0: float, plan_tokens: int, now_s: float) -> TrajStat:
    group, sample = traj_key(traj)
    start = traj.start_time - t0 if traj.start_time else now_s   # perf_counter, the clock of the steps' bounds
    end = traj.end_time - t0 if traj.end_time else now_s
    return TrajStat(group, sample, step, traj.status, kept, traj.num_generated, plan_tokens, start, end)


class AsyncSteps:
    """One async mode's `RolloutScheduler` across its steps (carry-over keeps the cut groups in it between steps).

    `warm_up()` runs a step outside every figure: a carry-over mode's first step has nothing carried and launches
    1 + rate times the groups from scratch, which a training run pays once, not every step; the measured steps then
    start with the groups a previous step carried, as every later training step does.

    `real_parse`: the project's tool-call parser reads the model's text (the workload still fixes every turn's
    length); by default the workload's hooks decide each turn's calls."""

    def __init__(self, bench, spec: ModeSpec, runtime, real_parse: bool = False):
        self.bench, self.w = bench, bench.workload
        self.hooks = WorkloadHooks(self.w, bench.s.temperature)
        hooks = self.hooks.loop_hooks()
        if real_parse:
            hooks = LoopHooks(parse=None, sampling=hooks.sampling)
        cfg = bench_rollout_config(bench.rollout_cfg, spec, self.w, bench.s.temperature,
                                   bench.s.max_tool_response_tokens, bench.s.progress)
        self.sched = RolloutScheduler(bench.engine, bench.renderer, runtime, cfg, reward_fn=None, hooks=hooks,
                                      id_prefix=f"{uuid.uuid4().hex[:8]}-")   # request ids unique across modes
        self.next_group = 0
        self.steps_run = 0   # the scheduler's step number (policy version): warm-up steps count

    async def step(self, flush: bool = True):
        """One step on the next groups (a carry-over scheduler first resumes what it carried); its `RolloutResult`.
        `flush`: empty the engine's prefix cache first (`run` does that before its clock starts)."""
        need = self.sched.rows_needed(self.w.num_prompts)
        rows = [bench_row(g) for g in range(self.next_group, self.next_group + need)]
        self.next_group += need
        if flush:
            await self.bench.fresh_cache()
        self.steps_run += 1
        return await self.sched.run_step(rows, step=self.steps_run - 1, batch_size=self.w.num_prompts)

    async def warm_up(self) -> float:
        """One unmeasured step; its wall seconds."""
        t = time.perf_counter()
        await self.step()
        return time.perf_counter() - t

    async def run(self, t0: float, bar=None) -> List[StepStat]:
        """`bench.s.steps` measured steps; times are seconds from `t0` (perf_counter)."""
        steps: List[StepStat] = []
        for k in range(self.bench.s.steps):
            await self.bench.fresh_cache()   # outside the step's time, as turn-batched's (until 2026-12-06 inside it)
            start = time.perf_counter() - t0
            result = await self.step(flush=False)
            end = time.perf_counter() - t0
            stats = []
            for trajs, kept in ((result.trajectories, True), (result.dropped, False), (result.carried, False)):
                for t in trajs:
                    stats.append(_stat(t, k, kept, t0, self.hooks.plan(*traj_key(t)).total_gen_tokens, end))
            steps.append(StepStat(k, start, end, stats, dict(result.metrics)))
            if bar is not None:
                bar.update(len(result.trajectories))
        return steps

    async def close(self) -> None:
        await self.sched.close()
