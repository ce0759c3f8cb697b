"""`sglang` engine: an in-process `sglang.Engine` (GPU production path), token ids in and out.

Everything goes through the engine's `tokenizer_manager` *async* APIs (checked against sglang
0.5.17): the sync `Engine.update_weights_from_tensor` / `flush_cache` / `release_memory_occupation`
wrappers call `loop.run_until_complete` and break inside a running loop.

* generate: `GenerateReqInput(input_ids=..., sampling_params=..., return_logprob=True, rid=...)` through
  `tokenizer_manager.generate_request`, what `Engine.async_generate` does, with the async generator run to its
  end (`_generate_to_end`); reads `output_ids` (they run *through* the stop token: `Req.output_ids_through_stop`),
  `meta_info.output_token_logprobs` (tuples `(logprob, token_id, text)`) and
  `meta_info.finish_reason["type"]` (stop | length | abort).
* Log-probs: sglang 0.5.17 `layers/sampler.py` divides the logits by the temperature, takes
  `softmax`, samples (top-p/top-k/min-p work on a sorted copy) and returns `log(probs)` of the
  sampled token, i.e. `log_softmax(logits / T)` before truncation. Greedy requests become
  temperature 1 + top_k 1 there, so their log-probs are `log_softmax(logits)`. That is our convention,
  provided the env var `SGLANG_RETURN_ORIGINAL_LOGPROB` is unset (it would return T=1 log-probs;
  we refuse to start with it set) and deterministic / rl_on_policy modes are off (they compute the
  same quantity in bf16).
* abort: `tokenizer_manager.abort_request(rid)`. The scheduler matches rids by *prefix*
  (`req.rid.startswith(rid)`), so every request gets a fresh fixed-length uuid rid (no rid is a
  prefix of another). sglang silently drops an abort that finds no request (not yet registered by
  the tokenizer manager, or sent but not yet queued by the scheduler: seen on an H100), so the
  abort is repeated every 0.1 s until the request has ended.
* update_weights: `UpdateWeightsFromTensorReqInput(serialized_named_tensors=[MultiprocessingSerializer
  .serialize(list_of_(name, tensor))] * tp_size)` -> `tokenizer_manager.update_weights_from_tensor`.
  It takes the model-update writer lock, i.e. waits for in-flight requests.
* release/resume: `ReleaseMemoryOccupationReqInput` / `ResumeMemoryOccupationReqInput` (needs
  `enable_memory_saver=True`) with `tags=MEMORY_TAGS` (KV cache and weights, as verl does; sglang's io_struct
  says only these two are supported). No tags means every region incl. the CUDA graphs' memory: 4 runs on an
  H200 died in `release_memory_occupation` with an illegal memory access that way (docs/results.md section 7);
  resume restores memory, not contents: push the weights again.
* shutdown: `Engine.shutdown()` kills *every* child process of this process; when this process
  has children that are not sglang's (a KG server, Ray), only sglang's own process trees are killed.

One event loop: sglang binds its response handling to the loop of the first async call.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import uuid
from operator import itemgetter
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import torch

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams, model_eos_token_ids
from agent_rl.engines.kv_sessions import CAPACITY, KVSessions, generate as in_session

log = logging.getLogger(__name__)

# what release_memory frees while the actor trains (and resume_memory takes back): the KV cache and the weights,
# not the CUDA graphs' memory pool
MEMORY_TAGS = ["kv_cache", "weights"]
FLUSH_WAIT_S = 10.0   # how long a cache flush waits for the scheduler to go idle (aborted requests leaving)


def sampling_params_dict(sp: SamplingParams, eos_token_ids: Iterable[int] = ()) -> Dict[str, Any]:
    """Our SamplingParams as sglang's sampling_params dict. `eos_token_ids` (the model's terminators, every id of
    its generation_config's `eos_token_id`) join `sp.stop_token_ids` unless `sp.ignore_eos`: with
    `skip_tokenizer_init` sglang knows no tokenizer eos, so each terminator is passed explicitly."""
    d: Dict[str, Any] = {
        "max_new_tokens": int(sp.max_new_tokens),
        "temperature": 0.0 if sp.greedy else float(sp.temperature),
        "top_p": float(sp.top_p),
        "top_k": int(sp.top_k) if sp.top_k and sp.top_k > 0 else -1,
        "ignore_eos": bool(sp.ignore_eos),
        "skip_special_tokens": False,
        "no_stop_trim": True,
    }
    stop = [int(t) for t in sp.stop_token_ids]
    if not sp.ignore_eos:
        stop += [int(t) for t in eos_token_ids if int(t) not in stop]
    if stop:
        d["stop_token_ids"] = stop
    if sp.seed is not None:
        d["sampling_seed"] = int(sp.seed)   # honoured by sglang only with deterministic inference enabled
    return d


# sglang's prefill delayer (>= 0.5.17; needs the overlap scheduler): a prefill waits up to 20 decode passes until the
# waiting queue holds a quarter of the running batch. Multi-turn rollouts end turns one by one, and without it every
# new turn became a prefill pass of its own (805 passes of 7.6 requests in a 128 x 8 heavy-tail step on an H200);
# with it (10 passes), 149 passes of 41 requests, and the suite met 5 of 7 targets instead of 2 (docs/benchmarks-log.md,
# 2026-12-02). 20 passes instead of 10: ~90 prefill passes a 128 x 8 heavy-tail run instead of ~150, every mode 5-8%
# faster on an H100 at 135M (twenty-ninth session); the simulated engine saw no scenario lose.
PREFILL_DELAYER = {"enable_prefill_delayer": True, "prefill_delayer_queue_min_ratio": 0.25,
                   "prefill_delayer_max_delay_passes": 20}

# sglang (>= 0.5.17) captures "breakable" prefill CUDA graphs by default: a prefill pass then replays 29 graph pieces
# around 28 eagerly launched attention layers, 10-17 ms of scheduler CPU a pass (torch profile, H200), and a multi-turn
# step runs ~100 such passes. Eager prefill passes made carry-over steps 18-21% faster and cut no mode's speed
# beyond noise (side by side on one H200, 2026-12-03, docs/benchmarks-log.md); the capture at each start goes too.
PREFILL_GRAPH_OFF = {"disable_prefill_cuda_graph": True}

# priority scheduling by our hint (lower first: earlier launched groups), never preempting a running request
PRIORITY_SCHEDULING = {"enable_priority_scheduling": True, "schedule_low_priority_values_first": True,
                       "disable_priority_preemption": True, "default_priority_value": 0}

# sglang (0.5.17) sends each non-streaming request's output so far every 50 generated tokens
# (SGLANG_FORCE_STREAM_INTERVAL, kept for its time-to-first-token metric): the scheduler packs those partial outputs
# between decode passes and the tokenizer manager, on our event loop's thread, unpickles them and extends each request's
# log-probs although nothing reads them before the request ends. Our requests never stream; their one output comes
# at the end. Set in the environment of the processes sglang starts (a variable the user set wins).
ENGINE_ENV = {"SGLANG_FORCE_STREAM_INTERVAL": "1000000000"}
PARTIAL_OUTPUTS_OFF = 1_000_000   # a forced-output interval at least this large never fires on a real request

# sglang 0.5.17 mixes a prefill into the running decode batch only when neither returns log-probs
# (`Scheduler._get_new_batch_prefill_raw`: "TODO: support return_logprob + mixed chunked prefill"); ours always do, so
# it takes the scheduler patch `mixed_logprob` (engines/sglang_patches/mixed_logprob.py)
MIXED_CHUNK_IGNORED = ("rollout.engine_kwargs.enable_mixed_chunk has no effect without the scheduler patch "
                       "mixed_logprob: sglang mixes no prefill into a decode batch that returns log-probs, and every "
                       "rollout request does (add mixed_logprob to rollout.scheduler_patches)")

GRAPH_BS_LIMIT = 1024   # most decode rows we ask sglang to capture CUDA graphs for (capture time and memory grow with it)


def apply_engine_env(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Set each `ENGINE_ENV` variable that is not set yet in `environ` (default: this process's environment, which
    sglang's scheduler processes and a server process inherit; they read it at start). Returns the values in effect."""
    env = os.environ if environ is None else environ
    for key, value in ENGINE_ENV.items():
        env.setdefault(key, value)
    return {key: env[key] for key in ENGINE_ENV}


