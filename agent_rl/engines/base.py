"""The engine protocol: token ids in, token ids + per-token log-probs out.

Every backend (`sglang`, `hf`, `http`) implements `Engine`. Callers never pass text: the
trained tokens are exactly the tokens the engine sampled (design decision 1).
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple

import torch


def _as_id_list(value) -> List[int]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def model_eos_token_ids(model_path: Optional[str]) -> List[int]:
    """The model's terminators: every id of `eos_token_id` (an int or a list, e.g. Llama 3's [128001, 128009]) in the
    folder's generation_config.json, then config.json (and its `text_config`), in that order, without repeats;
    [] when `model_path` is not a folder or names none. Read from the files, so a caller needs no model loaded
    (the sglang wrapper runs with `skip_tokenizer_init`, the renderer only has the tokenizer)."""
    import json
    import os

    if not model_path or not os.path.isdir(model_path):
        return []
    out: List[int] = []
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(model_path, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        found = _as_id_list(data.get("eos_token_id"))
        if isinstance(data.get("text_config"), dict):
            found += _as_id_list(data["text_config"].get("eos_token_id"))
        for t in found:
            if t not in out:
                out.append(t)
    return out


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
    affinity: Optional[str] = None  # requests with one affinity go to one engine replica (the rollout passes the GRPO
                                    # group: its turns share a prefix cache); `engines/replicas.py`, others ignore it
    session: Optional[str] = None   # the trajectory's requests carry one key: engines that keep its KV between turns
                                    # (sglang with rollout.kv_sessions, `engines/kv_sessions.py`) send only the new ids

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def copy_with(self, **changes) -> "SamplingParams":
        """A shallow copy with `changes`, as `dataclasses.replace` (which walks every field: ~2x the time; the agent
        loop makes one a turn). An unknown name raises TypeError; a subclass goes through `dataclasses.replace`."""
        if type(self) is not SamplingParams:
            return dataclasses.replace(self, **changes)
        unknown = changes.keys() - _SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"SamplingParams has no field {sorted(unknown)[0]!r}")
        new = object.__new__(SamplingParams)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


_SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))


@dataclass
class GenerateOutput:
    output_ids: List[int]
    logprobs: List[float]          # one per output id: log_softmax(logits / T)[token], the distribution sampled from
    finish_reason: str             # "stop" (EOS / stop token) | "length" | "abort"
    prompt_tokens: int = 0


class Engine(abc.ABC):
    """Async generation engine. All methods that touch the engine run on one event loop."""

    name: str = "base"
    weights_from_disk: bool = False   # it loads synced weights from an HF folder (`update_weights_from_disk`), not tensors

    @abc.abstractmethod
    async def generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str) -> GenerateOutput:
        """Generate from token ids. An aborted request returns what was generated so far with finish_reason="abort"."""

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop one in-flight request (no-op when unknown or finished)."""

    @abc.abstractmethod
    async def update_weights(self, named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> None:
        """Load new weights (HF parameter names). Callers send size-bounded buckets; call repeatedly."""

    async def end_session(self, session: str) -> None:
        """The trajectory of requests with `sampling.session == session` ended: release what the engine kept for it."""

    async def flush_cache(self) -> Optional[bool]:
        """Drop the prefix cache (after a weight update). False where the engine did not (requests still running)."""

    async def release_memory(self) -> None:
        """Free accelerator memory (KV cache, weights) while the actor trains."""

    async def resume_memory(self) -> None:
        """Re-occupy memory. Contents are NOT restored: push weights again afterwards."""

    async def shutdown(self) -> None:
        """Stop the engine and its processes."""

    async def start_profile(self, output_dir: str, passes: int) -> None:
        """Trace the engine's next `passes` forward passes into `output_dir` (Chrome trace; `bench --engine-profile`)."""
        raise NotImplementedError(f"the {self.name} engine has no profiler (sglang, sglang-server and http do)")

    async def stop_profile(self) -> None:
        """End a profile started by `start_profile` (an error when it already ended after its passes)."""
        raise NotImplementedError(f"the {self.name} engine has no profiler")
