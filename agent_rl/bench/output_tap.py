"""How sglang's answers reach the in-process engine's tokenizer manager (JSON `engine_output_messages` /
`engine_outputs` per mode).

sglang's scheduler sends one message per decode pass that has something to report: the requests that finished in
it (and, with partial outputs on, those that reached a multiple of 50 tokens). The tokenizer manager, on our event
loop's thread, receives and unpickles each message and wakes its requests. Turn-batched ends a step's turns in
lockstep, a few large messages; async ends them one by one, many small ones. Counting both says whether the
event-loop CPU that async spends per request beyond turn-batched goes to per-message work.

The count wraps `TokenizerManager._handle_batch_output` (sglang 0.5.17; private, so the tap installs only where
that method exists and leaves every other engine alone).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple


class OutputTap:
    """Counts the output messages (and the request outputs inside them) an in-process sglang tokenizer manager
    handles. `OutputTap.install(engine)` returns None for an engine without one."""

    def __init__(self, tokenizer_manager: Any) -> None:
        self.messages = 0
        self.outputs = 0
        original = tokenizer_manager._handle_batch_output

        async def counted(recv_obj, *args, **kwargs):
            self.messages += 1
            self.outputs += len(getattr(recv_obj, "rids", None) or ())
            return await original(recv_obj, *args, **kwargs)

        tokenizer_manager._handle_batch_output = counted   # an instance attribute: the handle loop looks it up per call

    @classmethod
    def install(cls, engine: Any) -> Optional[Any]:
        """The tap of `engine`'s tokenizer manager (one per manager: a second install returns the first); of each
        replica's, counted together, for replicated engines (`engines/replicas.py`); None where there is none."""
        from agent_rl.engines.replicas import replicas_of

        taps = [t for t in map(cls._install_one, replicas_of(engine)) if t is not None]
        return None if not taps else taps[0] if len(taps) == 1 else _Taps(taps)

    @classmethod
    def _install_one(cls, engine: Any) -> Optional["OutputTap"]:
        tm = getattr(engine, "tokenizer_manager", None)
        if tm is None or not callable(getattr(tm, "_handle_batch_output", None)):
            return None
        tap = getattr(tm, "_agent_rl_output_tap", None)
        if tap is None:
            tap = tm._agent_rl_output_tap = cls(tm)
        return tap

    def counts(self) -> Tuple[int, int]:
        return self.messages, self.outputs

    @staticmethod
    def figures(before: Tuple[int, int], after: Tuple[int, int]) -> Dict[str, Any]:
        """The JSON fields of one mode from the counts at its start and end."""
        return {"engine_output_messages": after[0] - before[0], "engine_outputs": after[1] - before[1]}


class _Taps:
    """Several replicas' taps, counted together."""

    def __init__(self, taps) -> None:
        self.taps = list(taps)

    def counts(self) -> Tuple[int, int]:
        counts = [t.counts() for t in self.taps]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