LOG_CONFIG_ENV = "SGLANG_LOGGING_CONFIG_PATH"   # sglang 0.5.17 `configure_logger`: a logging dictConfig, JSON


def log_tag_config(tag: str, level: str) -> Dict[str, Any]:
    """sglang's own log format and level with `tag` after the time stamp: `[2026-12-04 10:00:00 R1] Decode batch...`
    (`bench sglang-log --replica 1` keeps one scheduler's lines of a log where several write)."""
    ms = ".%(msecs)03d" if os.environ.get("SGLANG_LOG_MS", "").lower() in ("1", "true", "yes") else ""
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"tagged": {"format": f"[%(asctime)s{ms} {tag}] %(message)s", "datefmt": "%Y-%m-%d %H:%M:%S"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "tagged", "stream": "ext://sys.stderr"}},
            "root": {"level": str(level).upper(), "handlers": ["stderr"]},
            "loggers": {n: {"level": "WARNING"} for n in ("httpx", "httpcore")}}


@contextlib.contextmanager
def tagged_logs(tag: Optional[str], level: str):
    """While an engine starts, its processes (which read the variable at their start) log with `tag`. Yields the
    config file, for the engine to remove at its shutdown (its detokenizer may read it after the start returned);
    None, and nothing set, when `tag` is None or the user set their own logging config."""
    if not tag or os.environ.get(LOG_CONFIG_ENV):
        yield None
        return
    import json
    import tempfile

    fd, path = tempfile.mkstemp(prefix=f"agent-rl-sglang-log-{tag}-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(log_tag_config(tag, level), f)
    os.environ[LOG_CONFIG_ENV] = path
    try:
        yield path
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.environ.pop(LOG_CONFIG_ENV, None)


def ipc_socket_files(port_args: Any) -> List[str]:
    """The files in the temporary folder behind an in-process sglang engine's `ipc://` sockets: sglang 0.5.17's
    `PortArgs` names five temporary files per engine start and never removes them (its shutdown leaves the
    sockets in /tmp). Paths outside the temporary folder are not ours to remove and are left out."""
    import tempfile

    if port_args is None:
        return []
    tmp = os.path.realpath(tempfile.gettempdir())
    paths = [v[len("ipc://"):] for v in vars(port_args).values() if isinstance(v, str) and v.startswith("ipc://")]
    return [p for p in paths if os.path.dirname(os.path.realpath(p)) == tmp]


def remove_ipc_socket_files(port_args: Any) -> None:
    """Remove `ipc_socket_files(port_args)` (after the engine's shutdown; one already gone is fine)."""
    for path in ipc_socket_files(port_args):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _round_up(n: int, k: int) -> int:
    return -(-int(n) // k) * k


@contextlib.contextmanager
def _keep_root_logging():
    """sglang.Engine defaults to log_level "error" and calls `logging.basicConfig(force=True)` in this process
    (sglang 0.5.17 `configure_logger`): the root logger's level and handlers are replaced, and every warning of
    ours (a failed judge, a tool error, an abort that did not land) vanished from GPU runs. Put them back."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)


def scheduling_kwargs(max_concurrency: Optional[int], user: Dict[str, Any], fields: Set[str]) -> Dict[str, Any]:
    """sglang server args that keep every decode batch inside a captured CUDA graph (docs/benchmarks.md).

    sglang captures decode graphs up to a batch size picked from the GPU's memory (256 on an H100 / H200 at
    TP 1) and runs larger batches eagerly, several times slower per token on a small model. With `max_concurrency`
    requests in flight (one per running trajectory), graphs are captured up to min(concurrency, GRAPH_BS_LIMIT),
    the running requests are capped there (the rest wait in sglang's queue; `max_running_requests`, or with KV
    sessions `pp_max_micro_batch_size` under a request pool that also holds every trajectory's session), priority
    scheduling serves the queue by our hint (lower first: earlier launched groups, so over-sampled extras only use
    spare rows), and the prefill delayer (`PREFILL_DELAYER`) batches the prefills of turns that start one by one, and
    prefill passes run without CUDA graphs (`PREFILL_GRAPH_OFF`).
    The user's `rollout.engine_kwargs` win; the deprecated `cuda_graph_max_bs` maps to whichever name `fields`
    (sglang's ServerArgs) has."""
    out = dict(user)
    graph_key = "cuda_graph_max_bs_decode" if "cuda_graph_max_bs_decode" in fields else "cuda_graph_max_bs"
    if "cuda_graph_max_bs" in out and graph_key != "cuda_graph_max_bs":
        out[graph_key] = out.pop("cuda_graph_max_bs")
    if max_concurrency and max_concurrency > 0:
        rows = min(_round_up(max_concurrency, 32), GRAPH_BS_LIMIT)
        if not out.get("disable_cuda_graph"):
            out.setdefault(graph_key, rows)
        if max_concurrency > rows and "max_running_requests" not in out:
            if out.get("enable_streaming_session") and "pp_max_micro_batch_size" in fields \
                    and "pp_max_micro_batch_size" not in out and (out.get("pp_size") or 1) == 1:
                # KV sessions hold entries of the request pool (sized by max_running_requests) between turns:
                # a pool with room for every trajectory's session, the running requests capped at `rows`
                out.update(max_running_requests=rows + max_concurrency, pp_max_micro_batch_size=rows)
            else:
                out["max_running_requests"] = rows
    if "enable_priority_scheduling" in fields and "enable_priority_scheduling" not in out \
            and out.get("schedule_policy", "fcfs") in ("fcfs", "lof"):
        out = {**PRIORITY_SCHEDULING, **out}   # a user's setting of the others is kept
    if PREFILL_DELAYER.keys() <= fields and "enable_prefill_delayer" not in out \
            and not out.get("disable_overlap_schedule") and (out.get("dp_size") or 1) == 1:
        out = {**PREFILL_DELAYER, **out}   # a user's delayer setting (e.g. its passes) is kept
    if PREFILL_GRAPH_OFF.keys() <= fields and not PREFILL_GRAPH_OFF.keys() & out.keys():
        out.update(PREFILL_GRAPH_OFF)
    return out


def server_args_kwargs(model_path: str, mem_fraction_static: float = 0.4, context_length: Optional[int] = None,
                       seed: Optional[int] = None, dtype: Any = None, enable_memory_saver: bool = True,
                       engine_kwargs: Optional[Dict[str, Any]] = None, max_concurrency: Optional[int] = None,
                       scheduler_patches: Any = True) -> Dict[str, Any]:
    """The kwargs of sglang's `ServerArgs` our engine starts with: `sglang.Engine(**kwargs)` in this process
    (`SGLangEngine`), `ServerArgs(**kwargs)` in a server process of its own (`engines/sglang_server.py`, which adds
    only the server's own keys). Token ids in and out (`skip_tokenizer_init`), the memory saver (release/resume), and
    `scheduling_kwargs` over the user's `engine_kwargs` (for the installed sglang's ServerArgs fields), and on
    `device=cpu` sglang's `sleep_on_idle` unless the user set it. Refuses
    SGLANG_RETURN_ORIGINAL_LOGPROB (a server process inherits it too); warns where `enable_mixed_chunk` is set without
    the scheduler patch that lets it act (`scheduler_patches`: as `rollout.scheduler_patches`)."""
    if os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true", "yes"):
        raise RuntimeError("SGLANG_RETURN_ORIGINAL_LOGPROB is set: sglang would return temperature-1 log-probs, "
                           "not log_softmax(logits / T) of the sampling policy; unset it")
    try:
        from sglang.srt.server_args import ServerArgs
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("rollout.engine=sglang / sglang-server needs the `sglang` package (GPU hosts; see "
                          "/work/shared/gpu)") from e
    kwargs: Dict[str, Any] = dict(model_path=model_path, skip_tokenizer_init=True,
                                  mem_fraction_static=mem_fraction_static,
                                  enable_memory_saver=enable_memory_saver)
    if context_length:
        kwargs["context_length"] = int(context_length)
    if seed is not None:
        kwargs["random_seed"] = int(seed)
    if dtype is not None:
        kwargs["dtype"] = str(dtype).replace("torch.", "")
    fields = {f.name for f in dataclasses.fields(ServerArgs)}
    kwargs.update(scheduling_kwargs(max_concurrency, engine_kwargs or {}, fields))
    if str(kwargs.get("device") or "").lower() == "cpu" and "sleep_on_idle" in fields:
        # sglang's idle scheduler polls its sockets in a busy loop, a whole core per engine (sglang 0.5.17): on a CPU
        # that core is the one the actor's passes, a second engine or the tools need; waiting on the sockets instead
        # wakes on the next request as soon (a user's own setting wins)
        kwargs.setdefault("sleep_on_idle", True)
    if kwargs.get("enable_streaming_session") and "enable_streaming_session" not in fields:
        raise RuntimeError("rollout.kv_sessions needs sglang's streaming sessions (sglang >= 0.5.17); the installed "
                           "sglang has no enable_streaming_session")
    if kwargs.get("enable_mixed_chunk"):
        from agent_rl.engines.sglang_patches import selected

        if "mixed_logprob" not in selected(scheduler_patches):
            log.warning(MIXED_CHUNK_IGNORED)
    return kwargs


def streaming_sessions_available() -> bool:
    """Whether the installed sglang can keep KV sessions (`enable_streaming_session`, sglang >= 0.5.17)."""
    try:
        from sglang.srt.server_args import ServerArgs
    except Exception:   # noqa: BLE001 - no usable sglang: no sessions
        return False
    return "enable_streaming_session" in {f.name for f in dataclasses.fields(ServerArgs)}


def pool_info(state: Dict[str, Any], server_args: Any) -> Dict[str, Optional[int]]:
    """What `KVSessions` reads from a running sglang: its scheduler's `state` (get_internal_state) and its server
    args (ServerArgs, or a server's `/server_info` dict)."""
    return {"pool": int(state["effective_max_running_requests_per_dp"]),
            "running_cap": _arg(server_args, "pp_max_micro_batch_size"),
            "kv_tokens": (state.get("memory_usage") or {}).get("token_capacity")}


def _arg(obj: Any, name: str) -> Any:
    """A field of sglang's ServerArgs (or of its dict form, a server's `/server_info`); None when absent."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def scheduling_info(server_args: Any, priority_scheduling: bool, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """What bounds a decode batch: the largest CUDA-graph batch and the running-request cap (None = sglang's own,
    from the KV pool), as sglang resolved them at start; and how prefill passes run: `prefill_cuda_graph` is sglang's
    prefill-graph backend ("breakable", ...), "disabled", or None for an sglang without prefill graphs.
    `server_args`: sglang's ServerArgs, or the same as a dict (a server's `/server_info`). With `env` (the engine's
    `apply_engine_env` at start), `partial_output_every`: the tokens between a request's forced partial outputs
    (None: off)."""
    config = _arg(server_args, "cuda_graph_config") or {}
    graphs = _arg(_arg(config, "decode") or {}, "max_bs")
    for name in ("cuda_graph_max_bs_decode", "cuda_graph_max_bs"):   # unresolved args (kwargs), older sglang
        graphs = _arg(server_args, name) if graphs is None else graphs
    graphs_off = bool(_arg(server_args, "disable_cuda_graph"))
    prefill_backend, prefill_off = _arg(_arg(config, "prefill") or {}, "backend"), _arg(server_args, "disable_prefill_cuda_graph")
    prefill = None if prefill_backend is None and prefill_off is None else \
        "disabled" if prefill_off or graphs_off else str(prefill_backend or "on")
    out = {"cuda_graph_max_bs": graphs, "cuda_graph_disabled": graphs_off,
           "max_running_requests": _arg(server_args, "pp_max_micro_batch_size") or _arg(server_args, "max_running_requests"),
           "priority_scheduling": bool(priority_scheduling),
           "prefill_delayer": bool(_arg(server_args, "enable_prefill_delayer")),
           "prefill_cuda_graph": prefill}
    if out["prefill_delayer"]:   # the most decode passes it holds a prefill (None: sglang's own default)
        out["prefill_delayer_passes"] = _arg(server_args, "prefill_delayer_max_delay_passes")
    if env is not None:
        every = int(env.get("SGLANG_FORCE_STREAM_INTERVAL") or 50)   # sglang's default
        out["partial_output_every"] = every if 0 < every < PARTIAL_OUTPUTS_OFF else None
    return out


def parse_generate_output(out: Dict[str, Any], prompt_tokens: int) -> GenerateOutput:
    """sglang's generate result (in-process dict or HTTP JSON) -> GenerateOutput."""
    meta = out.get("meta_info", {}) or {}
    ids = list(map(int, out.get("output_ids") or []))
    entries = meta.get("output_token_logprobs") or []
    try:
        lps = list(map(float, map(itemgetter(0), entries)))
    except TypeError:   # a None log-prob: 0.0
        lps = [float(t[0]) if t[0] is not None else 0.0 for t in entries]
    fr = meta.get("finish_reason")
    kind = fr.get("type") if isinstance(fr, dict) else (fr or "abort")
    if kind not in ("stop", "length", "abort"):
        kind = "stop"
    if len(lps) != len(ids):   # an abort may come back with fewer log-probs than ids: keep aligned pairs
        n = min(len(lps), len(ids))
        ids, lps = ids[:n], lps[:n]
    return GenerateOutput(ids, lps, kind, prompt_tokens=int(meta.get("prompt_tokens", prompt_tokens)))


def profile_request(output_dir: str, passes: int) -> Dict[str, Any]:
    """The fields of sglang's ProfileReq for `start_profile` (both engines): CPU + GPU, no stacks or shapes (the
    trace of a few hundred passes stays tens of MB)."""
    return {"output_dir": str(output_dir), "num_steps": int(passes), "activities": ["CPU", "GPU"],
            "with_stack": False, "record_shapes": False, "profile_prefix": "agent-rl"}


def _profile_req(**fields):
    """sglang's ProfileReq (an import of sglang's internals, kept in one place)."""
    from sglang.srt.managers.io_struct import ProfileReq

    return ProfileReq(**fields)


class _Coalescer:
    """Starts the calls queued during one pass of the event loop back to back, at its end.

    When sglang's answer to a decode pass wakes many trajectories, each runs its whole turn (parse, tool, render) and
    then calls `generate`; without this their requests went out one by one, interleaved with that work. Queued here,
    they are submitted one after the other once the woken trajectories have run: sglang's tokenizer manager then does
    its per-request work in a tight loop (on a 2-core CPU with sglang 0.5.17's real tokenizer manager and a stand-in
    scheduler, 0.40 -> 0.34 ms of event-loop CPU per async turn, turn-batched unchanged; docs/benchmarks-log.md, twelfth
    session) and the scheduler receives them together, for larger prefill passes. A request waits at most one pass of
    the loop longer, and at most `max_batch` requests wait: the one that fills the batch hands it to the loop at once
    (sglang's tokenizer manager wakes its requests 16 at a time, so with it a pass rarely queues more)."""

    def __init__(self, max_batch: int = 16) -> None:
        self.max_batch = int(max_batch)
        self._queue: List[Tuple[Any, asyncio.Future]] = []
        self._handle: Optional[asyncio.Handle] = None

    def submit(self, start) -> "asyncio.Future":
        """`start()` -> an awaitable, called at the end of this loop pass; the returned future gets its result."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._queue.append((start, waiter))
        if len(self._queue) >= self.max_batch:
            self._flush()
        elif self._handle is None:
            self._handle = loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        if self._handle is not None:   # a batch filled before the end of the pass: the scheduled flush has nothing left
            self._handle.cancel()
            self._handle = None
        queue, self._queue = self._queue, []
        for start, waiter in queue:
            if waiter.done():   # its caller was cancelled before the batch started: nothing to send
                continue
            task = asyncio.ensure_future(start())
            task.add_done_callback(lambda t, w=waiter: _settle(w, t))
            waiter.add_done_callback(lambda w, t=task: t.cancel() if w.cancelled() else None)


def _request_input_class() -> Any:
    """sglang's `GenerateReqInput`, or None where sglang is not importable (the tests' stand-in engines)."""
    try:
        from sglang.srt.managers.io_struct import GenerateReqInput
    except Exception:
        return None
    return GenerateReqInput


async def _generate_to_end(tokenizer_manager: Any, request: Any) -> Dict[str, Any]:
    """The one output of a non-streaming request, its async generator driven to the end.

    `Engine.async_generate` returns the first output of `generate_request` and drops the generator, suspended
    inside its model-update reader lock; Python closes such a generator through asyncio's finalizer hook, a new task
    woken through the loop's self-pipe, for it and for the `_wait_one_response` generator inside it: two per request
    (sglang 0.5.17). Resumed once more, both return: the reader lock is released here and nothing is left to
    finalize (sglang's real tokenizer manager on a CPU, scripts/sglang_cpu: event-loop CPU per turn 0.35 -> 0.32 ms
    async, 0.26 -> 0.24 ms turn-batched)."""
    gen = tokenizer_manager.generate_request(request, None)
    out = await gen.__anext__()
    async for _ in gen:   # a non-streaming request yields once; this only runs its end
        pass
    return out


def _settle(waiter: "asyncio.Future", task: "asyncio.Future") -> None:
    """`task`'s outcome into `waiter` (the exception is always read, so none goes unreported as never retrieved)."""
    if task.cancelled():
        waiter.cancel()
        return
    error = task.exception()
    if waiter.done():
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(task.result())


class SGLangEngine(Engine):
    name = "sglang"
    eos_token_ids: List[int] = []   # the model's terminators (`model_eos_token_ids`), stop tokens of every request

    def __init__(self, model_path: str, mem_fraction_static: float = 0.4, context_length: Optional[int] = None,
                 seed: Optional[int] = None, dtype: Any = None, enable_memory_saver: bool = True,
                 engine_kwargs: Optional[Dict[str, Any]] = None, max_concurrency: Optional[int] = None,
                 log_tag: Optional[str] = None, scheduler_patches: Any = True):
        """`log_tag`: a word in each of its processes' log lines (`log_tag_config`; replicas: R0, R1, ...);
        `scheduler_patches`: sglang's scheduler processes run `sglang_patches.run_scheduler_process` with these patches
        (true: all, false: none, or their names; `sglang_patches.selected`)."""
        kwargs = server_args_kwargs(model_path, mem_fraction_static, context_length, seed, dtype, enable_memory_saver,
                                    engine_kwargs, max_concurrency, scheduler_patches)
        import sglang

        env = apply_engine_env()
        before = self._child_pids()
        with _keep_root_logging(), tagged_logs(log_tag, kwargs.get("log_level") or "error") as log_config:
            from agent_rl.engines.sglang_patches import engine_class, selected

            names = selected(scheduler_patches)
            patched = engine_class(names) if names else None
            if names and patched is None:
                from agent_rl.engines.sglang_patches import UNAVAILABLE

                log.info(UNAVAILABLE)
            engine = (patched or sglang.Engine)(**kwargs)
        self._attach(engine, model_eos_token_ids(model_path), bool(kwargs.get("enable_priority_scheduling")),
                     int(getattr(getattr(engine, "server_args", None), "tp_size", 1) or 1))
        self._own_children = self._child_pids() - before
        self.engine_env = env
        self.scheduler_patches = list(names) if patched is not None else []
        self._log_config = log_config

    @classmethod
    def wrap(cls, engine: Any, eos_token_ids: Iterable[int] = (), priority_scheduling: bool = False,
             tp_size: int = 1) -> "SGLangEngine":
        """The wrapper around `engine`, an object with sglang.Engine's interface (`async_generate`, `tokenizer_manager`)
        started elsewhere or standing in for one (tests, the CPU cost harness `bench/loop_cpu.py`)."""
        self = cls.__new__(cls)
        self._attach(engine, eos_token_ids, priority_scheduling, tp_size)
        return self

    def _attach(self, engine: Any, eos_token_ids: Iterable[int], priority_scheduling: bool, tp_size: int) -> None:
        """The wrapper's state around a started `engine` (`__init__` and `wrap`)."""
        self._engine, self.tp_size = engine, int(tp_size)
        self.scheduler_patches: List[str] = []   # engines/sglang_patches in its scheduler processes (set by __init__)
        self.eos_token_ids = [int(t) for t in eos_token_ids]
        self.priority_scheduling = bool(priority_scheduling)
        self._own_children: Set[int] = set()   # the processes sglang started (shutdown kills only these)
        self._rids: Dict[str, Tuple[str, asyncio.Event]] = {}   # our request id -> (sglang rid, done)
        self.abort_retry_s = 0.1
        self.abort_retries = 600
        self.coalesce_submits = True   # a loop pass's requests go out back to back (`_Coalescer`)
        self._coalescer = _Coalescer()
        # GenerateReqInput where the engine has sglang's tokenizer manager (`_generate_to_end`), else None:
        # requests go through `async_generate` (stand-in engines)
        tm = getattr(engine, "tokenizer_manager", None)
        self._request_input = _request_input_class() if callable(getattr(tm, "generate_request", None)) else None
        self._closed = False
        # requests with `sampling.session` continue their trajectory's sglang streaming session (`rollout.kv_sessions`,
        # engines/kv_sessions.py); needs an engine started with `enable_streaming_session`
        self._start_sessions()
        self.kv_sessions = self._kv is not None
        self.engine_env: Optional[Dict[str, str]] = None   # `apply_engine_env` at start (None: started elsewhere)
        self._log_config: Optional[str] = None   # `tagged_logs`' file, removed at shutdown

    def scheduling_info(self) -> Dict[str, Any]:
        """`scheduling_info` of the started engine's ServerArgs, and whether a loop pass's requests go out together."""
        info = scheduling_info(getattr(self._engine, "server_args", None), self.priority_scheduling, self.engine_env)
        info["coalesce_submits"] = bool(self.coalesce_submits)
        info["scheduler_patches"] = self.scheduler_patches
        return info

    @property
    def tokenizer_manager(self):
        return self._engine.tokenizer_manager

    @staticmethod
    def _child_pids() -> Set[int]:
        try:
            import psutil

            return {p.pid for p in psutil.Process().children(recursive=False)}
        except Exception:
            return set()

    # ------------------------------------------------------------------ generation
    async def generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str) -> GenerateOutput:
        return await in_session(self._kv if self.kv_sessions else None, input_ids, sampling, request_id, self._generate)

    async def _generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str,
                        session_id: Optional[str] = None, context_len: Optional[int] = None) -> GenerateOutput:
        """One request; in sglang session `session_id` (`input_ids` then extends what it holds to `context_len`)."""
        if self._closed:
            raise RuntimeError("engine is shut down")
        if request_id in self._rids:
            raise ValueError(f"request id already in flight: {request_id}")
        rid = uuid.uuid4().hex
        done = asyncio.Event()
        self._rids[request_id] = (rid, done)
        try:
            extra = {"priority": int(sampling.priority)} if self.priority_scheduling and sampling.priority is not None else {}
            if session_id is not None:
                extra["session_params"] = {"id": session_id}
            # a copy of plain ints (what the agent loop passes: checking is cheaper than converting), else converted
            ids = list(input_ids) if type(input_ids) is list and not set(map(type, input_ids)) - {int} \
                else list(map(int, input_ids))
            fields = dict(input_ids=ids, sampling_params=sampling_params_dict(sampling, self.eos_token_ids),
                          return_logprob=True, rid=rid, **extra)

            def call():
                if self._request_input is not None:
                    return _generate_to_end(self._engine.tokenizer_manager, self._request_input(**fields))
                return self._engine.async_generate(**fields)

            out = await (self._coalescer.submit(call) if self.coalesce_submits else call())
        except Exception as e:
            # sglang raises RequestAbortedError when the abort lands before the request reached the scheduler
            if type(e).__name__ == "RequestAbortedError":
                return GenerateOutput([], [], "abort", prompt_tokens=context_len or len(input_ids))
            raise
        finally:
            done.set()
            self._rids.pop(request_id, None)
        return parse_generate_output(out, context_len or len(input_ids))

    async def end_session(self, session: str) -> None:
        if self._kv is not None:
            self._kv.drop(session)

    def _start_sessions(self) -> None:
        """`self._kv` where the engine runs sglang's streaming sessions (`enable_streaming_session`), else None."""
        self._kv = None
        if not _arg(getattr(self._engine, "server_args", None), "enable_streaming_session"):
            return
        from sglang.srt.managers.io_struct import CloseSessionReqInput, OpenSessionReqInput

        tm = self._engine.tokenizer_manager

        async def open_session(sid: str) -> None:
            got = await tm.open_session(OpenSessionReqInput(capacity_of_str_len=CAPACITY, session_id=sid,
                                                            streaming=True), None)
            if got != sid:
                raise RuntimeError(f"sglang did not open session {sid} (answered {got!r})")

        async def close_session(sid: str) -> None:
            await tm.close_session(CloseSessionReqInput(session_id=sid), None)

        async def pool_size() -> Dict[str, Optional[int]]:
            states = await tm.get_internal_state()
            return pool_info(states[0] if isinstance(states, list) else states, self._engine.server_args)

        self._kv = KVSessions(open_session, close_session, pool_size)

    def session_stats(self) -> Optional[Dict[str, int]]:
        """The sessions' counts (`KVSessions.stats`) where the engine runs them, else None."""
        return self._kv.stats() if self._kv is not None else None

    # ------------------------------------------------------------------ profile
    async def start_profile(self, output_dir: str, passes: int) -> None:
        """sglang's torch profiler in the scheduler process (`TokenizerManager.start_profile`; `Engine.start_profile`
        runs its own event loop): the next `passes` forward passes, a Chrome trace in `output_dir`."""
        await self.tokenizer_manager.start_profile(_profile_req(**profile_request(output_dir, passes)))

    async def stop_profile(self) -> None:
        await self.tokenizer_manager.stop_profile()

    async def abort(self, request_id: str) -> None:
        entry = self._rids.get(request_id)
        if entry is None:
            return
        rid, done = entry
        tm = self.tokenizer_manager
        # sglang drops an abort that finds no request: before the tokenizer manager registered the rid, and
        # (seen on sglang 0.5.17) right after it sent the request, while the scheduler had not queued it yet.
        # So: send the abort once the rid is known and repeat it until the request has ended.
        for _ in range(self.abort_retries):
            if rid in tm.rid_to_state:
                tm.abort_request(rid=rid)
            try:
                await asyncio.wait_for(asyncio.shield(done.wait()), timeout=self.abort_retry_s)
                return
            except asyncio.TimeoutError:
                continue
        log.warning("abort of %s (rid %s) did not end the request", request_id, rid)

    # ------------------------------------------------------------------ weights and memory
    async def update_weights(self, named_tensors: Iterable[Tuple[str, torch.Tensor]], flush_cache: bool = True) -> None:
        from sglang.srt.managers.io_struct import UpdateWeightsFromTensorReqInput
        from sglang.srt.utils import MultiprocessingSerializer

        items = [(n, t.detach()) for n, t in named_tensors]
        if not items:
            return
        payload = MultiprocessingSerializer.serialize(items)
        obj = UpdateWeightsFromTensorReqInput(serialized_named_tensors=[payload] * self.tp_size,
                                              load_format=None, flush_cache=flush_cache)
        success, message = await self.tokenizer_manager.update_weights_from_tensor(obj, None)
        if not success:
            raise RuntimeError(f"sglang update_weights_from_tensor failed: {message}")

    async def flush_cache(self) -> bool:
        """Empty the radix cache; sglang flushes only when no request runs, so it is asked to wait up to
        `FLUSH_WAIT_S` for requests still leaving the scheduler (just aborted ones) where it can (0.5.17's
        `timeout_s`). False (logged) when it did not flush."""
        tm = self.tokenizer_manager
        if self._kv is not None:   # the sessions' KV is the old policy's: closed first (sglang would drop their slots)
            await self._kv.close_all()
        if "timeout_s" in inspect.signature(tm.flush_cache).parameters:
            ret = await tm.flush_cache(timeout_s=FLUSH_WAIT_S)
        else:
            ret = await tm.flush_cache()
        ok = bool(getattr(ret, "success", True))
        if not ok:
            log.warning("sglang flush_cache did not run (requests in flight?): %s", getattr(ret, "message", ""))
        return ok

    async def release_memory(self) -> None:
        from sglang.srt.managers.io_struct import ReleaseMemoryOccupationReqInput

        if self._kv is not None:   # their KV does not survive the release
            await self._kv.close_all()

        await self.tokenizer_manager.release_memory_occupation(ReleaseMemoryOccupationReqInput(tags=list(MEMORY_TAGS)), None)

    async def resume_memory(self) -> None:
        from sglang.srt.managers.io_struct import ResumeMemoryOccupationReqInput

        await self.tokenizer_manager.resume_memory_occupation(ResumeMemoryOccupationReqInput(tags=list(MEMORY_TAGS)), None)

    # ------------------------------------------------------------------ shutdown
    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for request_id in list(self._rids):
            await self.abort(request_id)
        if self._log_config:
            with contextlib.suppress(OSError):
                os.unlink(self._log_config)
        others = self._child_pids() - self._own_children
        loop = asyncio.get_running_loop()
        if not others:
            await loop.run_in_executor(None, self._engine.shutdown)
        else:   # sglang's shutdown ends every child of this process: another engine's (a replica's) too
            # its watchdog would take our ending its children for a crash and SIGQUIT this process (sglang 0.5.17)
            watchdog = getattr(getattr(self._engine, "tokenizer_manager", None), "_subprocess_watchdog", None)
            if watchdog is not None and callable(getattr(watchdog, "stop", None)):
                watchdog.stop()
            await loop.run_in_executor(None, self._kill_own_children)
        remove_ipc_socket_files(getattr(self._engine, "port_args", None))

    def _kill_own_children(self) -> None:
        import psutil

        procs = []
        for pid in self._own_children:
            try:
                p = psutil.Process(pid)
                procs += p.children(recursive=True) + [p]
            except psutil.NoSuchProcess:
                pass
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
