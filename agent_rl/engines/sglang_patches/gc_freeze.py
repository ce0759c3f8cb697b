"""`gc_freeze`: the scheduler's start-up heap out of the garbage collector's full collections.

sglang's scheduler process holds hundreds of thousands of objects once it has started (torch, sglang's modules, the
model, its CUDA graphs), and it allocates steadily while it serves (requests, batches, their tensors' Python
wrappers), so every few thousand requests CPython runs a full collection, which walks all of them: one collection of the
scheduler stops the engine for 0.35 s on this project's CPU test engine (sglang's own GC log, `SGLANG_LOG_GC=1`,
docs/benchmarks-log.md, thirty-third session), 0.385 s on an H100, where one rollout step of every benchmark run took
that much longer (11.7 ms with this patch). sglang's own remedy is its `freeze_gc` request, sent after a warm-up;
through the in-process engine it also freezes the tokenizer manager's process, which is the trainer's own
(`rollout/frozen_heap.py` manages the collector there step by step), so this patch freezes the scheduler process alone
(the `sglang-server` engine also asks its server process for sglang's request: `engines/sglang_server.py`).

Patched, `Scheduler.run_event_loop` (entered once, after the model, the KV pool and the CUDA graphs are in place)
first collects (`gc.collect()`: no garbage is frozen) and moves every remaining object into the permanent generation
(`gc.freeze()`): later collections walk only what the scheduler allocated since. Those objects are collected as
before; the frozen ones stay for the process's life, as they would (the engine's own state). Anything in sglang that
unfreezes gives the collector back the whole heap, sglang as shipped: its CUDA-graph capture does, but only at
start-up, before the loop (releasing and resuming memory and cache flushes capture nothing; a weight update only when
asked to recapture, which agent-rl's weight sync never asks).
"""
from __future__ import annotations

import gc
import sys


def patch() -> bool:
    """Patch `Scheduler.run_event_loop`; False where the installed sglang has no such method (of `self` alone)."""
    import inspect

    from agent_rl.engines.sglang_patches import install, unpatched

    try:
        from sglang.srt.managers.scheduler import Scheduler
    except ImportError:
        return False
    original = unpatched(Scheduler, "run_event_loop")
    if isinstance(original, bool):
        return original
    if list(inspect.signature(original).parameters) != ["self"]:
        return False

    def run_event_loop(self):
        gc.collect()
        gc.freeze()
        print(f"agent-rl: sglang scheduler heap frozen: {gc.get_freeze_count()} objects", file=sys.stderr, flush=True)
        return original(self)

    return install(Scheduler, "run_event_loop", run_event_loop, original)
