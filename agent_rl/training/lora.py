"""LoRA actor (`actor.lora.*`, docs/training.md): peft adapters on the HF model, merged weights for the engine,
adapter checkpoints.

- `apply_lora` wraps the HF model with peft before FSDP2 shards it: base weights are frozen (no gradient, no
  optimizer state); only the `lora_A` / `lora_B` matrices train.
- The reference policy is the same model with the adapter disabled (`ref.AdapterOffReference`): no second copy.
- The engine never sees adapter tensors: `iter_merged_params` yields the base parameters under their HF names
  with `scaling * B @ A` added for every adapted module (gathered when sharded, a collective).
- Checkpoints hold the adapter in peft's `save_pretrained` format (`adapter_config.json` +
  `adapter_model.safetensors`); `load_adapter` restores it (into FSDP shards too).

peft is imported only when LoRA is on (`pip install agent-rl[lora]`).
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from agent_rl.training import dist as D

ADAPTER = "default"  # peft's adapter name
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class LoraError(ValueError):
    """A LoRA setting that cannot work with this model (message names the config key)."""


def lora_enabled(lora_cfg) -> bool:
    return lora_cfg is not None and int(getattr(lora_cfg, "rank", 0) or 0) > 0


def is_peft(model) -> bool:
    """A peft model (checked without importing peft)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def hf_module(model: torch.nn.Module) -> torch.nn.Module:
    """The HF causal LM inside a peft model (adapter layers injected), or the model itself."""
    return model.get_base_model() if is_peft(model) else model


def _import_peft():
    try:
        import peft
    except ImportError:
        raise LoraError("actor.lora.rank > 0 needs peft: pip install 'agent-rl[lora]' (or pip install peft)") from None
    return peft


def check_target_modules(model: torch.nn.Module, targets) -> None:
    """Every listed target names at least one linear layer of the model (peft would only fail when none does)."""
    from agent_rl.model.lora_targets import linear_module_names, target_modules_problem

    problem = target_modules_problem(linear_module_names(model), targets)
    if problem:
        raise LoraError(f"actor.lora.target_modules: {problem}")


