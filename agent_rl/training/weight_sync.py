"""Actor -> engine weight sync: full (gathered) parameters by HF name, in size-bounded buckets.

With FSDP2 each parameter is a sharded DTensor; `full_tensor()` is a collective, so EVERY rank iterates
the same parameters in the same order, and only ranks that own an engine push the buckets.
Tied embeddings: `lm_head.weight` is sent only when the model does not tie it to the input embedding.
A LoRA actor sends merged weights (base + scaling * B @ A) under the base model's names, never adapter tensors.

An engine that cannot take tensors (`http`: an external SGLang server, `sglang-server`: one we started) loads the
weights from disk instead:
`sync_weights_from_disk` writes an HF folder that the server reads through `update_weights_from_disk`.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

import torch

from agent_rl.training import dist as D
from agent_rl.training.hf_folder import save_hf_model, tied_embeddings
from agent_rl.training.lora import is_peft, iter_merged_params

NamedTensors = List[Tuple[str, torch.Tensor]]


def _module(actor) -> torch.nn.Module:
    """The HF model of an Actor, or the module itself (an HF CausalLM also has a `.model`: its backbone)."""
    return actor if isinstance(actor, torch.nn.Module) else actor.model


def iter_full_params(model: torch.nn.Module, dtype: Optional[torch.dtype] = None
                     ) -> Iterator[Tuple[str, torch.Tensor]]:
    """(HF name, full tensor) for every parameter, gathered when sharded, cast to `dtype`. A LoRA (peft) model
    yields its merged weights under the base names (`lora.iter_merged_params`): the engine never sees adapters."""
    model = _module(model)
    if is_peft(model):
        yield from iter_merged_params(model, dtype)
        return
    D.reshard_all(model)  # read the (updated) shards, never a stale unsharded root
    tied = tied_embeddings(model)
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=True):
        if tied and name == "lm_head.weight":
            continue
        if id(p) in seen:
            continue
        seen.add(id(p))
        t = p.detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        yield name, (t.to(dtype) if dtype is not None else t)


def iter_weight_buckets(model, bucket_mb: float = 512, dtype: Optional[torch.dtype] = None) -> Iterator[NamedTensors]:
    """Buckets of (name, tensor) whose total bytes stay within bucket_mb (a tensor larger than the bound
    travels alone). Only one bucket of full tensors is alive at a time."""
    limit = max(1, int(bucket_mb * 1024 * 1024))
    bucket: NamedTensors = []
    size = 0
    for name, t in iter_full_params(model, dtype):
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > limit:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket


async def sync_weights(actor, engine, bucket_mb: float = 512, dtype: Optional[torch.dtype] = None) -> dict:
    """Push the actor's weights into `engine` (None on ranks without an engine: they still gather).
    Ends with engine.flush_cache(). Returns {"weight_sync/buckets", "weight_sync/bytes", "weight_sync/tensors"}."""
    n_buckets = n_bytes = n_tensors = 0
    for bucket in iter_weight_buckets(actor, bucket_mb, dtype):
        if engine is not None:
            await engine.update_weights(bucket)
        n_buckets += 1
        n_tensors += len(bucket)
        n_bytes += sum(t.numel() * t.element_size() for _, t in bucket)
        del bucket
    if engine is not None:
        await engine.flush_cache()
    return {"weight_sync/buckets": float(n_buckets), "weight_sync/bytes": float(n_bytes),
            "weight_sync/tensors": float(n_tensors)}


async def sync_weights_from_disk(actor, engine, path: str, tokenizer=None, dtype: Optional[torch.dtype] = None) -> dict:
    """The actor's weights into an engine that loads them itself (`engine.update_weights_from_disk`): every rank
    gathers (a collective); rank 0 replaces the HF folder at `path` (`hf_folder.save_hf_model`) and asks its engine
    to load it, and the ranks wait until it has. All ranks share that engine's server (`http`), or each rank has a
    server of its own (`engine.server_per_rank`: `sglang-server`) and every rank's loads it. The servers must see
    `path` and flush their prefix caches themselves. Returns {"weight_sync/bytes"} (bytes written, rank 0)."""
    path = os.path.abspath(path)  # the server resolves a relative path against its own working directory
    n_bytes = save_hf_model(_module(actor), tokenizer, path, dtype)  # collective; the folder is complete after it
    if D.get_rank() == 0 or getattr(engine, "server_per_rank", False):
        await engine.update_weights_from_disk(path)
    D.barrier()
    return {"weight_sync/bytes": float(n_bytes)}
