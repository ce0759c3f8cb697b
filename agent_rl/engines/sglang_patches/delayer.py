"""`delayer_gather`: sglang's prefill delayer (on by default here, `sglang_engine.PREFILL_DELAYER`) builds a tensor of
five numbers and all-gathers it over the scheduler's gloo group at every loop pass (0.5.17
`PrefillDelayer._gather_info`), then reads it back with a dozen tensor operations
(`_negotiate_should_allow_prefill_pure`): 8-10% of the scheduler thread on the H100, the gather 4-8 of it. Over a group
of one rank the gather returns the rank's own numbers. Patched, without the collective: where the installed sglang's
negotiation is the one this was checked against (its source's hash, `NEGOTIATE_SHA256`), the numbers come back as plain
Python values it reads the same way (`_OneRank`); elsewhere they go into the buffer the gather would fill. Same
decisions either way; groups of several ranks keep the gather.
"""
from __future__ import annotations

from typing import Any

# sha256 of sglang 0.5.17's `PrefillDelayer._negotiate_should_allow_prefill_pure` source: what it does with the gather's
# result (`[:, k]`, then `.min()` / `.max()` / `.sum()` and `.item()`), which `_OneRank` stands in for
NEGOTIATE_SHA256 = "5fc7fff0c448ad31"
_GATHER_PARAMS = ["self", "local_prefillable", "local_token_watermark_force_allow", "running_batch", "max_prefill_bs",
                  "waiting_queue_len"]



def patch() -> bool:
    """Patch `PrefillDelayer._gather_info`; False where the installed sglang has no such function of this signature."""
    from agent_rl.engines.sglang_patches import delayer_method, install, source_digest

    found = delayer_method("_gather_info", _GATHER_PARAMS)
    if not isinstance(found, tuple):
        return found
    PrefillDelayer, original = found
    import torch

    light = source_digest(getattr(PrefillDelayer, "_negotiate_should_allow_prefill_pure", None)) == NEGOTIATE_SHA256

    def _gather_info(self, local_prefillable, local_token_watermark_force_allow, running_batch=0, max_prefill_bs=0,
                     waiting_queue_len=0):
        alone = self.__dict__.get("_agent_rl_alone")
        if alone is None:   # once per delayer: one rank in its group, one row in its buffer
            alone = self._agent_rl_alone = (self._global_info_buffer.numel() == 5
                                            and torch.distributed.get_world_size(self._gather_group) == 1)
        if not alone:
            return original(self, local_prefillable, local_token_watermark_force_allow, running_batch, max_prefill_bs,
                            waiting_queue_len)
        values = (int(local_prefillable), int(local_token_watermark_force_allow), int(running_batch),
                  int(max_prefill_bs), int(waiting_queue_len))
        if light:
            return _OneRank(values)
        buffer = self._global_info_buffer
        buffer.view(-1).copy_(torch.tensor(values, dtype=torch.int64))
        return buffer[:, 0, :]

    return install(PrefillDelayer, "_gather_info", _gather_info, original)


class _Value:
    """One rank's number where sglang's negotiation reads a column of the gathered tensor: the min, max and sum of one
    value are the value, `.item()` gives it."""
    __slots__ = ("value",)

    def __init__(self, value: int):
        self.value = value

    def min(self) -> "_Value":
        return self

    max = sum = min

    def item(self) -> int:
        return self.value


class _OneRank:
    """The gather's result over one rank (`[:, k]` = column k), as sglang 0.5.17's negotiation reads it."""
    __slots__ = ("values",)

    def __init__(self, values: tuple):
        self.values = values

    def __getitem__(self, key: Any) -> _Value:
        rows, column = key
        if rows != slice(None):
            raise IndexError(f"one rank's gathered numbers are read by column, not {key!r}")
        return _Value(self.values[column])
