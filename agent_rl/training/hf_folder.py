"""The HF model folder and the durable-file helpers under checkpoints and disk weight sync.

`write_hf_folder` writes model.safetensors (HF parameter names, tied weights once), config, generation config and
tokenizer; `save_hf_model` replaces a folder atomically (rank 0 writes `<path>.tmp`, then renames); the fsync
helpers make a rename survive a crash. `full_model_state_dict` gathers FSDP2 shards (a collective).
"""
from __future__ import annotations

import os
import shutil
import time
from typing import Dict, Optional

import torch

from agent_rl.training import dist as D
from agent_rl.training.ckpt_verify import CheckpointError


def fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    for d, _, files in os.walk(root):
        for f in files:
            fsync_file(os.path.join(d, f))
        fsync_dir(d)


def write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def remove_dir(path: str) -> None:
    """Rename first so a half-deleted directory never looks like a checkpoint."""
    trash = os.path.join(os.path.dirname(path), f".trash-{os.path.basename(path)}-{os.getpid()}-{time.time_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def tied_embeddings(model: torch.nn.Module) -> bool:
    """The model ties its output layer to its input embeddings (`lm_head.weight` is not a tensor of its own)."""
    cfg = getattr(model, "config", None)
    tied = getattr(cfg, "tie_word_embeddings", False)
    get_text = getattr(cfg, "get_text_config", None)
    if not tied and callable(get_text):
        tied = getattr(get_text(), "tie_word_embeddings", False)
    return bool(tied)


def full_model_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Unsharded fp32 CPU state dict (a collective under FSDP; every rank gets the full dict). A LoRA (peft) model
    gives its merged weights under the base model's names (`lora.merged_state_dict`)."""
    from agent_rl.training.lora import is_peft, merged_state_dict

    if is_peft(model):
        return merged_state_dict(model)
    D.reshard_all(model)
    if D.is_dist():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in sd.items()}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def hf_tensors(model: torch.nn.Module, sd: Dict[str, torch.Tensor], dtype: Optional[torch.dtype] = None
               ) -> Dict[str, torch.Tensor]:
    """What goes into model.safetensors: contiguous copies (cast to `dtype`), lm_head dropped when tied to the
    embedding."""
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight" and tied_embeddings(model):
            continue
        out[k] = v.to(dtype or v.dtype, copy=True).contiguous()
    return out


def write_hf_folder(model: torch.nn.Module, sd: Optional[Dict[str, torch.Tensor]], tokenizer, path: str,
                    dtype: Optional[torch.dtype] = None) -> int:
    """`path`/model.safetensors (the full state dict `sd`, cast to `dtype`; none when `sd` is None), config,
    generation config and tokenizer (when given). Returns the bytes of the tensors written."""
    from safetensors.torch import save_file

    from agent_rl.training.lora import hf_module

    model = hf_module(model)  # a LoRA model's config is its base model's (`sd` holds merged weights)
    os.makedirs(path, exist_ok=True)
    tensors = hf_tensors(model, sd, dtype) if sd is not None else {}
    if sd is not None:
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(path)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        try:
            gen.save_pretrained(path)
        except Exception:  # noqa: BLE001 - an invalid generation config must not block the checkpoint
            pass
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_hf_model(model: torch.nn.Module, tokenizer, path: str, dtype: Optional[torch.dtype] = None) -> int:
    """Replace the HF folder at `path` with the model's current weights (every rank calls this: gathering is a
    collective; rank 0 writes `<path>.tmp`, then renames it into place and removes the previous folder).
    Returns the bytes of the tensors written (0 on other ranks)."""
    sd = full_model_state_dict(model)  # collective
    nbytes = 0
    if D.get_rank() == 0:
        tmp = path.rstrip(os.sep) + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # leftover of an interrupted write
        nbytes = write_hf_folder(model, sd, tokenizer, tmp, dtype)
        fsync_tree(tmp)
        if os.path.exists(path):
            remove_dir(path)
        os.rename(tmp, path)
        fsync_dir(os.path.dirname(path))
    del sd
    D.barrier()
    return nbytes


def load_model_weights(model: torch.nn.Module, hf_dir: str) -> None:
    from safetensors.torch import load_file

    file = os.path.join(hf_dir, "model.safetensors")
    try:
        sd = load_file(file)
    except Exception as e:  # noqa: BLE001 - safetensors' errors do not name the file
        raise CheckpointError(f"{file}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              ) from None
    if tied_embeddings(model):
        sd.pop("lm_head.weight", None)
    params = dict(model.named_parameters())  # deduplicated: a tied lm_head is the embedding
    params.update({n: b for n, b in model.named_buffers() if n in sd})
    missing = set(params) - set(sd)
    unexpected = set(sd) - set(params)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {hf_dir} does not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    D.reshard_all(model)
    with torch.no_grad():
        for name, p in params.items():
            _copy_full_into(p, sd[name])


def _copy_full_into(p: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into a parameter, or into this rank's shard of a DTensor parameter."""
    if hasattr(p, "to_local"):
        from torch.distributed.tensor import distribute_tensor

        local = p.to_local()
        src = full.to(device=local.device, dtype=local.dtype)
        try:  # every rank holds the full tensor: shard it locally, no communication
            shard = distribute_tensor(src, p.device_mesh, p.placements, src_data_rank=None)
        except TypeError:  # older torch without src_data_rank
            shard = distribute_tensor(src, p.device_mesh, p.placements)
        local.copy_(shard.to_local())
    else:
        p.copy_(full.to(device=p.device, dtype=p.dtype))
