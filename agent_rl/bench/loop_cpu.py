"""CPU cost of the rollout loop: our own Python per trajectory turn, with an engine that costs nothing.

The engine is the project's sglang wrapper (`engines/sglang_engine.SGLangEngine`) around a stand-in for
`sglang.Engine` (`InstantSGLang`) that answers every request on the next event-loop iteration with canned
output ids and `(logprob, token_id, None)` log-prob tuples, the shapes sglang 0.5.17 returns. The tool
returns at once (the benchmark tool at latency 0). So the thread's CPU time is what our code spends:
scheduler, agent loop, rendering, tool runtime, the sglang wrapper, the benchmark's instrumentation (which
the GPU benchmark figures include), asyncio itself. sglang's own tokenizer manager is not in it.

    python -m agent_rl.bench.loop_cpu --prompts 64 --n 4            # the instant-tools 64 x 4 workload
    python -m agent_rl.bench.loop_cpu --prompts 128 --n 8 --profile /tmp/loop.prof
    agent-rl bench loop-cpu --prompts 64 --n 4 --modes async,turn-batched --steps 5

Reports, per mode, the thread CPU ms per turn (one turn = one generate request) and per step (median over the
measured steps, after `--warmup` unmeasured ones; the minimum too: on a shared VM noise only adds). `--real-parse`:
the canned text ends in a Hermes `<tool_call>` and the project's parser reads it (the benchmark's hooks otherwise
decide the calls), so tool-call parsing is in the figure too. `--gc on|off|freeze` and `--heap-objects N` isolate the
garbage collector's share. `--profile PATH`: cProfile of the measured steps (pstats file; the top functions are
printed). Results and the changes they led to: docs/benchmarks-log.md, "CPU cost of the rollout loop (instant engine)".
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Dict, List, Optional

# agent_rl's modules (numpy, torch, transformers) are imported where they are used: `agent-rl bench` builds this
# parser for every bench command.

FILLER = ("Let me look this up with the tool before I answer the question, step by step, and check the result "
          "against what the question asks. ")
CALL = '<tool_call>\n{"name": "bench_wait", "arguments": {"group": 0, "sample": 0, "call": 0}}\n</tool_call>'


class _TokenizerManager:
    def __init__(self):
        self.rid_to_state: Dict[str, Any] = {}

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        pass


class InstantSGLang:
    """Stands in for `sglang.Engine`: `async_generate` answers after one event-loop iteration with `max_new_tokens`
    canned ids (the end of `token_ids` when shorter: a text that ends in a tool call keeps its call), log-probs as
    sglang's `(logprob, token_id, None)` tuples, finish reason `length`."""

    def __init__(self, token_ids: List[int]):
        self.token_ids = list(token_ids)
        self.tokenizer_manager = _TokenizerManager()
        self.requests = 0
        self._canned: Dict[int, tuple] = {}
        self.events: Optional[List[tuple]] = None   # a list: ("submit" | "answer", rid) in the order they happen

    def _output(self, n: int) -> tuple:
        if n not in self._canned:
            base = self.token_ids
            ids = (base * (n // len(base) + 1))[-n:] if n > len(base) else base[-n:]
            lps = [(-0.25 - (i % 7) * 0.125, t, None) for i, t in enumerate(ids)]
            self._canned[n] = (ids, lps)
        return self._canned[n]

    async def async_generate(self, input_ids, sampling_params, return_logprob=False, rid=None, **extra):
        if self.events is not None:
            self.events.append(("submit", rid))
        await asyncio.sleep(0)   # sglang answers on a later iteration of the loop
        if self.events is not None:
            self.events.append(("answer", rid))
        self.requests += 1
        n = int(sampling_params["max_new_tokens"])
        ids, lps = self._output(n)
        return {"output_ids": list(ids), "meta_info": {
            "id": rid, "finish_reason": {"type": "length", "length": n}, "prompt_tokens": len(input_ids),
            "completion_tokens": n, "cached_tokens": 0, "output_token_logprobs": list(lps)}}

    def shutdown(self) -> None:
        pass


def canned_ids(tokenizer, tool_call: bool, length: int = 512) -> List[int]:
    """Ids of plain text (ending in a Hermes tool call when `tool_call`), at least `length` long."""
    ids: List[int] = []
    filler = tokenizer.encode(FILLER, add_special_tokens=False)
    tail = tokenizer.encode(CALL, add_special_tokens=False) if tool_call else []
    while len(ids) + len(tail) < length:
        ids += filler
    return ids + tail


class _Run:
    """One mode: its step function and what it needs across steps (async modes: `bench.async_modes.AsyncSteps`)."""

    def __init__(self, bench, spec, real_parse: bool):
        from agent_rl.bench.async_modes import AsyncSteps

        self.bench = bench
        self.runtime = bench.runtime()
        self.next_group = 0
        self.steps = AsyncSteps(bench, spec, self.runtime, real_parse) if spec.kind != "turn-batched" else None

    async def step(self, k: int) -> None:
        import uuid

        from agent_rl.bench.turn_batched import turn_batched_step

        if self.steps is not None:
            await self.steps.step()
            return
        w = self.bench.workload
        groups = range(self.next_group, self.next_group + w.num_prompts)
        self.next_group += w.num_prompts
        await turn_batched_step(self.bench.engine, self.bench.renderer, self.runtime, self.bench.plans(groups),
                                self.bench.prompts(groups), self.bench.s.temperature,
                                time.perf_counter(), k, request_prefix=f"tb-{uuid.uuid4().hex[:8]}")

    async def close(self) -> None:
        if self.steps is not None:
            await self.steps.close()
        await self.runtime.close()


async def measure(bench, fake: InstantSGLang, spec, steps: int, warmup: int, real_parse: bool,
                  profiler=None) -> Dict[str, Any]:
    import statistics

    run = _Run(bench, spec, real_parse)
    cpu, wall, turns = [], [], []
    try:
        for k in range(warmup + steps):
            measured = k >= warmup
            r0, c0, w0 = fake.requests, time.thread_time(), time.perf_counter()
            if measured and profiler is not None:
                profiler.enable()
            await run.step(k)
            if measured and profiler is not None:
                profiler.disable()
            if measured:
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - w0)
                turns.append(fake.requests - r0)
    finally:
        await run.close()
    per_turn = [c / t * 1e3 for c, t in zip(cpu, turns)]
    return {"mode": spec.name, "steps": steps, "turns_per_step": turns, "cpu_s_per_step": cpu, "wall_s_per_step": wall,
            "cpu_ms_per_turn": per_turn, "cpu_ms_per_turn_median": statistics.median(per_turn),
            "cpu_ms_per_turn_min": min(per_turn),
            "cpu_s_per_step_median": statistics.median(cpu), "wall_s_per_step_median": statistics.median(wall)}


def build(tokenizer_path: str, prompts: int, n: int, turns: int, tokens: int, observation_words: int, real_parse: bool,
          instrument: bool = True, seed: int = 0):
    from transformers import AutoTokenizer

    from agent_rl.bench.instrument import InstrumentedEngine
    from agent_rl.bench.rollout_bench import RolloutBench, RolloutBenchSettings
    from agent_rl.bench.workload import Dist, Workload
    from agent_rl.config.schema import RolloutConfig
    from agent_rl.engines.sglang_engine import SGLangEngine

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    fake = InstantSGLang(canned_ids(tok, tool_call=real_parse, length=max(512, tokens)))
    engine = SGLangEngine.wrap(fake)
    workload = Workload(num_prompts=prompts, n=n, turns=Dist.parse(str(turns)), tokens_per_turn=Dist.parse(str(tokens)),
                        tool_latency=Dist.parse("0"), tool_failure_rate=0.0, seed=seed)
    cfg = RolloutConfig(max_model_len=8192, max_concurrent_trajectories=prompts * n, progress_bar=False)
    # no cache to flush: the instant engine keeps none, and the step's CPU is our loop's alone
    settings = RolloutBenchSettings(workload=workload, observation_words=observation_words, ceiling=False, progress=False,
                                    flush_cache=False)
    bench = RolloutBench(InstrumentedEngine(engine) if instrument else engine, tok, settings, cfg)
    bench.check_context()
    return bench, fake


def add_arguments(p) -> None:
    p.add_argument("--prompts", type=int, default=64, help="prompt groups per step (B)")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--turns", type=int, default=3, help="assistant turns per trajectory (a tool call after each but the last)")
    p.add_argument("--tokens-per-turn", type=int, default=128, help="new tokens per turn")
    p.add_argument("--observation-words", type=int, default=8, help="words in each tool observation")
    p.add_argument("--modes", default="async,turn-batched", help="comma list of turn-batched, async, oversample, carryover")
    p.add_argument("--over-sample", default="0.5", help="rates of oversample / carryover")
    p.add_argument("--steps", type=int, default=5, help="measured steps per mode")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps first (template probes, first renders)")
    p.add_argument("--real-parse", action="store_true",
                   help="canned text ends in a Hermes <tool_call> read by the project's parser (not the bench hooks); "
                        "needs --tokens-per-turn >= 40 to hold the whole call")
    p.add_argument("--no-instrument", action="store_true", help="without the benchmark's engine wrapper (InstrumentedEngine)")
    p.add_argument("--tokenizer", default=None, help="tokenizer / model folder (default: the cached SmolLM2 tokenizer)")
    p.add_argument("--profile", default=None, metavar="PATH", help="cProfile of the measured steps of every mode, to PATH")
    p.add_argument("--top", type=int, default=30, help="with --profile: functions printed")
    p.add_argument("--gc", default="on", choices=["on", "off", "freeze"],
                   help="Python's garbage collector during the run: on (as is), off, or freeze (gc.freeze() once everything "
                        "is built, so collections skip the objects that exist then)")
    p.add_argument("--heap-objects", type=int, default=0,
                   help="long-lived objects allocated first, standing in for a bigger process (an in-process sglang, "
                        "the actor): what a full garbage collection has to walk")
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON")


def run(args) -> int:
    import cProfile
    import gc
    import os
    import pstats

    from agent_rl.bench.modes import parse_modes

    if args.tokenizer is None:
        from agent_rl.model.prepare import tokenizer_dir

        args.tokenizer = tokenizer_dir()
    modes = parse_modes(args.modes, args.over_sample)
    bench, fake = build(args.tokenizer, args.prompts, args.n, args.turns, args.tokens_per_turn, args.observation_words,
                        args.real_parse, instrument=not args.no_instrument)
    ballast = [[i] for i in range(args.heap_objects)]   # noqa: F841 - lists: tracked by the collector, kept to the end
    profiler = cProfile.Profile() if args.profile else None
    if args.gc == "off":
        gc.disable()
    elif args.gc == "freeze":
        gc.collect()
        gc.freeze()
    loop = asyncio.new_event_loop()
    try:
        results = [loop.run_until_complete(measure(bench, fake, spec, args.steps, args.warmup, args.real_parse, profiler))
                   for spec in modes]
    finally:
        loop.close()
        gc.enable()
        gc.unfreeze()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"loop CPU, instant engine: {args.prompts} x {args.n}, {args.turns} turns x {args.tokens_per_turn} tokens, "
          f"real parse {args.real_parse}, gc {args.gc}, heap +{args.heap_objects} objects, {args.steps} steps after {args.warmup} warm-up, load {load}")
    print(f"{'mode':<28} {'turns/step':>10} {'CPU ms/turn':>12} {'(min)':>6} {'CPU s/step':>11} {'wall s/step':>12}  "
          "per step ms/turn")
    for r in results:
        print(f"{r['mode']:<28} {r['turns_per_step'][0]:>10} {r['cpu_ms_per_turn_median']:>12.3f} {r['cpu_ms_per_turn_min']:>6.3f} "
              f"{r['cpu_s_per_step_median']:>11.3f} {r['wall_s_per_step_median']:>12.3f}  "
              + " ".join(f"{x:.3f}" for x in r["cpu_ms_per_turn"]))
    if profiler is not None:
        profiler.dump_stats(args.profile)
        st = pstats.Stats(args.profile)
        st.sort_stats("tottime").print_stats(args.top)
        st.sort_stats("cumulative").print_stats(args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "load_avg_1m": load, "results": results}, f, indent=1)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent_rl.bench.loop_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
