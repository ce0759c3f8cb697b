"""Generation engines behind one async protocol (`base.Engine`).

`build_engine(rollout_cfg, model_path)` picks the backend from `rollout.engine`:

* `sglang` — in-process `sglang.Engine` (GPU, production path), `engines/sglang_engine.py`
* `sglang-server` — sglang's HTTP server in a process of its own, started with the `sglang` engine's settings, and
             the `http` client on it, `engines/sglang_server.py` (weights from disk, like `http`)
* `hf`     — transformers with our own continuous batching (CPU / tests), `engines/hf.py`
* `http`   — client of an external SGLang server at `rollout.server_url`, `engines/http.py` (it takes
             weights from disk: `training.weight_sync.sync_weights_from_disk`)
* `auto`   — `sglang` when CUDA is available and `sglang` imports, else `hf`

`rollout.engine_replicas` > 1 starts that many of the chosen engine behind one (`engines/replicas.py`).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Optional

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams
from agent_rl.engines.kv_sessions import SESSION_KINDS, needs_session_engine

__all__ = ["Engine", "GenerateOutput", "SamplingParams", "build_engine", "kv_sessions_on", "resolve_engine_kind"]

KINDS = ("auto", "sglang", "sglang-server", "hf", "http")
STARTED_SGLANG_KINDS = ("sglang", "sglang-server")   # the sglang engines this process starts


def _sglang_usable() -> bool:
    try:
        import torch

        if not torch.cuda.is_available():
            return False
    except Exception:
        return False
    return importlib.util.find_spec("sglang") is not None


def resolve_engine_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"rollout.engine must be one of {KINDS}, got {kind!r}")
    if kind == "auto":
        return "sglang" if _sglang_usable() else "hf"
    return kind


def build_engine(rollout_cfg: Any, model_path: str, device: Optional[str] = None, seed: Optional[int] = None,
                 dtype: Any = None, log_dir: Optional[str] = None) -> Engine:
    """Build the engine named by `rollout_cfg.engine` (a `RolloutConfig` or anything with its fields). `log_dir`:
    where `sglang-server` writes its server's log (default: a fresh temporary folder). With
    `rollout_cfg.engine_replicas` > 1, that many engines one after the other, behind one (`engines/replicas.py`):
    each with its share of `gpu_memory_utilization`, seeds `seed + i`, and CUDA graphs for all of
    `max_concurrent_trajectories` (routing by group can leave one replica more than its share)."""
    kind = resolve_engine_kind(getattr(rollout_cfg, "engine", "auto"))
    if model_path == "embedded" and kind != "http":
        from agent_rl.model.prepare import prepare_embedded

        model_path = prepare_embedded(log=lambda *_: None)   # idempotent: the cached folder when prepared
    replicas = int(getattr(rollout_cfg, "engine_replicas", 1) or 1)
    if replicas == 1:
        return _build_one(kind, rollout_cfg, model_path, device, seed, dtype, log_dir,
                          getattr(rollout_cfg, "gpu_memory_utilization", 0.4),
                          getattr(rollout_cfg, "max_concurrent_trajectories", None))
    from agent_rl.engines.replicas import NOT_HTTP, ReplicaEngine, replica_mem_fractions

    if kind == "http":
        raise ValueError(f"rollout.engine_replicas {NOT_HTTP}")

    fractions = replica_mem_fractions(getattr(rollout_cfg, "gpu_memory_utilization", 0.4), replicas)
    concurrency = getattr(rollout_cfg, "max_concurrent_trajectories", None)
    started: list = []
    try:
        for i, fraction in enumerate(fractions):
            started.append(_build_one(kind, rollout_cfg, model_path, device, None if seed is None else seed + i, dtype,
                                      os.path.join(log_dir, f"replica-{i}") if log_dir else None, fraction, concurrency,
                                      log_tag=f"R{i}"))
    except BaseException:
        _shutdown_started(started)
        raise
    return ReplicaEngine(started)


def _shutdown_started(engines: list) -> None:
    """Stop the replicas that started before one failed to (their GPU memory and processes)."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        for e in reversed(engines):
            try:
                loop.run_until_complete(e.shutdown())
            except Exception:   # noqa: BLE001 - the start's own error is the one to raise
                pass
    finally:
        loop.close()


def kv_sessions_on(kind: str, rollout_cfg: Any) -> bool:
    """`rollout.kv_sessions` for an engine of `kind`: true or false as set (true where the engine cannot keep them:
    an error); null (the default) means on for the sglang engines started here (sglang, sglang-server) where the
    installed sglang has streaming sessions and `engine_kwargs.enable_streaming_session` is not false, off for hf and
    http (an external server keeps them only when started with --enable-streaming-session: set true)."""
    want = getattr(rollout_cfg, "kv_sessions", None)
    if want is not None:
        if want and kind not in SESSION_KINDS:
            raise ValueError(needs_session_engine("rollout.kv_sessions", kind))
        return bool(want)
    if kind not in STARTED_SGLANG_KINDS:
        return False
    if (getattr(rollout_cfg, "engine_kwargs", None) or {}).get("enable_streaming_session") is False:
        return False
    from agent_rl.engines.sglang_engine import streaming_sessions_available

    return streaming_sessions_available()


def _build_one(kind: str, rollout_cfg: Any, model_path: str, device: Optional[str], seed: Optional[int], dtype: Any,
               log_dir: Optional[str], mem_fraction: float, max_concurrency: Optional[int],
               log_tag: Optional[str] = None) -> Engine:
    max_len = getattr(rollout_cfg, "max_model_len", None)
    sessions = kv_sessions_on(kind, rollout_cfg)
    if kind == "hf":
        from agent_rl.engines.hf import HFEngine

        return HFEngine(model_path, device=device, dtype=dtype, max_batch_size=getattr(rollout_cfg, "hf_max_batch_size", 64),
                        max_model_len=max_len, seed=seed)
    if kind in STARTED_SGLANG_KINDS:
        engine_kwargs = dict(getattr(rollout_cfg, "engine_kwargs", None) or {})
        if sessions:
            engine_kwargs["enable_streaming_session"] = True
        settings = dict(mem_fraction_static=mem_fraction, context_length=max_len, seed=seed, dtype=dtype,
                        engine_kwargs=engine_kwargs, max_concurrency=max_concurrency,
                        scheduler_patches=getattr(rollout_cfg, "scheduler_patches", True))
        if kind == "sglang":
            from agent_rl.engines.sglang_engine import SGLangEngine

            engine = SGLangEngine(model_path, log_tag=log_tag, **settings)
        else:
            from agent_rl.engines.sglang_server import SGLangServerEngine

            engine = SGLangServerEngine(model_path, log_dir=log_dir, **settings)
            if engine_kwargs.get("enable_streaming_session"):
                engine.enable_sessions()
        engine.kv_sessions = sessions   # an engine started with streaming sessions uses them only when asked
        return engine
    from agent_rl.engines.http import HTTPEngine

    url = getattr(rollout_cfg, "server_url", None)
    if not url:
        raise ValueError("rollout.engine=http needs rollout.server_url (e.g. http://127.0.0.1:30000)")
    engine = HTTPEngine(url)
    if sessions:
        engine.enable_sessions()
    return engine
