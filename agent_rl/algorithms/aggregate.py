"""Loss aggregation over a [B, L] matrix of per-token losses under a mask.

Modes (as verl): `token-mean` (every masked token counts the same), `seq-mean-token-sum`
(sum over a sequence's tokens, mean over sequences), `seq-mean-token-mean` (mean over a sequence's
tokens, mean over sequences). Sequences without masked tokens are not counted.

`global_tokens` / `global_seqs` replace the local denominators: with them, a micro-batch returns its
share of the mini-batch loss, so the shares of all micro-batches (and ranks) add up to the loss of the
whole mini-batch (gradient accumulation equals one big batch).
"""
from __future__ import annotations

from typing import Optional

import torch

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              global_tokens: Optional[float] = None, global_seqs: Optional[float] = None) -> torch.Tensor:
    m = mask.to(values.dtype)
    # where() rather than multiply: a masked-out inf/nan must not leak into the sum
    masked = torch.where(m > 0, values, torch.zeros_like(values))
    if mode == "token-mean":
        denom = m.sum().clamp(min=1) if global_tokens is None else max(float(global_tokens), 1.0)
        return masked.sum() / denom
    tok_per_seq = m.sum(-1)
    has = tok_per_seq > 0
    denom = has.sum().clamp(min=1) if global_seqs is None else max(float(global_seqs), 1.0)
    if mode == "seq-mean-token-sum":
        return masked.sum(-1).sum() / denom
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / tok_per_seq.clamp(min=1)).sum() / denom
    raise ValueError(f"unknown loss_agg_mode {mode!r} ({' | '.join(AGG_MODES)})")
