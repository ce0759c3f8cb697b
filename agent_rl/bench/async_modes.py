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
from agent_rl.config.schema import MultiTurnConfig, SamplingConfig
from agent_rl.rollout.scheduler import RolloutScheduler


def bench_rollout_config(base, spec: ModeSpec, workload, temperature: float, max_tool_response_tokens: int,
                         progress: bool):
    """The rollout config of one async mode: the workload's budgets, the mode's over-sampling / carry-over."""
    launched = spec.launched_trajectories(workload.num_prompts, workload.n)
    mt = MultiTurnConfig(enable=True, max_assistant_turns=workload.max_turns(), max_tool_calls=workload.max_turns(),
                         max_parallel_tool_calls=1, max_new_tokens_per_turn=workload.max_tokens_per_turn(),
                         max_response_tokens=base.max_model_len, max_tool_response_tokens=max_tool_response_tokens)
    return dataclasses.replace(base, n=workload.n, sampling=SamplingConfig(temperature=temperature), multi_turn=mt,
                               over_sample_rate=spec.over_sample_rate, partial_rollout=spec.partial_rollout,
                               max_concurrent_trajectories=max(base.max_concurrent_trajectories, launched),
                               progress_bar=progress)


def _stat(traj, step: int, kept: bool, epoch0: float, plan_tokens: int, now_s: float) -> TrajStat:
    group, sample = traj_key(traj)
    start = traj.start_time - epoch0 if traj.start_time else now_s
    end = traj.end_time - epoch0 if traj.end_time else now_s
    return TrajStat(group, sample, step, traj.status, kept, traj.num_generated, plan_tokens, start, end)


async def run_async_steps(bench, spec: ModeSpec, runtime, t0: float, bar=None) -> List[StepStat]:
    """Run `bench.s.steps` scheduler steps of `spec`; times are seconds from `t0` (perf_counter)."""
    w = bench.workload
    epoch0 = time.time() - (time.perf_counter() - t0)
    hooks = WorkloadHooks(w, bench.s.temperature)
    cfg = bench_rollout_config(bench.rollout_cfg, spec, w, bench.s.temperature, bench.s.max_tool_response_tokens,
                               bench.s.progress)
    sched = RolloutScheduler(bench.engine, bench.renderer, runtime, cfg, reward_fn=None, hooks=hooks.loop_hooks(),
                             id_prefix=f"{uuid.uuid4().hex[:8]}-")   # request ids unique across modes and scenarios
    next_group = 0
    steps: List[StepStat] = []
    for k in range(bench.s.steps):
        need = sched.rows_needed(w.num_prompts)
        rows = [bench_row(g) for g in range(next_group, next_group + need)]
        next_group += need
        bench.flush_failures += not await bench.fresh_cache()
        start = time.perf_counter() - t0
        result = await sched.run_step(rows, step=k, batch_size=w.num_prompts)
        end = time.perf_counter() - t0
        stats = []
        for trajs, kept in ((result.trajectories, True), (result.dropped, False), (result.carried, False)):
            for t in trajs:
                plan = hooks.plan(*traj_key(t))
                stats.append(_stat(t, k, kept, epoch0, plan.total_gen_tokens, end))
        steps.append(StepStat(k, start, end, stats, dict(result.metrics)))
        if bar is not None:
            bar.update(len(result.trajectories))
    await sched.close()
    return steps
