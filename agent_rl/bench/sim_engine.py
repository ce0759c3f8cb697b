"""A simulated continuous-batching engine for scheduling work on a CPU: one decode step advances every running
request by one token and costs `fixed_s + per_row_s * rows`. A step that admits new requests first runs one
prefill pass for all of them, costing `prefill_s + prefill_row_s * admitted` (0 = prefill is free); with
`delay_passes` > 0 a prefill waits, at most that many decode steps, until the queue holds `queue_min_ratio` of the
running rows (sglang's prefill delayer, on by default in our engine); with `slot_delay` it also waits while fewer
rows are free than the most it admitted in one pass lately (that maximum decays by 0.2% a pass): the delayer's slot
condition, which sglang's delayer has where it counts free rows against the running cap: with the `delayer_cap`
scheduler patch (default), or where KV sessions do not split the request pool from that cap
(engines/sglang_patches/delayer_cap.py; `bench --engine sim` sets it so). Requests beyond `max_running`
wait in a queue served by priority (lower first), then arrival: sglang's behaviour with priority scheduling.
Finished requests reach their callers as sglang's in-process tokenizer manager hands them over: `batch_notify_size`
(16, sglang's default) at a time, one event-loop pass apart, while the engine goes on with its next pass (so a turn
boundary's requests come back to the engine in groups, as on the GPU host: docs/benchmarks-log.md, twenty-seventh
session).

Calibration (docs/benchmarks-log.md): SmolLM2-135M on an H200 with sglang 0.5.17 decodes 256 rows in ~4.3 ms and
1024 rows in ~13.4 ms per step, i.e. fixed 1.3 ms + 11.8 us per row. `agent-rl bench ... --engine sim` uses it.
The prefill pass of a multi-turn step (a few to ~100 next turns with long cached prefixes) measured 50-150 ms on
the H200 with the random-init Qwen2.5-1.5B shape (2026-12-02, docs/benchmarks-log.md): `--sim-cost 2.2,10,80`.
sglang's own profile (2026-12-03) splits it: ~10 ms a pass plus ~0.6 ms an admitted row (the scheduler's batch
selection and result filing; the kernels are 4.5-15 ms of it): `--sim-cost 2.2,10,10,0.6`. Fitted on the scheduler
log of a 1.4B 64x4 heavy-tail rollout (`agent-rl bench sglang-log --fit-cost`, 2026-12-04, seventeenth session):
`2,10.6,27,0.898`; it reproduced plain async's step to 2% but put carry-over at rate 1 ahead of 0.5 where the H200 did not: carry-over rates it prices are
an upper bound.

Replicas (`--engine-replicas N`): N simulated engines share one `gpu` lock; `gpu_share` of each pass holds it (the
GPU's part), the rest runs beside the other replicas' passes (the scheduler's CPU). One engine's passes cost what
they cost alone; N engines gain only where their passes' CPU parts overlap.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams


@dataclass
class _Req:
    prio: int
    seq: int
    left: int
    out: List[int] = field(default_factory=list)
    done: asyncio.Future = None
    aborted: bool = False


class SimEngine(Engine):
    name = "sim"

    def __init__(self, fixed_s: float = 0.0013, per_row_s: float = 11.8e-6, max_running: Optional[int] = None,
                 token: int = 42, prefill_s: float = 0.0, delay_passes: int = 0, queue_min_ratio: float = 0.25,
                 prefill_row_s: float = 0.0, gpu: Optional[asyncio.Lock] = None, gpu_share: float = 1.0,
                 slot_delay: bool = False, batch_notify_size: int = 16):
        self.fixed_s, self.per_row_s, self.prefill_s, self.prefill_row_s = fixed_s, per_row_s, prefill_s, prefill_row_s
        self.gpu, self.gpu_share = gpu, float(gpu_share)
        self.delay_passes, self.queue_min_ratio = int(delay_passes), float(queue_min_ratio)
        self._delayed = 0
        self.slot_delay = bool(slot_delay)
        self.batch_notify_size = int(batch_notify_size)   # read at every hand-over (the `notify<N>` mode variant)
        self._max_prefill_bs = 0.0   # sglang's high-watermark of one prefill's admissions, decayed every pass
        self.max_running = max_running
        self.token = token
        self._running: Dict[str, _Req] = {}
        self._queue: Dict[str, _Req] = {}
        self._seq = itertools.count()
        self._loop_task: Optional[asyncio.Task] = None
        self._outputs: Deque[List[_Req]] = collections.deque()   # finished requests, a list a pass, not handed over
        self._hand_task: Optional[asyncio.Task] = None
        self.steps = 0
        self.rows_sum = 0
        self.prefills = 0

    async def generate(self, input_ids, sampling: SamplingParams, request_id: str) -> GenerateOutput:
        req = _Req(prio=sampling.priority if sampling.priority is not None else 0, seq=next(self._seq),
                   left=int(sampling.max_new_tokens), done=asyncio.get_running_loop().create_future())
        if req.left <= 0:
            return GenerateOutput([], [], "length", len(input_ids))
        self._queue[request_id] = req
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.ensure_future(self._run())
        await req.done
        n = len(req.out)
        return GenerateOutput(list(req.out), [-1.0] * n, "abort" if req.aborted else "length", len(input_ids))

    def _admit(self) -> int:
        """Move queued requests into free rows (priority, then arrival); returns how many."""
        self._max_prefill_bs *= 0.998
        room = (self.max_running or len(self._queue) + len(self._running)) - len(self._running)
        if room <= 0 or not self._queue:
            return 0
        waits = len(self._queue) < self.queue_min_ratio * len(self._running) \
            or (self.slot_delay and self.max_running is not None and room < self._max_prefill_bs)
        if self._running and self._delayed < self.delay_passes and waits:
            self._delayed += 1
            return 0
        self._delayed = 0
        admitted = sorted(self._queue, key=lambda r: (self._queue[r].prio, self._queue[r].seq))[:room]
        for rid in admitted:
            self._running[rid] = self._queue.pop(rid)
        self._max_prefill_bs = max(self._max_prefill_bs, len(admitted))
        return len(admitted)

    async def _run(self) -> None:
        while self._queue or self._running:
            admitted = self._admit()
            self.prefills += admitted > 0
            prefill = self.prefill_s + self.prefill_row_s * admitted if admitted else 0.0
            rows = len(self._running)
            await self._pass(prefill + self.fixed_s + self.per_row_s * rows)
            self.steps += 1
            self.rows_sum += rows
            finished = []
            for rid in list(self._running):
                req = self._running[rid]
                req.out.append(self.token)
                req.left -= 1
                if req.left <= 0:
                    del self._running[rid]
                    finished.append(req)
            if finished:
                self._outputs.append(finished)
                if self._hand_task is None or self._hand_task.done():
                    self._hand_task = asyncio.ensure_future(self._hand_over())

    async def _hand_over(self) -> None:
        """Wake the callers of each pass's finished requests, pass by pass, as sglang 0.5.17's tokenizer manager
        handles the scheduler's output messages (`_handle_batch_output`): `batch_notify_size` of them, then a pass of
        the event loop, and so on; a pass of the loop between messages."""
        while self._outputs:
            reqs = self._outputs.popleft()
            n = max(self.batch_notify_size, 1)
            for i in range(0, len(reqs), n):
                if i:
                    await asyncio.sleep(0)
                for req in reqs[i:i + n]:
                    if not req.done.done():
                        req.done.set_result(None)
            await asyncio.sleep(0)

    async def _pass(self, cost_s: float) -> None:
        """One pass: alone, `cost_s`; with a shared GPU, its CPU part, then its GPU part holding the GPU."""
        if self.gpu is None:
            await asyncio.sleep(cost_s)
            return
        await asyncio.sleep(cost_s * (1.0 - self.gpu_share))
        async with self.gpu:
            await asyncio.sleep(cost_s * self.gpu_share)

    @staticmethod
    def passes(engine: Engine) -> Optional[Dict[str, int]]:
        """The decode steps and prefill passes so far of the simulated engines in `engine` (replicas summed); None where
        it holds none."""
        from agent_rl.engines.replicas import replicas_of

        sims = [r for r in replicas_of(engine) if isinstance(r, SimEngine)]
        if not sims:
            return None
        return {"decode_passes": sum(r.steps for r in sims), "prefill_passes": sum(r.prefills for r in sims)}

    async def abort(self, request_id: str) -> None:
        req = self._running.pop(request_id, None) or self._queue.pop(request_id, None)
        if req is not None and not req.done.done():
            req.aborted = True
            req.done.set_result(None)

    async def update_weights(self, named_tensors) -> None:
        pass

    async def shutdown(self) -> None:
        for rid in list(self._running) + list(self._queue):
            await self.abort(rid)
