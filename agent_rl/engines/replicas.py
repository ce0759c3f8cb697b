"""Several engines of one kind behind one `Engine`: `rollout.engine_replicas` engines per GPU (or rank).

Why: on the GPU host sglang's scheduler is one Python process that plans every pass, admits every request and files
every result; a multi-turn rollout spends 27-51% of its engine time there turning requests around
(docs/benchmarks-log.md, seventeenth session) while the GPU idles between passes. Two schedulers on one GPU each do half
of that work, in parallel, and their passes fill each other's gaps.

Routing: a request goes to the replica that already holds its `SamplingParams.affinity` (the rollout passes the
GRPO group, so a group's turns reuse one prefix cache); a new affinity goes to the replica with the fewest requests
in flight (ties: the fewest affinities since the last cache flush, then the first). Without an affinity each request
is placed on its own. Aborts follow their request. Weights, cache flushes, memory release / resume, profiling and
shutdown go to every replica; a weight bucket is read once and sent to each.
"""
from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams
from agent_rl.engines.kv_sessions import STATE_KEYS

MAX_AFFINITIES = 1 << 16   # affinities remembered between cache flushes (oldest forgotten first)
STARTED_KINDS = ("sglang", "sglang-server", "hf")   # engines this process starts, so it can start several
NOT_HTTP = ("> 1 needs engines the trainer starts (sglang, sglang-server, hf); rollout.engine=http talks to the one "
            "server at rollout.server_url")


def replica_mem_fractions(total: float, replicas: int) -> List[float]:
    """sglang 0.5.17's `mem_fraction_static` is a share of the GPU memory free when that engine starts (its KV budget
    = free memory - free at start * (1 - fraction)). Started one after the other, replica i (from 1) gets
    `total / n / (1 - (i - 1) * total / n)` so that each holds about `total / n` of what was free before the first
    (each later one a little less: the earlier ones' CUDA graphs and activations are outside their share)."""
    if replicas < 1:
        raise ValueError(f"rollout.engine_replicas: must be >= 1, got {replicas}")
    if not 0 < total < 1:
        raise ValueError(f"rollout.gpu_memory_utilization: must be in (0, 1), got {total}")
    share = total / replicas
    return [share / (1 - i * share) for i in range(replicas)]


def replicas_of(engine: Any) -> List[Any]:
    """The engines behind `engine`: its replicas (`ReplicaEngine`), else `engine` itself."""
    return list(getattr(engine, "replicas", None) or [engine])


def session_counts(engine: Any) -> Optional[Dict[str, int]]:
    """The KV sessions' counts (`KVSessions.stats`) summed over `engine`'s replicas; None without sessions."""
    stats = [r.session_stats() for r in replicas_of(engine) if callable(getattr(r, "session_stats", None))]
    stats = [st for st in stats if st is not None]
    if not stats:
        return None
    out: Dict[str, int] = {}
    for st in stats:
        for k, v in st.items():
            if k not in STATE_KEYS:
                out[k] = out.get(k, 0) + int(v)
    return out


