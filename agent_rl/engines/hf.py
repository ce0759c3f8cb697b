"""`hf` engine: transformers on CPU (or one GPU) with our own continuous batching.

Why not transformers' continuous batching (`generate_batch` / `ContinuousBatchingManager` /
`init_continuous_batching`, checked in transformers 5.23)? It does return per-token log-probs and
can cancel a request, but (1) `do_sample` is one flag for the whole manager, so greedy validation
requests and sampled training requests cannot share it; (2) its log-probs are taken *after* the
logits processors (top-p/top-k renormalised), not `log_softmax(logits / T)` as our convention
requires; (3) per-request temperature only exists when the manager was created with a
non-default temperature, there are no per-request seeds, and (4) it runs paged attention in its own
background thread with its own cache sizing, which is heavy for a 2-core CPU test box. So this
module batches by itself:

* `generate()` queues a request and awaits a future. One asyncio worker task admits waiting
  requests at step boundaries (continuous batching, up to `max_batch_size` rows) and runs each step
  in a single-thread executor, so the event loop keeps running tools meanwhile.
* A step: drop rows that finished or were aborted; one decode forward for the running rows (a
  left-padded `DynamicCache` + 2-D attention mask + explicit position ids); one left-padded prefill
  forward for newly admitted rows; merge the two caches along the batch axis; sample every row with
  its own parameters (temperature / top-p / top-k / seed / stop ids / max_new_tokens).
* Log-prob convention: `log_softmax(logits / T)` of the sampled token (T = 1 when greedy), before
  top-p / top-k truncation. Output ids include the stop token when a row stopped on it.
* `abort(rid)` stops the row at the next step boundary; it returns the tokens so far with
  finish_reason "abort". Cancelling the awaiting `generate()` coroutine aborts the row too.
* `update_weights` copies tensors into the parameters by HF name (tied embeddings share storage, so
  either name updates both); it runs on the same executor, i.e. between two steps. Rows in flight
  keep their KV cache (as in SGLang).
* `flush_cache`, `release_memory` and `resume_memory` are no-ops: there is no prefix cache, and the
  model stays resident (on CPU there is nothing to hand over to the trainer).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams
from agent_rl.engines.hf_batch import KVBatch, sample
from agent_rl.model.attention import avoid_cudnn_attention

log = logging.getLogger(__name__)


def cache_argument(model) -> str:
    """The name under which `model.forward` takes (and its output returns) the KV cache: `cache` in the installed
    transformers 5.x, `past_key_values` before. The old name still works there but logs a FutureWarning
    ("`past_key_values` is deprecated ... Use `cache` instead") on every engine run."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


@dataclass
class EngineStats:
    steps: int = 0                  # forward steps (a step may hold a decode and a prefill forward)
    decode_forwards: int = 0
    decode_rows: int = 0            # rows summed over decode forwards
    prefill_forwards: int = 0
    prefill_rows: int = 0
    max_rows: int = 0               # most rows sampled in one step
    rows_sampled: int = 0           # rows summed over steps (= tokens generated)
    requests: int = 0
    admitted_midflight: int = 0     # rows admitted while other rows were decoding (continuous batching)
    aborted: int = 0
    weight_updates: int = 0

    @property
    def mean_rows_per_step(self) -> float:
        return self.rows_sampled / self.steps if self.steps else 0.0

    def as_dict(self) -> Dict[str, float]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["mean_rows_per_step"] = self.mean_rows_per_step
        return d


@dataclass
class _Request:
    rid: str
    input_ids: List[int]
    sampling: SamplingParams
    stop_ids: Set[int]
    max_new_tokens: int
    future: asyncio.Future
    generator: Optional[torch.Generator] = None
    output_ids: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    finish_reason: Optional[str] = None   # set when the row is done (by the step or by abort)
    abort_requested: bool = False


