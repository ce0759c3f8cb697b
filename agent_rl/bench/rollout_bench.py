"""`agent-rl bench rollout`: the raw engine ceiling, then every rollout mode on the same workload,
one after the other on the same engine (wrapped to record busy time) and event loop."""
from __future__ import annotations

import math
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from agent_rl.bench.async_modes import AsyncSteps
from agent_rl.bench.bench_tool import TOOL_NAME, TOOL_SCHEMA, BenchTool, observation_text
from agent_rl.bench.bounds import carry_steps, ideal_steps, tail_bounds, tool_wait_floor
from agent_rl.bench.engine_bench import bench_engine, bench_engine_turns, engine_sizes_for
from agent_rl.bench.engine_profile import profiled
from agent_rl.bench.hooks import bench_row
from agent_rl.bench.instrument import InstrumentedEngine
from agent_rl.bench.modes import ModeSpec
from agent_rl.bench.output_tap import OutputTap
from agent_rl.bench.results import StepStat, summarize_mode
from agent_rl.bench.sim_engine import SimEngine
from agent_rl.bench.rounds import HEAVY_KEYS, merge_ceilings, merge_modes, round_order
from agent_rl.bench.proc_sampler import ProcSampler
from agent_rl.bench import engine_stacks
from agent_rl.bench.stack_sampler import StackSampler
from agent_rl.bench.turn_batched import turn_batched_step
from agent_rl.bench.variants import applied, check_engine, rollout_overrides
from agent_rl.bench.workload import Workload
from agent_rl.engines.replicas import session_counts
from agent_rl.metrics.gc_watch import GcWatch
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.tool_runtime.runtime import ToolRuntime


def mark(what: str) -> None:
    """A time-stamped line on stderr, in the stream the engine logs to: tools/sglang_log.py splits sglang's
    scheduler log by these marks (docs/benchmarks-log.md, profile)."""
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] agent-rl bench: {what}", file=sys.stderr, flush=True)


def _mean_dicts(per_step: List[Dict[str, Optional[float]]]) -> Optional[Dict[str, Optional[float]]]:
    """Each key's mean over the steps (None where a step has None); None without steps."""
    if not per_step:
        return None
    return {k: (sum(d[k] for d in per_step) / len(per_step) if all(d[k] is not None for d in per_step) else None)
            for k in per_step[0]}


@dataclass
class RolloutBenchSettings:
    workload: Workload
    steps: int = 1
    temperature: float = 1.0
    observation_words: int = 8
    max_tool_response_tokens: int = 256
    ceiling: bool = True
    turns_ceiling: bool = False    # after each raw run, the engine alone on this workload's turns (`bench_engine_turns`)
    progress: bool = True
    sample_stacks: bool = False    # the event-loop thread's stack sampled during each mode (bench/stack_sampler.py)
    sample_cpu: bool = False       # CPU of our process, sglang's processes and the host in each mode (bench/proc_sampler.py)
    engine_stacks_dir: Optional[str] = None   # the engine's processes write their stack samples here
    #                                           (`--sample-engine-stacks`, bench/engine_stacks.py): each mode's share
    carry_warmup_steps: int = 1    # unmeasured steps a carry-over mode runs first (bench/async_modes.AsyncSteps)
    flush_cache: bool = True       # every step and raw-engine run starts on an empty prefix cache, as a training step
    #                                does after its weight sync (`--no-flush-cache` keeps the cache)
    rounds: int = 1                # ceiling + every mode, repeated in alternating order (bench/rounds.py)
    engine_profile: tuple = ()     # mode words run once more, unmeasured, under the engine's profiler
    #                                (bench/engine_profile.py)
    engine_profile_passes: int = 300
    profile_dir: str = "engine-profile"
    decode_cost: Optional[tuple] = None   # (s a decode pass, s a row of a pass, where from): the heavy-tail bound and
    #                                       the ideal step at this engine's cost (the simulated engine's own; the suite's
    #                                       raw runs; `bench/bounds.py`)