class ReplicaEngine(Engine):
    """`replicas` (started engines of one kind) behind one engine."""

    def __init__(self, replicas: Sequence[Engine]):
        if not replicas:
            raise ValueError("ReplicaEngine needs at least one engine")
        self.replicas: List[Engine] = list(replicas)
        self.name = getattr(self.replicas[0], "name", "engine")
        self._inflight = [0] * len(self.replicas)               # generate calls in flight per replica
        self._placed = [0] * len(self.replicas)                 # affinities placed since the last flush
        self._affinity: "OrderedDict[str, int]" = OrderedDict()  # affinity -> replica
        self._requests: Dict[str, int] = {}                     # request id in flight -> replica
        self.routed = [0] * len(self.replicas)                  # requests each replica got, in all
        self.active = len(self.replicas)   # new requests go to the first `active` (`bench` variant `replicas<N>`)

    # ------------------------------------------------------------------ what the replicas share
    @property
    def weights_from_disk(self) -> bool:
        return bool(getattr(self.replicas[0], "weights_from_disk", False))

    @property
    def server_per_rank(self) -> bool:
        return bool(getattr(self.replicas[0], "server_per_rank", False))

    def scheduling_info(self) -> Dict[str, Any]:
        first = self.replicas[0]
        info = dict(first.scheduling_info()) if hasattr(first, "scheduling_info") else {}
        info["replicas"] = len(self.replicas)
        return info

    def load(self) -> List[int]:
        """Requests in flight on each replica."""
        return list(self._inflight)

    # ------------------------------------------------------------------ routing
    def _pick(self) -> int:
        return min(range(max(1, min(self.active, len(self.replicas)))),
                   key=lambda i: (self._inflight[i], self._placed[i], i))

    def replica_for(self, sampling: SamplingParams) -> int:
        """The replica a request with `sampling` goes to (placing its affinity when new)."""
        key = sampling.affinity
        if key is None:
            return self._pick()
        i = self._affinity.get(key)
        if i is None or i >= self.active:
            i = self._affinity[key] = self._pick()
            self._placed[i] += 1
            if len(self._affinity) > MAX_AFFINITIES:
                self._affinity.popitem(last=False)
        else:
            self._affinity.move_to_end(key)
        return i

    async def generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str) -> GenerateOutput:
        if request_id in self._requests:
            raise ValueError(f"request id already in flight: {request_id}")
        i = self.replica_for(sampling)
        self._requests[request_id] = i
        self._inflight[i] += 1
        self.routed[i] += 1
        try:
            return await self.replicas[i].generate(input_ids, sampling, request_id)
        finally:
            self._inflight[i] -= 1
            self._requests.pop(request_id, None)

    async def abort(self, request_id: str) -> None:
        i = self._requests.get(request_id)
        if i is not None:
            await self.replicas[i].abort(request_id)

    # ------------------------------------------------------------------ every replica
    async def _all(self, method: str, *args, **kwargs) -> List[Any]:
        return list(await asyncio.gather(*(getattr(r, method)(*args, **kwargs) for r in self.replicas)))

    async def end_session(self, session: str) -> None:   # the replica that held it (the others know no such key)
        for r in self.replicas:
            await r.end_session(session)

    async def update_weights(self, named_tensors: Iterable[Tuple[str, torch.Tensor]], **kwargs) -> None:
        bucket = list(named_tensors)   # an iterator is read once: every replica gets the same list
        for r in self.replicas:        # one at a time: each holds its own serialized copy while it loads
            await r.update_weights(bucket, **kwargs)

    async def update_weights_from_disk(self, model_path: str, *args, **kwargs) -> None:
        await self._all("update_weights_from_disk", model_path, *args, **kwargs)

    async def flush_cache(self) -> Optional[bool]:
        results = await self._all("flush_cache")
        self._affinity.clear()
        self._placed = [0] * len(self.replicas)
        return False if any(r is False for r in results) else (None if all(r is None for r in results) else True)

    async def release_memory(self) -> None:
        await self._all("release_memory")

    async def resume_memory(self) -> None:
        await self._all("resume_memory")

    async def start_profile(self, output_dir: str, passes: int) -> None:
        # a folder each: sglang names a trace by its start time, which two replicas may share
        await asyncio.gather(*(r.start_profile(os.path.join(output_dir, f"replica-{i}"), passes)
                               for i, r in enumerate(self.replicas)))

    async def stop_profile(self) -> None:
        await self._all("stop_profile")

    async def shutdown(self) -> None:
        """Every replica, the last started first (each sglang engine stops only its own processes), also when one
        of them fails; the first failure is raised afterwards."""
        error: Optional[BaseException] = None
        for r in reversed(self.replicas):
            try:
                await r.shutdown()
            except Exception as e:   # noqa: BLE001 - the others must still stop
                error = error or e
        if error is not None:
            raise error
