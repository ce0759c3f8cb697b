"""The synchronous baseline: every trajectory waits for the whole batch at every turn.

    turn k:  generate for all active trajectories (concurrently, the engine batches them) -> wait for all
             run the tool call of every trajectory that continues (concurrently)          -> wait for all

Same engine, same tool runtime, same chat rendering and the same planned lengths / latencies as
the async modes; only the scheduling differs. Each turn's output is decoded to text, as the agent loop decodes it to
parse the tool call (the benchmark's plan decides the call in both; until 2026-12-04 this baseline skipped the decode,
~25 us a turn on a CPU, which flattered it), and each group's prompt is rendered inside the step, as the rollout
scheduler renders it at the start of its step (until 2026-12-06 the benchmark rendered them before this step's
clock started).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List

from agent_rl.bench.bench_tool import TOOL_NAME
from agent_rl.bench.results import StepStat, TrajStat
from agent_rl.bench.workload import TrajectoryPlan
from agent_rl.engines.base import Engine, SamplingParams
from agent_rl.rollout.frozen_heap import frozen_heap


@dataclass
class _State:
    plan: TrajectoryPlan
    ids: List[int]
    start_s: float
    session: Any = None     # its tool session
    key: str = ""           # its requests' KV session (SamplingParams.session)
    gen_tokens: int = 0
    end_s: float = 0.0
    last_finish: str = ""
    last_text: str = ""     # the turn's output as text: what a turn-batched rollout parses its tool call from
    tool_statuses: List[str] = field(default_factory=list)


async def turn_batched_step(engine: Engine, renderer, runtime, plans: List[TrajectoryPlan],
                            prompts: Dict[int, List[Dict[str, Any]]], temperature: float, t0: float, step: int,
                            progress=None, request_prefix: str = "tb") -> StepStat:
    """One rollout step over `plans` (`prompts`: each group's chat messages, rendered in the step); times are seconds
    from `t0`. The garbage collector treats it as the scheduler treats a step (`rollout/frozen_heap.py`)."""
    with frozen_heap():
        return await _step(engine, renderer, runtime, plans, prompts, temperature, t0, step, progress, request_prefix)


async def _end_sessions(engine, states) -> None:
    end = getattr(engine, "end_session", None)
    if end is not None:
        for st in states:
            await end(st.key)


async def _step(engine, renderer, runtime, plans, prompts, temperature, t0, step, progress, request_prefix) -> StepStat:
    start = time.perf_counter() - t0
    prompt_ids = {g: renderer.prompt_ids(messages) for g, messages in prompts.items()}
    states = [_State(p, list(prompt_ids[p.group]), start) for p in plans]
    for st in states:   # its requests' KV session where the engine keeps them (rollout.kv_sessions), as the agent loop's
        st.key = f"{request_prefix}-{step}-{st.plan.group}-{st.plan.sample}"
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_end_sessions, engine, states)
        for st in states:
            st.session = await stack.enter_async_context(runtime.session(f"{request_prefix}-{st.plan.group}/{st.plan.sample}", {}))
        turn = 0
        while True:
            active = [st for st in states if turn < st.plan.turns]
            if not active:
                break

            async def gen(st: _State):
                sp = SamplingParams(max_new_tokens=st.plan.gen_tokens[turn], temperature=temperature,
                                    stop_token_ids=[], ignore_eos=True, affinity=f"{step}-{st.plan.group}",
                                    session=st.key)
                out = await engine.generate(st.ids, sp, f"{request_prefix}-{step}-{st.plan.group}-{st.plan.sample}-{turn}")
                st.ids += out.output_ids
                st.last_text = renderer.decode(out.output_ids)
                st.gen_tokens += len(out.output_ids)
                st.last_finish = out.finish_reason
                if turn == st.plan.turns - 1:
                    st.end_s = time.perf_counter() - t0
                    if progress is not None:
                        progress.update(1)

            await asyncio.gather(*(gen(st) for st in active))

            async def tool(st: _State):
                rec = await st.session.call(TOOL_NAME, {"group": st.plan.group, "sample": st.plan.sample, "call": turn})
                st.tool_statuses.append(rec.status)
                msg = {"role": "tool", "name": TOOL_NAME, "content": rec.observation}
                st.ids += renderer.observation_ids([msg], assistant_ended=st.last_finish == "stop")

            await asyncio.gather(*(tool(st) for st in active if turn < st.plan.turns - 1))
            turn += 1
    end = time.perf_counter() - t0
    trajs = [TrajStat(st.plan.group, st.plan.sample, step, "finished", True, st.gen_tokens, st.plan.total_gen_tokens,
                      st.start_s, st.end_s) for st in states]
    return StepStat(step, start, end, trajs)
