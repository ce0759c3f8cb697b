"""Which linear layers a model has, for checking `actor.lora.target_modules` before anything is loaded
(the config check) and again when the adapters are applied (training/lora.py)."""
from __future__ import annotations

from typing import Iterable, List, Optional


def linear_module_names(model) -> List[str]:
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def linear_module_names_of(path: str, trust_remote_code: bool = False) -> List[str]:
    """Linear layer names of the HF model at `path`, built on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    return linear_module_names(model)


def target_modules_problem(linear_names: Iterable[str], targets) -> Optional[str]:
    """None when `targets` (`all-linear`, one name or a list of names) fits the model, else what is wrong
    (every listed name must be the last part of at least one linear layer's name, as peft matches them)."""
    if isinstance(targets, str):
        if targets == "all-linear":
            return None
        targets = [targets]
    if targets is None or not list(targets):
        return "must be all-linear or a non-empty list of module names"
    linear = list(linear_names)
    for t in targets:
        if not isinstance(t, str) or not t:
            return f"every entry must be a module name, got {t!r}"
        if not any(n == t or n.endswith("." + t) for n in linear):
            known = sorted({n.rsplit(".", 1)[-1] for n in linear})
            return f"no linear layer named {t!r} in this model (its linear layers: {', '.join(known)}; or all-linear)"
    return None
