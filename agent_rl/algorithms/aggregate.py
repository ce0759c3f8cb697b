"""Loss aggregation over a [B, L] matrix of per-token losses under a mask.

Modes (as verl): `token-mean` (every masked token counts the same), `seq-mean-token-sum`
(sum over a sequence's tokens, mean over sequences), `seq-mean-token-mean` (mean over a sequence's
tokens, mean over sequences). Sequences without masked tokens are not counted.

`global_tokens` / `global_seqs` replace the local denominators: with them, a micro-batch returns its
share of the mini-batch loss, so the shares of all micro-batches (and ranks) add up to the loss of the
whole mini-batch (gradient accumulation equals one big batch).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              global_tokens: Optional[float] = None, global_seqs: Optional[float] = None) -> torch.Tensor:
    """The rows' numerators over their denominators (`row_terms`); `global_tokens` (token-mean) or `global_seqs`
    (the seq-mean modes) replaces the local denominator."""
    num, den = row_terms(values, mask, mode)
    glob = global_tokens if mode == "token-mean" else global_seqs
    denom = den.sum().clamp(min=1) if glob is None else max(float(glob), 1.0)
    return num.sum() / denom


def row_terms(values: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> Tuple[torch.Tensor, torch.Tensor]:
    """Per row [B]: its numerator and denominator in `aggregate(values, mask, mode)` over any set of rows R,
    aggregate = sum_R num / sum_R den (token-mean: token sum / token count; seq-mean-token-sum: token sum / 1;
    seq-mean-token-mean: token mean / 1; a row without masked tokens: 0 / 0). Sums of these over micro-batches,
    mini-batches and ranks give the aggregate of a subset of rows over a whole update (per-objective KL)."""
    m = mask.to(values.dtype)
    # where() rather than multiply: a masked-out inf/nan must not leak into the sum
    summed = torch.where(m > 0, values, torch.zeros_like(values)).sum(-1)
    tokens = m.sum(-1)
    if mode == "token-mean":
        return summed, tokens
    has = (tokens > 0).to(values.dtype)
    if mode == "seq-mean-token-sum":
        return summed, has
    if mode == "seq-mean-token-mean":
        return summed / tokens.clamp(min=1), has
    raise ValueError(f"unknown loss_agg_mode {mode!r} ({' | '.join(AGG_MODES)})")
