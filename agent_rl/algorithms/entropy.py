"""Token log-probs and entropy from logits, computed in chunks of rows to bound memory.

The vocabulary dimension dominates (logits of 8k tokens x 150k vocab are 4.8 GB in fp32): each chunk
is upcast to fp32 on its own, and under autograd each chunk is recomputed in backward (activation
checkpointing) so only the logits themselves are kept.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.utils.checkpoint import checkpoint

from agent_rl.algorithms.aggregate import aggregate


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - sum softmax(z) z over the last dim (fp32)."""
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    return lse - (torch.softmax(z, dim=-1) * z).sum(-1)


def _chunk_stats(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                 with_entropy: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1)
    logp = torch.gather(z, -1, labels.unsqueeze(-1)).squeeze(-1) - lse
    if with_entropy:
        ent = lse - (torch.softmax(z, dim=-1) * z).sum(-1)
    else:
        ent = torch.zeros_like(logp)
    return logp, ent


def logprobs_and_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                         with_entropy: bool = True, chunk_size: int = 1024
                         ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """logits [N, V], labels [N] -> (log softmax(logits / T)[label] [N], entropy [N] or None)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for log-probs")
    n = logits.shape[0]
    lps, ents = [], []
    use_ckpt = torch.is_grad_enabled() and logits.requires_grad and n > chunk_size
    for s in range(0, n, chunk_size):
        args = (logits[s:s + chunk_size], labels[s:s + chunk_size], temperature, with_entropy)
        lp, ent = checkpoint(_chunk_stats, *args, use_reentrant=False) if use_ckpt else _chunk_stats(*args)
        lps.append(lp)
        ents.append(ent)
    logp = torch.cat(lps) if lps else logits.new_zeros(0, dtype=torch.float32)
    ent = (torch.cat(ents) if ents else logits.new_zeros(0, dtype=torch.float32)) if with_entropy else None
    return logp, ent


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, coef: float, agg_mode: str = "token-mean",
                  global_tokens: Optional[float] = None, global_seqs: Optional[float] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(term to ADD to the loss = -coef * agg(entropy), agg(entropy))."""
    ent = aggregate(entropy, mask, agg_mode, global_tokens, global_seqs)
    return -coef * ent, ent