class HFEngine(Engine):
    name = "hf"

    def __init__(self, model_path: str, device: Optional[str] = None, dtype: Optional[torch.dtype] = None,
                 max_batch_size: int = 64, max_model_len: Optional[int] = None, seed: Optional[int] = None,
                 attn_implementation: Optional[str] = "sdpa", model=None, num_threads: Optional[int] = None):
        from transformers import AutoModelForCausalLM

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        avoid_cudnn_attention()   # a decode step is a new attention shape: no per-shape cuDNN graphs (model/attention.py)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        if model is None:
            kwargs = {"dtype": dtype}
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
        self.model = model.to(self.device).eval()
        self._cache_kw = cache_argument(self.model)   # "cache" (transformers 5.x) or "past_key_values"
        self.model_path = model_path
        self.max_batch_size = int(max_batch_size)
        cfg_len = getattr(self.model.config, "max_position_embeddings", None)
        self.max_model_len = int(max_model_len or cfg_len or 1 << 30)
        self.eos_token_ids = self._eos_ids()
        self.pad_token_id = self._pad_id()
        self.stats = EngineStats()
        self._seed = int(seed) if seed is not None else random.getrandbits(63)
        # num_threads: torch intra-op threads of the engine's thread (torch.set_num_threads is process-wide).
        # On a busy 2-core box, 1 thread is several times faster than 2 contended OpenMP threads.
        init = (lambda: torch.set_num_threads(int(num_threads))) if num_threads else None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine",
                                                               initializer=init)
        self._pending: Deque[_Request] = collections.deque()
        self._by_id: Dict[str, _Request] = {}
        self._batch = KVBatch()                # the running rows and their cache (touched only between steps)
        self._wake: Optional[asyncio.Event] = None
        self._worker: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closed = False

    # ------------------------------------------------------------------ setup helpers
    def _eos_ids(self) -> Set[int]:
        ids: Set[int] = set()
        for src in (getattr(self.model, "generation_config", None), self.model.config):
            e = getattr(src, "eos_token_id", None) if src is not None else None
            if e is None:
                continue
            ids.update([int(e)] if isinstance(e, int) else [int(x) for x in e])
        return ids

    def _pad_id(self) -> int:
        p = getattr(self.model.config, "pad_token_id", None)
        if isinstance(p, int):
            return p
        return min(self.eos_token_ids) if self.eos_token_ids else 0

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            if self._worker is not None and not self._worker.done():
                raise RuntimeError("HFEngine is bound to the event loop of its first call; use one long-lived loop")
        if self._worker is None or self._worker.done():
            self._loop = loop
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="hf-engine-worker")

    # ------------------------------------------------------------------ API
    def request_seed(self, request_id: str) -> int:
        """The sampler seed of a request without its own: a hash of the engine seed and the request id, so the
        tokens of a request do not depend on the order requests arrive in, and a run resumed from a checkpoint
        draws what the uninterrupted run drew (the rollout's request ids are deterministic)."""
        digest = hashlib.blake2b(f"{self._seed}:{request_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    async def generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str) -> GenerateOutput:
        if self._closed:
            raise RuntimeError("engine is shut down")
        if not input_ids:
            raise ValueError("generate needs at least one input id")
        if request_id in self._by_id:
            raise ValueError(f"request id already in flight: {request_id}")
        room = self.max_model_len - len(input_ids)
        max_new = min(int(sampling.max_new_tokens), room)
        if max_new <= 0:
            return GenerateOutput([], [], "length", prompt_tokens=len(input_ids))
        self._ensure_worker()
        stop = set() if sampling.ignore_eos else set(self.eos_token_ids) | {int(t) for t in sampling.stop_token_ids}
        gen = None
        if not sampling.greedy:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(sampling.seed) if sampling.seed is not None else self.request_seed(request_id))
        req = _Request(request_id, [int(t) for t in input_ids], sampling, stop, max_new,
                       self._loop.create_future(), generator=gen)
        self._by_id[request_id] = req
        self._pending.append(req)
        self.stats.requests += 1
        self._wake.set()
        try:
            return await asyncio.shield(req.future)
        except asyncio.CancelledError:
            req.abort_requested = True
            if req in self._pending:
                self._pending.remove(req)
                self._finish(req, "abort")
            raise

    async def abort(self, request_id: str) -> None:
        req = self._by_id.get(request_id)
        if req is None or req.future.done():
            return
        req.abort_requested = True
        if req in self._pending:
            self._pending.remove(req)
            self._finish(req, "abort")
        elif self._wake is not None:
            self._wake.set()

    async def update_weights(self, named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> None:
        items = list(named_tensors)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_weights, items)
        self.stats.weight_updates += 1

    async def flush_cache(self) -> None:
        """No prefix cache in this engine: nothing to drop."""

    async def release_memory(self) -> None:
        """No-op: the hf engine keeps its weights resident (CPU tests / debugging)."""

    async def resume_memory(self) -> None:
        """No-op, see release_memory."""

    async def shutdown(self) -> None:
        self._closed = True
        for req in list(self._pending) + list(self._batch.rows):
            if not req.future.done():
                self._finish(req, "abort")
        self._pending.clear()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
        self._batch.clear()
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ worker (event loop side)
    def _finish(self, req: _Request, reason: str) -> None:
        if req.finish_reason is None:
            req.finish_reason = reason
        if reason == "abort":
            self.stats.aborted += 1
        self._by_id.pop(req.rid, None)
        if not req.future.done():
            req.future.set_result(GenerateOutput(list(req.output_ids), list(req.logprobs), req.finish_reason,
                                                 prompt_tokens=len(req.input_ids)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            for req in self._batch.rows:
                if req.finish_reason is None and req.abort_requested:
                    self._finish(req, "abort")
            live = [r for r in self._batch.rows if r.finish_reason is None]
            if not live:
                self._batch.clear()
            new: List[_Request] = []
            while self._pending and len(live) + len(new) < self.max_batch_size:
                new.append(self._pending.popleft())
            if not live and not new:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await loop.run_in_executor(self._executor, self._step, new)
            except Exception as e:  # a failing forward fails the rows in it, the engine keeps serving
                log.exception("hf engine step failed")
                for req in self._batch.rows + new:
                    if not req.future.done():
                        req.future.set_exception(e)
                        self._by_id.pop(req.rid, None)
                self._batch.clear()
                continue
            for req in self._batch.rows:
                if req.finish_reason is None and req.abort_requested:
                    req.finish_reason = "abort"
                if req.finish_reason is not None and not req.future.done():
                    self._finish(req, req.finish_reason)

    # ------------------------------------------------------------------ model side (executor thread)
    @torch.no_grad()
    def _load_weights(self, items: Sequence[Tuple[str, torch.Tensor]]) -> None:
        targets = dict(self.model.named_parameters(remove_duplicate=False))
        targets.update(dict(self.model.named_buffers(remove_duplicate=False)))
        missing = [n for n, _ in items if n not in targets]
        if missing:
            raise KeyError(f"update_weights: unknown parameter names {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for name, tensor in items:
            dst = targets[name]
            if tuple(dst.shape) != tuple(tensor.shape):
                raise ValueError(f"update_weights: {name} has shape {tuple(tensor.shape)}, expected {tuple(dst.shape)}")
            dst.data.copy_(tensor.detach().to(device=dst.device, dtype=dst.dtype))

    def _decode(self) -> torch.Tensor:
        b = self._batch
        mask = torch.cat([b.mask, torch.ones_like(b.mask[:, :1])], dim=1)
        out = self.model(input_ids=b.last[:, None], attention_mask=mask, position_ids=b.pos[:, None],
                         use_cache=True, logits_to_keep=1, **{self._cache_kw: b.cache})
        b.mask = mask
        b.cache = getattr(out, self._cache_kw)
        self.stats.decode_forwards += 1
        self.stats.decode_rows += len(b.rows)
        return out.logits[:, -1, :]

    def _prefill(self, new: List[_Request]):
        n, length = len(new), max(len(r.input_ids) for r in new)
        ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, length - len(r.input_ids):] = torch.tensor(r.input_ids)
            mask[i, length - len(r.input_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: DynamicCache()})
        cache = getattr(out, self._cache_kw)
        pad = (mask == 0)[:, None, :, None]
        for layer in cache.layers:
            if type(layer).__name__ != "DynamicLayer":
                raise NotImplementedError(f"hf engine batching supports full-attention caches only, got {type(layer).__name__}")
            layer.keys = layer.keys.masked_fill(pad, 0.0)
            layer.values = layer.values.masked_fill(pad, 0.0)
        self.stats.prefill_forwards += 1
        self.stats.prefill_rows += n
        return out.logits[:, -1, :], cache, mask, mask.sum(-1)

    @torch.no_grad()
    def _step(self, new: List[_Request]) -> None:
        b = self._batch
        keep = [i for i, r in enumerate(b.rows) if r.finish_reason is None]
        if b.rows and len(keep) < len(b.rows):
            b.select(keep)
        parts = []
        if b.rows:
            parts.append(self._decode())
            b.pos = b.pos + 1
        if new:
            logits, cache, mask, lengths = self._prefill(new)
            parts.append(logits)
            last = torch.zeros(len(new), dtype=torch.long, device=self.device)
            if b.rows:
                self.stats.admitted_midflight += len(new)
            b.merge(cache, mask, last, lengths.to(self.device), new)
        logits = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        tokens, lps = sample(logits, b.rows)
        b.last = torch.tensor(tokens, dtype=torch.long, device=self.device)
        for r, tok, lp in zip(b.rows, tokens, lps):
            r.output_ids.append(tok)
            r.logprobs.append(float(lp))
            if tok in r.stop_ids:
                r.finish_reason = "stop"
            elif len(r.output_ids) >= r.max_new_tokens:
                r.finish_reason = "length"
        self.stats.steps += 1
        self.stats.rows_sampled += len(b.rows)
        self.stats.max_rows = max(self.stats.max_rows, len(b.rows))
