"""Raw generation throughput: every request submitted at once, `ignore_eos` so each one samples
exactly its `max_new_tokens`. This is the ceiling a rollout mode is compared to."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from agent_rl.engines.base import Engine, SamplingParams
from agent_rl.metrics.gc_watch import GcWatch
from agent_rl.rollout.frozen_heap import frozen_heap

log = logging.getLogger(__name__)


def synthetic_prompts(num: int, length: int, vocab_size: int, seed: int = 0, avoid: Sequence[int] = ()) -> List[List[int]]:
    """`num` prompts of `length` random token ids (seeded), skipping special ids in `avoid`."""
    rng = np.random.default_rng(seed)
    avoid = set(int(a) for a in avoid)
    prompts = []
    for _ in range(num):
        ids = [int(t) for t in rng.integers(0, vocab_size, length)]
        prompts.append([t if t not in avoid else (t + 1) % vocab_size for t in ids])
    return prompts


async def bench_engine(engine: Engine, prompts: List[List[int]], max_new_tokens: Union[int, List[int]],
                       temperature: float = 1.0, ignore_eos: bool = True, warmup: bool = True,
                       progress=None, request_prefix: Optional[str] = None, flush: bool = True) -> Dict[str, float]:
    """Submit all prompts concurrently and time them. `progress` (optional) gets `.update(1)` per request. `flush`
    False: the engine's prefix cache is never flushed (the warm-up then uses the prompts reversed)."""
    request_prefix = request_prefix or f"bench-engine-{uuid.uuid4().hex[:8]}"  # ids stay unique across runs
    lengths = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(lengths) != len(prompts):
        raise ValueError("one max_new_tokens per prompt")
    flushed = None
    if warmup and prompts:
        # first-call costs (kernel compilation for this batch's shapes, allocator growth, lazy set-up of a wide
        # submission) stay out of the measurement: the same requests with 2 new tokens each, then the prefix cache they
        # filled flushed. Prompts that share a prefix (a group's samples) run other kernels than prompts that do not:
        # a warm-up on the prompts reversed (no prefix-cache hit, and none shared) left triton's JIT to the measured run
        # on a fresh sglang engine (2026-12-06, H100: 54.8k tokens/s, 58% of the scheduler's window in `load_jit`,
        # against 74-76k warm). An engine without `flush_cache` (or `flush` False) still gets them reversed.
        flusher = getattr(engine, "flush_cache", None) if flush else None
        wp = SamplingParams(max_new_tokens=2, temperature=temperature, ignore_eos=True)
        await asyncio.gather(*(engine.generate(p if flusher else p[::-1], wp, f"{request_prefix}-warmup-{i}")
                               for i, p in enumerate(prompts)))
        if flusher is not None:
            flushed = await flusher()
            if flushed is False:
                log.warning("raw engine run: the prefix cache was not flushed after the warm-up; the measured requests "
                            "may find their prompts cached (JSON warmup_cache_flushed false)")

    async def one(i: int):
        sp = SamplingParams(max_new_tokens=lengths[i], temperature=temperature, ignore_eos=ignore_eos)
        t = time.perf_counter()
        out = await engine.generate(prompts[i], sp, f"{request_prefix}-{i}")
        if progress is not None:
            progress.update(1)
        return len(out.output_ids), time.perf_counter() - t

    collections = GcWatch().start(count_objects=False)
    t0 = time.perf_counter()
    with frozen_heap():   # as a rollout step runs (rollout/frozen_heap.py): raw run and rollout modes compare alike
        results = await asyncio.gather(*(one(i) for i in range(len(prompts))))
    wall = time.perf_counter() - t0
    collected = collections.stop()
    tokens = sum(n for n, _ in results)
    lat = np.array([s for _, s in results]) if results else np.zeros(1)
    return {
        "requests": len(prompts),
        "prompt_tokens_mean": float(np.mean([len(p) for p in prompts])) if prompts else 0.0,
        "max_new_tokens_mean": float(np.mean(lengths)) if lengths else 0.0,
        "output_tokens": int(tokens),
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "requests_per_s": len(prompts) / wall if wall > 0 else 0.0,
        "request_latency_p50_s": float(np.percentile(lat, 50)),
        "request_latency_p99_s": float(np.percentile(lat, 99)),
        "gc_s": collected["total_s"], "gc_full_collections": collected["collections"][2],
        **({} if flushed is None else {"warmup_cache_flushed": bool(flushed)}),
    }


async def bench_engine_turns(engine: Engine, prompts: List[List[int]], turn_tokens: List[List[int]],
                             observation: List[int], temperature: float = 1.0, groups: Optional[List[int]] = None,
                             request_prefix: Optional[str] = None) -> Dict[str, float]:
    """The engine alone on a multi-turn rollout's requests: trajectory i sends turn t (`turn_tokens[i][t]` new tokens,
    ignore_eos) as soon as its turn t-1 ended, its context the prompt, every earlier turn's output and `observation`
    after each (a tool's answer, free); all trajectories at once. Each trajectory's requests carry one session key
    (engines that keep a trajectory's KV between turns do, as in a rollout) and, with `groups`, its group as affinity
    (replicas route as a rollout's). What a rollout mode costs beyond this is its own loop's and tools'."""
    request_prefix = request_prefix or f"bench-turns-{uuid.uuid4().hex[:8]}"
    if len(turn_tokens) != len(prompts):
        raise ValueError("one list of turn lengths per prompt")
    end_session = getattr(engine, "end_session", None)

    async def one(i: int) -> int:
        key, ctx, made = f"{request_prefix}-{i}", list(prompts[i]), 0
        try:
            for t, n in enumerate(turn_tokens[i]):
                if t:
                    ctx += observation
                sp = SamplingParams(max_new_tokens=int(n), temperature=temperature, ignore_eos=True, session=key,
                                    affinity=None if groups is None else str(groups[i]))
                out = await engine.generate(ctx, sp, f"{key}-t{t}")
                ctx += out.output_ids
                made += len(out.output_ids)
        finally:
            if end_session is not None:
                await end_session(key)
        return made

    t0 = time.perf_counter()
    with frozen_heap():
        made = await asyncio.gather(*(one(i) for i in range(len(prompts))))
    wall = time.perf_counter() - t0
    tokens = sum(made)
    return {"trajectories": len(prompts), "requests": sum(len(t) for t in turn_tokens), "output_tokens": int(tokens),
            "observation_tokens": len(observation), "wall_s": wall, "tokens_per_s": tokens / wall if wall > 0 else 0.0}


def engine_sizes_for(plans, default_new_tokens: Optional[int] = None) -> int:
    """New tokens per request of the ceiling that matches a rollout: the mean planned tokens per trajectory."""
    if not plans:
        return default_new_tokens or 1
    return max(1, int(round(float(np.mean([p.total_gen_tokens for p in plans])))))
