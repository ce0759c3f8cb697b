"""A loop pass's generate requests to sglang's scheduler in one message (`SGLangEngine.batch_dispatch`, off by default).

sglang 0.5.17's tokenizer manager sends each request to its scheduler process on its own, through
`TokenizerManager._dispatch_to_scheduler(obj)` (aborts and control messages go the same way). At a turn boundary the
scheduler then receives the boundary's requests over several of its loop iterations and starts with a small prefill
pass (its log: `#new-seq: 3`, then `#new-seq: 250`; docs/benchmarks.md, fourteenth session). With this wrapper on,
each `TokenizedGenerateReqInput` is held until the end of the event-loop pass and the pass's requests go out as one
`BatchTokenizedGenerateReqInput`, which the scheduler takes apart request by request
(`Scheduler.handle_batch_generate_request`, each item's pickled fields unwrapped by its request receiver). Any other
message first sends what is held, so an abort never overtakes its request. The held object is a shallow copy: the
tokenizer manager puts the original's `time_stats` back right after the call returns, the copy keeps the field as it
was to go on the wire.

Not measured on a GPU yet: a variant (`bench rollout --modes async,async@batchsend`), not a default.
"""
from __future__ import annotations

import asyncio
import copy
from typing import Any, Callable, List, Optional


def sglang_request_classes():
    """(TokenizedGenerateReqInput, BatchTokenizedGenerateReqInput) of the installed sglang, or None."""
    try:
        from sglang.srt.managers.io_struct import BatchTokenizedGenerateReqInput, TokenizedGenerateReqInput
    except Exception:
        return None
    return TokenizedGenerateReqInput, BatchTokenizedGenerateReqInput


class BatchDispatch:
    """Replaces `tm._dispatch_to_scheduler` (`install`); passes every message through until `on` is set."""

    def __init__(self, send: Callable[[Any], None], request_cls: type, batch_cls: type) -> None:
        self._send, self._request_cls, self._batch_cls = send, request_cls, batch_cls
        self._held: List[Any] = []
        self._handle: Optional[asyncio.Handle] = None
        self.on = False
        self.batches = 0      # messages of more than one request sent
        self.requests = 0     # requests sent in them

    @classmethod
    def install(cls, tm: Any) -> Optional["BatchDispatch"]:
        """The wrapper around `tm`'s dispatch, or None where `tm` has none to wrap or sglang's classes are missing."""
        classes = sglang_request_classes()
        send = getattr(tm, "_dispatch_to_scheduler", None)
        if classes is None or not callable(send):
            return None
        self = cls(send, *classes)
        tm._dispatch_to_scheduler = self
        return self

    def __call__(self, obj: Any) -> None:
        if not self.on or type(obj) is not self._request_cls:
            self.flush()
            self._send(obj)
            return
        self._held.append(copy.copy(obj))
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what is held: one request as it is, several as one batch message."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        held, self._held = self._held, []
        if len(held) == 1:
            self._send(held[0])
        elif held:
            self._send(self._batch_cls(batch=held))
            self.batches += 1
            self.requests += len(held)
