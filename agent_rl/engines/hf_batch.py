"""The running batch of the `hf` engine: its rows and their left-padded KV cache, and the per-row sampler.

`KVBatch` holds, in cache order, the rows being decoded, a `DynamicCache` [B, H, S, D] (left-padded), the
attention mask [B, S] (1 = real token), the last sampled token of each row (not yet in the cache) and its position.
`select` keeps some rows (and drops leading columns that became padding for all of them); `merge` appends the
rows of a fresh prefill. Touched only between engine steps, on the engine's executor thread.

`sample` draws one token per row with the row's own parameters; the log-prob is `log_softmax(logits / T)` of the
drawn token (T = 1 when greedy), before top-p / top-k truncation.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch


def left_pad(t: torch.Tensor, to: int, dim: int) -> torch.Tensor:
    """`t` padded with zeros on the left of `dim` to length `to`."""
    extra = to - t.shape[dim]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class KVBatch:
    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.rows: list = []
        self.cache = None
        self.mask: Optional[torch.Tensor] = None
        self.last: Optional[torch.Tensor] = None
        self.pos: Optional[torch.Tensor] = None

    def select(self, keep: List[int]) -> None:
        """Keep the rows at `keep` (indices into `rows`); none kept = empty."""
        if not keep:
            self.clear()
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.last, self.pos = self.mask[idx], self.last[idx], self.pos[idx]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[idx], layer.values[idx]
        first = int(self.mask.any(dim=0).float().argmax().item())   # leading columns padding for every row
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def merge(self, cache, mask: torch.Tensor, last: torch.Tensor, pos: torch.Tensor, rows: list) -> None:
        """Append freshly prefilled rows (their cache, mask, last token and position) after the running ones."""
        if not self.rows:
            self.cache, self.mask, self.last, self.pos, self.rows = cache, mask, last, pos, list(rows)
            return
        s = max(self.mask.shape[1], mask.shape[1])
        for old_l, new_l in zip(self.cache.layers, cache.layers):
            old_l.keys = torch.cat([left_pad(old_l.keys, s, 2), left_pad(new_l.keys, s, 2)], dim=0)
            old_l.values = torch.cat([left_pad(old_l.values, s, 2), left_pad(new_l.values, s, 2)], dim=0)
        self.mask = torch.cat([left_pad(self.mask, s, 1), left_pad(mask, s, 1)], dim=0)
        self.last = torch.cat([self.last, last])
        self.pos = torch.cat([self.pos, pos])
        self.rows = self.rows + list(rows)


def sample(logits: torch.Tensor, rows: list) -> Tuple[List[int], List[float]]:
    """One token per row (`row.sampling`: greedy / temperature / top_k / top_p; `row.generator` seeds it) and the
    log-prob of each drawn token."""
    logits = logits.float()
    temps = torch.tensor([r.sampling.temperature if not r.sampling.greedy else 1.0 for r in rows],
                         dtype=torch.float32, device=logits.device)
    scaled = logits / temps[:, None]
    logp = torch.log_softmax(scaled, dim=-1)
    tokens: List[int] = []
    for i, r in enumerate(rows):
        sp = r.sampling
        if sp.greedy:
            tok = int(torch.argmax(logits[i]).item())
        else:
            x = scaled[i].clone()
            if sp.top_k is not None and 0 < sp.top_k < x.numel():
                kth = torch.topk(x, sp.top_k).values[-1]
                x[x < kth] = float("-inf")
            if sp.top_p is not None and sp.top_p < 1.0:
                sorted_x, order = torch.sort(x, descending=True)
                probs = torch.softmax(sorted_x, dim=-1)
                drop = (probs.cumsum(-1) - probs) >= sp.top_p   # keep the smallest prefix reaching top_p
                drop[0] = False
                x[order[drop]] = float("-inf")
            # exponential race (as SGLang / vLLM): argmax(p / q), q ~ Exp(1), samples from p; much
            # cheaper on CPU than torch.multinomial over a 50k vocabulary
            probs = torch.softmax(x, dim=-1)
            q = torch.empty_like(probs).exponential_(1.0, generator=r.generator)
            tok = int(torch.argmax(probs / q).item())
        tokens.append(tok)
    idx = torch.tensor(tokens, dtype=torch.long, device=logits.device)
    lps = logp.gather(1, idx[:, None]).squeeze(1).tolist()
    return tokens, lps