def apply_lora(model: torch.nn.Module, lora_cfg) -> torch.nn.Module:
    """The HF model wrapped as a peft PeftModelForCausalLM: adapters on `target_modules`, base frozen."""
    peft = _import_peft()
    targets = lora_cfg.target_modules
    if not isinstance(targets, str):
        targets = list(targets)
    check_target_modules(model, targets)
    config = peft.LoraConfig(r=int(lora_cfg.rank), lora_alpha=lora_cfg.alpha, lora_dropout=float(lora_cfg.dropout),
                             target_modules=targets, bias="none", task_type="CAUSAL_LM")
    path = getattr(getattr(model, "config", None), "_name_or_path", None)
    if path:
        config.base_model_name_or_path = path
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing` property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------- merged weights
def _full(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _lora_layers(base: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """{module name in the HF model: peft LoRA layer} for every module with an active adapter."""
    out = {}
    for name, m in base.named_modules():
        if hasattr(m, "lora_A") and hasattr(m, "base_layer") and ADAPTER in getattr(m, "lora_A", {}):
            out[name] = m
    return out


_ADAPTER_PART = re.compile(r"\.(lora_[A-Za-z_]+)\.")


def iter_merged_params(model: torch.nn.Module, dtype: Optional[torch.dtype] = None, buffers: bool = False,
                       skip_tied_head: bool = True) -> Iterator[Tuple[str, torch.Tensor]]:
    """(HF name, full merged tensor) of a peft model: `X.base_layer.weight` -> `X.weight` + scaling * B @ A,
    `X.base_layer.bias` -> `X.bias`, adapter tensors left out. Every rank must call it (gathers are collectives;
    the order is the same on every rank). `buffers`: persistent buffers too (for a state dict)."""
    from agent_rl.training.hf_folder import tied_embeddings

    base = hf_module(model)
    D.reshard_all(model)
    layers = _lora_layers(base)
    deltas: Dict[str, torch.Tensor] = {}
    for name in sorted(layers):  # the small adapter matrices first (same order everywhere)
        m = layers[name]
        a = _full(m.lora_A[ADAPTER].weight).float()
        b = _full(m.lora_B[ADAPTER].weight).float()
        delta = (b @ a) * float(m.scaling[ADAPTER])
        deltas[name] = delta.T if getattr(m, "fan_in_fan_out", False) else delta
    tied = tied_embeddings(base) and skip_tied_head
    seen = set()
    items = list(base.named_parameters(remove_duplicate=True))
    if buffers:
        persistent = set(base.state_dict().keys())
        items += [(n, b) for n, b in base.named_buffers() if n in persistent]
    for name, p in items:
        if _ADAPTER_PART.search("." + name + "."):
            continue
        if id(p) in seen:
            continue
        seen.add(id(p))
        hf_name = name.replace(".base_layer.", ".")
        if tied and hf_name == "lm_head.weight":
            continue
        t = _full(p)
        owner, _, leaf = name.rpartition(".base_layer.")
        if leaf == "weight" and owner in deltas:
            t = (t.float() + deltas[owner].to(t.device)).to(t.dtype)
        yield hf_name, (t.to(dtype) if dtype is not None else t)


def merged_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The merged model's full CPU state dict with HF names (tied head dropped like `hf_tensors` would)."""
    return {n: t.cpu() for n, t in iter_merged_params(model, buffers=True)}


# ---------------------------------------------------------------------------------------------- adapter files
def adapter_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The adapter tensors, gathered (a collective), under the names peft's save_pretrained writes."""
    from peft.utils import get_peft_model_state_dict

    D.reshard_all(model)
    full = {n: _full(p).cpu().contiguous() for n, p in model.named_parameters() if "lora_" in n}
    return {k: v.contiguous() for k, v in get_peft_model_state_dict(model, state_dict=full,
                                                                     adapter_name=ADAPTER).items()}


def write_adapter(model: torch.nn.Module, sd: Dict[str, torch.Tensor], path: str) -> None:
    """`path`/adapter_config.json + adapter_model.safetensors (peft's save_pretrained layout)."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    model.peft_config[ADAPTER].save_pretrained(path)
    save_file(sd, os.path.join(path, ADAPTER_WEIGHTS), metadata={"format": "pt"})


def save_adapter(model: torch.nn.Module, path: str) -> None:
    """Gather the adapter (every rank) and write it at `path` (rank 0)."""
    sd = adapter_state_dict(model)
    if D.get_rank() == 0:
        write_adapter(model, sd, path)
    D.barrier()


def load_adapter(model: torch.nn.Module, path: str) -> None:
    """Adapter weights saved by `save_adapter` (or peft's save_pretrained) into the model, its FSDP shards too."""
    from safetensors.torch import load_file

    from agent_rl.training.ckpt_verify import CheckpointError
    from agent_rl.training.hf_folder import _copy_full_into

    file = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.isfile(file):
        raise CheckpointError(f"{file}: missing (a checkpoint written without actor.lora cannot resume a LoRA run)")
    sd = load_file(file)
    params = {n: p for n, p in model.named_parameters() if "lora_" in n}
    # peft drops the adapter name: `...q_proj.lora_A.weight` is `...q_proj.lora_A.default.weight` in the model
    wanted = {n.replace(f".{ADAPTER}.", "."): n for n in params}
    missing, unexpected = set(wanted) - set(sd), set(sd) - set(wanted)
    if missing or unexpected:
        raise CheckpointError(f"adapter {path} does not match the model (actor.lora rank / target_modules changed?): "
                              f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
    D.reshard_all(model)
    with torch.no_grad():
        for key, name in wanted.items():
            p = params[name]
            if tuple(sd[key].shape) != tuple(p.shape):
                raise CheckpointError(f"adapter {path}: {key} has shape {tuple(sd[key].shape)}, the model "
                                      f"{tuple(p.shape)} (actor.lora.rank changed?)")
            _copy_full_into(p, sd[key])


def trainable_parameters(model: torch.nn.Module) -> List[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
