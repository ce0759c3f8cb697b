"""AdamW with linear warm-up then constant or cosine learning rate."""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch


def warmup_steps_of(warmup_steps: int, warmup_ratio: float, total_steps: Optional[int]) -> int:
    if warmup_steps > 0:
        return int(warmup_steps)
    if warmup_ratio > 0 and total_steps:
        return int(warmup_ratio * total_steps)
    return 0


def lr_factor(step: int, warmup: int, total: Optional[int], schedule: str = "constant",
              min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based): (step+1)/warmup during warm-up
    (the first step already learns), then 1 (constant) or a cosine from 1 down to min_lr_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        if not total or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {schedule!r} (constant | cosine)")


def build_optimizer(params: Iterable[torch.nn.Parameter], optim_cfg) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    kwargs = dict(lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), weight_decay=optim_cfg.weight_decay)
    try:  # foreach over DTensors is fine on recent torch; fall back when a build refuses it
        return torch.optim.AdamW(params, foreach=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg, total_steps: Optional[int]
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = warmup_steps_of(optim_cfg.warmup_steps, optim_cfg.warmup_ratio, total_steps)
    schedule, floor = optim_cfg.lr_schedule, optim_cfg.min_lr_ratio
    lr_factor(0, warmup, total_steps, schedule, floor)  # validate the schedule name now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total_steps, schedule, floor))
