"""The frozen reference policy for the KL loss. Its parameters can live on CPU between uses
(`ref.offload`): they move to the accelerator for `compute_ref_log_probs` and back afterwards."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from agent_rl.training.actor import compute_log_probs_with
from agent_rl.training.policy import PolicyModel


class ReferenceModel:
    def __init__(self, model_cfg, ref_cfg, *, mixed_precision: bool = True, temperature: float = 1.0,
                 device: Optional[torch.device] = None):
        self.cfg = ref_cfg
        self.temperature = temperature if temperature and temperature > 0 else 1.0
        self.policy = PolicyModel(model_cfg.path, dtype=model_cfg.dtype, mixed_precision=mixed_precision,
                                  device=device, trust_remote_code=model_cfg.trust_remote_code,
                                  gradient_checkpointing=False, remove_padding=model_cfg.remove_padding,
                                  trainable=False)
        self.model = self.policy.model
        self.model.eval()
        self.offloaded = False
        if self.cfg.offload:
            self.offload()

    @classmethod
    def from_config(cls, cfg, device=None, actor=None):
        """The reference of `cfg`; with a LoRA actor (`actor.lora.rank > 0`, `actor` given) the actor's own model
        with the adapter disabled (no second copy of the weights)."""
        if actor is not None and getattr(actor.policy, "lora", False):
            return AdapterOffReference(actor.policy, cfg.ref, temperature=cfg.rollout.sampling.temperature)
        return cls(cfg.model, cfg.ref, mixed_precision=cfg.actor.mixed_precision,
                   temperature=cfg.rollout.sampling.temperature, device=device)

    def offload(self) -> None:
        """Parameters to CPU (no-op when the compute device is the CPU)."""
        if self.policy.device.type != "cpu" and not self.offloaded:
            self.model.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.offloaded = True

    def load(self) -> None:
        if self.offloaded:
            self.model.to(self.policy.device)
            self.offloaded = False

    def compute_ref_log_probs(self, batch: Dict[str, torch.Tensor], temperature: Optional[float] = None,
                              positions: str = "all") -> torch.Tensor:
        """Reference log-probs [B, L] (CPU, fp32), same alignment as the actor's."""
        t = self.temperature if temperature is None else temperature
        self.load()
        try:
            lp, _ = compute_log_probs_with(self.policy, batch, t, self.cfg.log_prob_max_token_len_per_gpu,
                                           with_entropy=False, positions=positions)
        finally:
            if self.cfg.offload:
                self.offload()
        return lp


class AdapterOffReference:
    """The reference of a LoRA actor: the base model, i.e. the actor's model under `disable_adapter()`. It shares
    the actor's (frozen) base weights, so there is nothing to offload and nothing to load."""

    def __init__(self, policy: PolicyModel, ref_cfg, temperature: float = 1.0):
        self.cfg = ref_cfg
        self.policy = policy
        self.model = policy.model
        self.temperature = temperature if temperature and temperature > 0 else 1.0

    def offload(self) -> None:
        pass

    def load(self) -> None:
        pass

    def compute_ref_log_probs(self, batch: Dict[str, torch.Tensor], temperature: Optional[float] = None,
                              positions: str = "all") -> torch.Tensor:
        """Base-model log-probs [B, L] (CPU, fp32), same alignment as the actor's."""
        t = self.temperature if temperature is None else temperature
        with self.model.disable_adapter():
            lp, _ = compute_log_probs_with(self.policy, batch, t, self.cfg.log_prob_max_token_len_per_gpu,
                                           with_entropy=False, positions=positions)
        return lp
