"""The engine protocol: token ids in, token ids + per-token log-probs out.

Every backend (`sglang`, `hf`, `http`) implements `Engine`. Callers never pass text: the
trained tokens are exactly the tokens the engine sampled (design decision 1).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

import torch


@dataclass
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop_token_ids: List[int] = field(default_factory=list)
    ignore_eos: bool = False  # benchmarks only
    seed: Optional[int] = None
    priority: Optional[int] = None  # scheduling hint, lower = served first (the rollout passes the group's launch
                                    # order); engines without priority scheduling ignore it

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class GenerateOutput:
    output_ids: List[int]
    logprobs: List[float]          # one per output id: log_softmax(logits / T)[token], the distribution sampled from
    finish_reason: str             # "stop" (EOS / stop token) | "length" | "abort"
    prompt_tokens: int = 0


class Engine(abc.ABC):
    """Async generation engine. All methods that touch the engine run on one event loop."""

    name: str = "base"

    @abc.abstractmethod
    async def generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str) -> GenerateOutput:
        """Generate from token ids. An aborted request returns what was generated so far with finish_reason="abort"."""

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop one in-flight request (no-op when unknown or finished)."""

    @abc.abstractmethod
    async def update_weights(self, named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> None:
        """Load new weights (HF parameter names). Callers send size-bounded buckets; call repeatedly."""

    async def flush_cache(self) -> None:
        """Drop the prefix cache (after a weight update)."""

    async def release_memory(self) -> None:
        """Free accelerator memory (KV cache, weights) while the actor trains."""

    async def resume_memory(self) -> None:
        """Re-occupy memory. Contents are NOT restored: push weights again afterwards."""

    async def shutdown(self) -> None:
        """Stop the engine and its processes."""
