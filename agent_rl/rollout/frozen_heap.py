"""Keep the garbage collector's full collections off the objects that exist before a rollout step.

A rollout allocates steadily (turns, messages, tool records, asyncio's futures), and the trajectories in flight survive
the young collections, so every few steps CPython runs a full collection, which walks every tracked object of the
process: in a trainer that is the actor, the in-process sglang engine, torch and transformers, hundreds of thousands
of objects, some 0.1-1 s during which the event loop feeds the engine nothing (docs/benchmarks-log.md, CPU cost of the
rollout loop). `frozen_heap()` moves the objects that exist when a step starts into the permanent generation
(`gc.freeze()`, a constant-time list move) and back when it ends (`gc.unfreeze()`): collections during the step walk
only what the step allocated, and nothing is leaked: the frozen objects are collected as usual after the step.
During the step the youngest generation is also collected every `YOUNG_THRESHOLD` net allocations instead of
CPython's 700: the trajectories in flight hold long token lists that every young collection walks again; with the
default a 64 x 4 instant-tools step ran ~50 young collections of ~5 ms each (measured by `agent-rl bench loop-cpu`).

It does nothing when the collector is disabled or something else has frozen objects (it would unfreeze those too).
CPython 3.12 starts with a few hundred objects of its own in the permanent generation (375 on 3.12.1 and on the GPU
host's 3.12.3; none on 3.11 and 3.13): those are not someone else's freeze. Until 2026-12-04 they were taken for one,
so on the GPU host no step ever ran frozen: full collections of ~760k objects stopped the event loop for 0.45-0.97 s,
one every 2-3 steps, and young collections ran every 700 allocations (docs/benchmarks-log.md, twelfth session). The
first step's unfreeze gives the interpreter's objects to the collector like everything else (a documented, safe call).
Nested or concurrent steps on one event loop share one freeze: the first in freezes, the last out unfreezes.
"""
from __future__ import annotations

import contextlib
import gc
import threading

YOUNG_THRESHOLD = 10000

_lock = threading.Lock()
_depth = 0
_ours = False
_threshold = None
_STARTUP_FROZEN = gc.get_freeze_count()   # the interpreter's own (3.12), at import: more than this is someone's freeze


@contextlib.contextmanager
def frozen_heap():
    global _depth, _ours, _threshold
    with _lock:
        if _depth == 0:
            _ours = gc.isenabled() and gc.get_freeze_count() <= _STARTUP_FROZEN
            if _ours:
                gc.freeze()
                _threshold = gc.get_threshold()
                gc.set_threshold(max(_threshold[0], YOUNG_THRESHOLD), *_threshold[1:])
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _ours:
                gc.set_threshold(*_threshold)
                gc.unfreeze()
                _ours = False
