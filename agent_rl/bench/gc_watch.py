"""Python's garbage collections while a benchmark mode runs (JSON `gc` per mode).

A collection stops every thread of the process (it holds the GIL), the event loop's included, and a full one walks
every tracked object: in a trainer process with torch, transformers and sglang loaded that is hundreds of thousands
of objects (60 ms a full collection for 216k of them on a 2-core CPU). Rollout steps allocate many short-lived
containers (sglang's per-token log-prob tuples, our messages), so whether collections take a visible share of a step
is a measured figure, not a guess: `gc.freeze()` after start-up is the remedy sglang documents, if it does.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Dict, Optional


class GcWatch:
    """Counts and times the collections of each generation between `start()` and `stop()` (process-wide: a collection
    runs in whichever thread allocated, one at a time)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest_s = 0.0
        self.objects_at_start = 0
        self._t0: Optional[float] = None

    def _callback(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        if self._t0 is None:   # installed during a collection: its start was not seen
            return
        took, self._t0 = time.perf_counter() - self._t0, None
        gen = min(max(int(info.get("generation", 0)), 0), 2)
        self.collections[gen] += 1
        self.seconds[gen] += took
        self.longest_s = max(self.longest_s, took)

    def start(self) -> "GcWatch":
        self.objects_at_start = len(gc.get_objects())   # what a full collection walks (less any frozen objects)
        gc.callbacks.append(self._callback)
        return self

    def stop(self) -> Dict[str, Any]:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        return {"collections": list(self.collections), "seconds": [round(s, 6) for s in self.seconds],
                "total_s": round(sum(self.seconds), 6), "longest_s": round(self.longest_s, 6),
                "tracked_objects": self.objects_at_start, "frozen_objects": gc.get_freeze_count()}
