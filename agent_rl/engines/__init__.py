"""Generation engines behind one async protocol (`base.Engine`).

`build_engine(rollout_cfg, model_path)` picks the backend from `rollout.engine`:

* `sglang` — in-process `sglang.Engine` (GPU, production path), `engines/sglang_engine.py`
* `sglang-server` — sglang's HTTP server in a process of its own, started with the `sglang` engine's settings, and
             the `http` client on it, `engines/sglang_server.py` (weights from disk, like `http`)
* `hf`     — transformers with our own continuous batching (CPU / tests), `engines/hf.py`
* `http`   — client of an external SGLang server at `rollout.server_url`, `engines/http.py` (it takes
             weights from disk: `training.weight_sync.sync_weights_from_disk`)
* `auto`   — `sglang` when CUDA is available and `sglang` imports, else `hf`
"""
from __future__ import annotations

import importlib.util
from typing import Any, Optional

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams

__all__ = ["Engine", "GenerateOutput", "SamplingParams", "build_engine", "resolve_engine_kind"]

KINDS = ("auto", "sglang", "sglang-server", "hf", "http")


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
    where `sglang-server` writes its server's log (default: a fresh temporary folder)."""
    kind = resolve_engine_kind(getattr(rollout_cfg, "engine", "auto"))
    if model_path == "embedded" and kind != "http":
        from agent_rl.model.prepare import prepare_embedded

        model_path = prepare_embedded(log=lambda *_: None)   # idempotent: the cached folder when prepared
    max_len = getattr(rollout_cfg, "max_model_len", None)
    if kind == "hf":
        from agent_rl.engines.hf import HFEngine

        return HFEngine(model_path, device=device, dtype=dtype, max_batch_size=getattr(rollout_cfg, "hf_max_batch_size", 64),
                        max_model_len=max_len, seed=seed)
    if kind in ("sglang", "sglang-server"):
        settings = dict(mem_fraction_static=getattr(rollout_cfg, "gpu_memory_utilization", 0.4), context_length=max_len,
                        seed=seed, dtype=dtype, engine_kwargs=dict(getattr(rollout_cfg, "engine_kwargs", None) or {}),
                        max_concurrency=getattr(rollout_cfg, "max_concurrent_trajectories", None))
        if kind == "sglang":
            from agent_rl.engines.sglang_engine import SGLangEngine

            engine = SGLangEngine(model_path, **settings)
        else:
            from agent_rl.engines.sglang_server import SGLangServerEngine

            engine = SGLangServerEngine(model_path, log_dir=log_dir, **settings)
        return engine
    from agent_rl.engines.http import HTTPEngine

    url = getattr(rollout_cfg, "server_url", None)
    if not url:
        raise ValueError("rollout.engine=http needs rollout.server_url (e.g. http://127.0.0.1:30000)")
    return HTTPEngine(url)
