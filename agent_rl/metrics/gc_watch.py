"""Python's garbage collections in this process: per benchmark mode (JSON `gc`, `agent-rl bench`) and per training
step (`perf/gc_s`, `perf/gc_full_collections`, each worker).

A collection stops every thread of the process (it holds the GIL), the event loop's included, and a full one walks
every tracked object: in a trainer process with torch, transformers and sglang loaded that is ~760k objects, 0.45-0.97
s a full collection on the H200 host (docs/benchmarks-log.md, twelfth session). Rollout steps allocate many short-lived
containers, so whether collections take a visible share of a step is a measured figure, not a guess
(`rollout/frozen_heap.py` keeps full collections off the heap from before a rollout step).
"""
from __future__ import annotations

import gc
import time
from typing import Any, Dict, Optional


class GcWatch:
    """Counts and times the collections of each generation while installed (`start()` .. `stop()`; `take()` reads and
    restarts the counts). Process-wide: a collection runs in whichever thread allocated, one at a time."""

    def __init__(self) -> None:
        self.objects_at_start = 0
        self._t0: Optional[float] = None
        self._reset()

    def _reset(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest_s = 0.0

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

    def start(self, count_objects: bool = True) -> "GcWatch":
        """Install; with `count_objects`, first count the tracked objects (what a full collection walks, less any
        frozen ones; a walk of the heap, tens of ms on a trainer's)."""
        self.objects_at_start = len(gc.get_objects()) if count_objects else 0
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def figures(self) -> Dict[str, Any]:
        return {"collections": list(self.collections), "seconds": [round(s, 6) for s in self.seconds],
                "total_s": round(sum(self.seconds), 6), "longest_s": round(self.longest_s, 6),
                "tracked_objects": self.objects_at_start, "frozen_objects": gc.get_freeze_count()}

    def take(self) -> Dict[str, Any]:
        """The figures since `start()` or the last `take()`, and the counts start again (still installed)."""
        out = self.figures()
        self._reset()
        return out

    def stop(self) -> Dict[str, Any]:
        """Uninstall (idempotent); the figures since `start()` or the last `take()`."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        return self.figures()