class RolloutBench:
    def __init__(self, engine: InstrumentedEngine, tokenizer, settings: RolloutBenchSettings, rollout_cfg):
        self.engine = engine
        self.tokenizer = tokenizer
        self.s = settings
        self.rollout_cfg = rollout_cfg
        self.workload = settings.workload
        self.renderer = ChatRenderer(tokenizer, [TOOL_SCHEMA])
        self._prompt_ids: Dict[int, List[int]] = {}
        self.flush_failures, self.flush_s = 0, 0.0   # of the current mode's steps (`fresh_cache`)

    # ------------------------------------------------------------ shared pieces
    def runtime(self) -> ToolRuntime:
        """A fresh runtime per mode (its metrics belong to that mode)."""
        return ToolRuntime([BenchTool.for_workload(self.workload, self.s.observation_words)], tokenizer=self.tokenizer,
                           max_tool_response_tokens=self.s.max_tool_response_tokens)

    def prompt_ids(self, group: int) -> List[int]:
        if group not in self._prompt_ids:
            self._prompt_ids[group] = self.renderer.prompt_ids(bench_row(group)["prompt"])
        return self._prompt_ids[group]

    def observation_ids(self) -> List[int]:
        """The ids a bench tool call appends after a turn that stopped on length (every bench turn does)."""
        return self.renderer.observation_ids([{"role": "tool", "name": TOOL_NAME,
                                               "content": observation_text(self.s.observation_words)}],
                                             assistant_ended=False)

    def check_context(self) -> int:
        """Longest possible trajectory (prompt + sampled + observations) must fit the engine's context."""
        w = self.workload
        obs = self.observation_ids()
        groups = w.num_prompts * (self.s.steps + 2) * 2
        need = len(self.prompt_ids(groups)) + w.max_turns() * w.max_tokens_per_turn() + (w.max_turns() - 1) * len(obs)
        if need > self.rollout_cfg.max_model_len:
            raise ValueError(f"a trajectory can reach {need} tokens but max_model_len is {self.rollout_cfg.max_model_len}: "
                             "raise --max-model-len or lower --turns / --tokens-per-turn")
        return need

    def plans(self, groups) -> list:
        return [self.workload.plan(g, s) for g in groups for s in range(self.workload.n)]

    def prompts(self, groups) -> Dict[int, List[Dict[str, Any]]]:
        """Each group's chat messages, for a turn-batched step to render inside its clock."""
        return {g: bench_row(g)["prompt"] for g in groups}

    async def fresh_cache(self) -> None:
        """Empty the engine's prefix cache before a step (`flush_cache`; outside every timing): in training the
        weight sync before each step flushes it, so a step never finds the previous step's (or mode's) prefixes, and
        a carried trajectory prefills its history again. Adds its time to `flush_s` and a refusal to
        `flush_failures` (each mode reports its own)."""
        if not self.s.flush_cache:
            return
        t = time.perf_counter()
        self.flush_failures += (await self.engine.flush_cache()) is False
        self.flush_s += time.perf_counter() - t

    def _bar(self, desc: str, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="traj", disable=not self.s.progress, leave=False)

    # ------------------------------------------------------------ ceiling
    async def ceiling(self) -> Dict[str, Any]:
        """Raw engine throughput on this workload's sizes: one request per trajectory of a step, its prompt,
        and the mean planned tokens per trajectory as new tokens (ignore_eos)."""
        w = self.workload
        plans = self.plans(range(w.num_prompts))
        prompts = [self.prompt_ids(p.group) for p in plans]
        await self.fresh_cache()
        bar = self._bar("raw engine", len(prompts))
        stacks0 = engine_stacks.snapshot(self.s.engine_stacks_dir) if self.s.engine_stacks_dir else None
        try:
            res = await bench_engine(self.engine.inner, prompts, engine_sizes_for(plans), temperature=self.s.temperature,
                                     progress=bar, request_prefix=f"ceiling-{uuid.uuid4().hex[:8]}",
                                     flush=self.s.flush_cache)
        finally:
            bar.close()
        if self.s.engine_stacks_dir:   # the scheduler on the same requests in one turn each (outside the timing)
            stacks = engine_stacks.between(stacks0, engine_stacks.snapshot(self.s.engine_stacks_dir))
            if stacks is not None:
                res["engine_stacks"] = dict(stacks, tokens=res.get("output_tokens"))   # the tokens of its window
        if self.s.turns_ceiling and any(p.turns > 1 for p in plans):
            res["turns"] = await self.turns_ceiling(plans, prompts)
            res["turns"]["ratio_to_raw"] = res["turns"]["tokens_per_s"] / res["tokens_per_s"] if res["tokens_per_s"] else None
        return res

    async def turns_ceiling(self, plans, prompts) -> Dict[str, Any]:
        """The engine alone on the same trajectories' turns (`bench_engine_turns`: each turn sent when the trajectory's
        last one ended, the bench tool's observation appended, no tools and no rollout loop): what turn boundaries cost
        the engine itself. A mode's tokens/s over it is what the rollout adds (its loop, its tools, its waits)."""
        await self.fresh_cache()
        sessions0 = session_counts(self.engine.inner)
        obs = self.observation_ids()
        res = await bench_engine_turns(self.engine.inner, prompts, [p.gen_tokens for p in plans], obs,
                                       temperature=self.s.temperature, groups=[p.group for p in plans],
                                       request_prefix=f"turns-{uuid.uuid4().hex[:8]}")
        met = self.sessions_met(sessions0)
        if met:
            res["kv_sessions"] = met
        return res

    def sessions_met(self, before: Optional[Dict[str, int]]) -> Optional[Dict[str, int]]:
        """How the requests since `before` (`session_counts`, None: no sessions) met their KV sessions: the counts
        that moved."""
        if before is None:
            return None
        after = session_counts(self.engine.inner)
        return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} or None

    # ------------------------------------------------------------ modes
    async def run_mode(self, spec: ModeSpec, ceiling_tps: Optional[float], profile: bool = False) -> Dict[str, Any]:
        """One mode's steps; with `profile`, under the engine's profiler (JSON `engine_profile`)."""
        if not profile:
            return await self._run_mode(spec, ceiling_tps)
        folder = os.path.join(self.s.profile_dir, spec.name.replace(" ", "_"))
        out, prof = await profiled(self.engine.inner, folder, self.s.engine_profile_passes,
                                   lambda start: self._run_mode(spec, ceiling_tps, start_profile=start))
        out["engine_profile"] = prof
        return out

    async def _run_mode(self, spec: ModeSpec, ceiling_tps: Optional[float], start_profile=None) -> Dict[str, Any]:
        """One mode's measured steps (after carry-over's warm-up steps; `start_profile`, when given, is awaited
        between the two, so a profile covers measured-like steps only)."""
        rt = self.runtime()
        runner = AsyncSteps(self, spec, rt) if spec.kind != "turn-batched" else None
        try:
            with applied(self.engine.inner, spec.variant):   # `async@notify256`: the setting for this mode only
                warmup = [await runner.warm_up() for _ in range(self.s.carry_warmup_steps if spec.partial_rollout else 0)]
                if start_profile is not None:
                    await start_profile()
                return await self._measure(spec, ceiling_tps, rt, runner, warmup)
        finally:
            if runner is not None:
                await runner.close()
            await rt.close()

    async def _measure(self, spec: ModeSpec, ceiling_tps: Optional[float], rt, runner: Optional[AsyncSteps],
                       warmup: List[float]) -> Dict[str, Any]:
        """The measured steps of one mode on its runtime (and async runner), and their summary."""
        w = self.workload
        rt.metrics.snapshot(reset=True)            # the figures below are the measured steps' alone
        self.flush_failures, self.flush_s = 0, 0.0
        collections = GcWatch().start()   # before the clocks: it counts the tracked objects once
        tap = OutputTap.install(self.engine.inner)
        outputs0 = tap.counts() if tap is not None else None
        routed0 = list(getattr(self.engine.inner, "routed", None) or [])   # engines/replicas.py: requests per replica
        sessions0 = session_counts(self.engine.inner)
        sim0 = SimEngine.passes(self.engine.inner)
        bar = self._bar(spec.name, w.num_prompts * w.n * self.s.steps)
        stacks0 = engine_stacks.snapshot(self.s.engine_stacks_dir) if self.s.engine_stacks_dir else None
        trace = self.engine.reset()
        t0 = trace.t0
        cpu0 = time.thread_time()
        steps: List[StepStat] = []
        sampler = StackSampler().start() if self.s.sample_stacks else None
        procs = ProcSampler().start() if self.s.sample_cpu else None
        mark(f"mode {spec.name} start")
        try:
            if spec.kind == "turn-batched":
                prefix = f"tb-{uuid.uuid4().hex[:8]}"  # request ids unique across modes and scenarios
                for k in range(self.s.steps):
                    groups = range(k * w.num_prompts, (k + 1) * w.num_prompts)
                    await self.fresh_cache()
                    steps.append(await turn_batched_step(self.engine, self.renderer, rt, self.plans(groups),
                                                         self.prompts(groups), self.s.temperature,
                                                         t0, k, progress=bar, request_prefix=prefix))
            else:
                steps = await runner.run(t0, bar)
        finally:
            stacks = sampler.stop() if sampler is not None else None
            process_cpu = procs.stop() if procs is not None else None
            gc_stats = collections.stop()
            bar.close()
            self.engine.close_trace()
            mark(f"mode {spec.name} end")
        cpu = time.thread_time() - cpu0
        engine_stack = engine_stacks.between(stacks0, engine_stacks.snapshot(self.s.engine_stacks_dir)) \
            if self.s.engine_stacks_dir else None
        out = summarize_mode(spec.name, steps, trace, ceiling_tps, spec.settings())
        out["loop_cpu_s"] = cpu   # CPU of the thread running the event loop (with in-process sglang: its tokenizer manager too)
        out["loop_cpu_frac"] = cpu / out["wall_s"] if out.get("wall_s") else None
        out["gc"] = gc_stats              # Python's collections in this process (they stop the event loop too)
        out["gc_s"] = gc_stats["total_s"]
        if tap is not None:   # in-process sglang: the scheduler's output messages its tokenizer manager handled
            out.update(OutputTap.figures(outputs0, tap.counts()))
        if sim0 is not None:   # the simulated engine's passes in this mode (compare with sglang-log's counts)
            sim1 = SimEngine.passes(self.engine.inner)
            out.update({f"sim_{k}": sim1[k] - sim0[k] for k in sim0})
        if routed0:
            out["replica_requests"] = [b - a for a, b in zip(routed0, self.engine.inner.routed)]
        met = self.sessions_met(sessions0)   # engines/kv_sessions.py: how this mode's turns met their sessions
        if met:
            out["kv_sessions"] = met
        out["tool_metrics"] = rt.metrics.snapshot()
        out["cache_flushed"] = self.s.flush_cache
        out["cache_flush_s"] = self.flush_s   # between steps: inside wall_s, outside every step time
        if warmup:
            out["warmup_step_wall_s"] = warmup   # carry-over's first steps, outside every figure
        if self.flush_failures:
            out["cache_flush_failures"] = self.flush_failures   # steps that began on the previous step's cache
        if stacks is not None:
            out["loop_stacks"] = stacks
        if engine_stack is not None:   # sglang's scheduler's main thread, in its own process, and the tokens of its
            #                            window (merged rounds keep round 0's samples but sum the mode's tokens)
            out["engine_stacks"] = dict(engine_stack, tokens=out.get("gen_tokens"))
        if process_cpu is not None:
            out["process_cpu"] = process_cpu   # of round 0 only, where rounds are merged
        return out

    def tail_estimates(self, modes: List[ModeSpec], cost: Optional[tuple] = None) -> Dict[str, Dict[str, float]]:
        """Per over-sampling / carry-over mode without a load gate (the estimate launches every group at once), the
        step-time cut this workload's draws allow and its kept trajectories' latency p50 against plain async's
        (`bounds.tail_bounds`): with generation that does not slow with the batch, or priced at `cost`; only without
        tool waits, where tokens are all a step's time: no trajectory the estimate replays draws a wait (whatever
        distribution gives those zeros)."""
        w, out = self.workload, {}
        extra = self._ungated_extras(modes)
        rate = max((spec.over_sample_rate for spec in extra), default=0.0)
        groups = (self.s.steps + self.s.carry_warmup_steps) * math.ceil(w.num_prompts * (1 + rate))
        if any(t > 0 for g in range(groups) for k in range(w.n) for t in w.plan(g, k).tool_latency_s):
            return {}
        for spec in extra:
            bound = tail_bounds(w, spec.over_sample_rate, spec.partial_rollout, self.s.steps,
                                self.s.carry_warmup_steps if spec.partial_rollout else 0, cost)
            if bound is not None:
                out[spec.name] = bound
        return out

    def _ungated_extras(self, modes: List[ModeSpec]) -> List[ModeSpec]:
        """The over-sampling / carry-over modes without a load gate: the ones the replays of `bounds` can play (they
        launch every group at a step's start)."""
        gate = getattr(self.rollout_cfg, "over_sample_max_load", None)
        return [spec for spec in modes if spec.kind != "turn-batched" and spec.over_sample_rate > 0
                and rollout_overrides(spec.variant).get("over_sample_max_load", gate) is None]

    def ideal_carry_steps(self, modes: List[ModeSpec], cost: tuple) -> Dict[str, float]:
        """Per carry-over mode without a load gate, its mean measured step on an engine that costs only its decode
        passes at `cost`, tools their planned latency (`bounds.carry_steps`, after the same warm-up steps)."""
        return {spec.name: carry_steps(self.workload, spec.over_sample_rate, self.s.steps, self.s.carry_warmup_steps, cost)
                for spec in self._ungated_extras(modes) if spec.partial_rollout}

    async def run(self, modes: List[ModeSpec]) -> Dict[str, Any]:
        for spec in modes:   # a variant the engine cannot run fails before anything is measured
            check_engine(self.engine.inner, spec.variant)
        # the profiled modes first run once more, under the profiler and outside the figures: sglang's torch profiler
        # slowed a profiled step 2-4x on the GPU (2026-12-03), which no ratio may count
        profiles = {}
        for spec in modes:
            if spec.word in self.s.engine_profile:
                prof = await self.run_mode(spec, None, profile=True)
                profiles[spec.name] = dict(prof["engine_profile"], profiled_step_wall_s_mean=prof["step_wall_s_mean"])
        ceilings, per_round = [], []
        for r in range(max(1, self.s.rounds)):
            ceiling = await self.ceiling() if self.s.ceiling else None
            ceilings.append(ceiling)
            tps = ceiling["tokens_per_s"] if ceiling else None  # each round's modes against that round's raw engine
            turns_tps = ((ceiling or {}).get("turns") or {}).get("tokens_per_s")
            results = []
            for spec in round_order(modes, r):
                t = time.perf_counter()
                results.append(await self.run_mode(spec, tps))
                if self.s.progress:
                    m = results[-1]
                    print(f"{spec.name}{f' (round {r + 1})' if self.s.rounds > 1 else ''}: {time.perf_counter() - t:.1f}s, "
                          f"{m['gen_tokens_per_s']:.1f} tok/s, step {m['step_wall_s_mean']:.2f}s", flush=True)
            if turns_tps:
                for m in results:
                    m["ratio_to_turns_ceiling"] = m["gen_tokens_per_s"] / turns_tps
            per_round.append(results)
        results = merge_modes(per_round)
        for m in results:
            if m["mode"] in profiles:
                m["engine_profile"] = profiles[m["mode"]]
        ceiling = merge_ceilings(ceilings)
        steps = [self.plans(range(k * self.workload.num_prompts, (k + 1) * self.workload.num_prompts))
                 for k in range(self.s.steps)]
        floor = _mean_dicts([tool_wait_floor(plans) for plans in steps])
        out = {"ceiling": ceiling, "modes": results, "tool_wait_floor": floor}
        cost = self.s.decode_cost[:2] if self.s.decode_cost else None
        tail = self.tail_estimates(modes)
        if cost and (tail or (floor or {}).get("async_s")):
            out["decode_cost"] = {"pass_ms": 1e3 * cost[0], "row_us": 1e6 * cost[1], "source": self.s.decode_cost[2]}
        if tail:
            out["tail_cut_bound"] = {k: v["cut"] for k, v in tail.items()}
            if cost:
                engine = self.tail_estimates(modes, cost)
                out["tail_cut_bound_engine"] = {k: v["cut"] for k, v in engine.items()}
                out["tail_p50_bound_engine"] = {k: v["kept_p50"] for k, v in engine.items()}
        if cost and (floor or {}).get("async_s"):   # tool waits: the step of an engine that costs only its passes
            out["ideal_step"] = _mean_dicts([ideal_steps(plans, cost) for plans in steps])
            carry = self.ideal_carry_steps(modes, cost)
            if carry:
                out["ideal_step"]["carry_s"] = carry
        if len(per_round) > 1:
            out["round_results"] = [{"ceiling": c, "modes": [{k: v for k, v in m.items() if k not in HEAVY_KEYS} for m in ms]}
                                    for c, ms in zip(ceilings, per_round)]
        return out
