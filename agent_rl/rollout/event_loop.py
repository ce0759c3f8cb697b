"""The event loop a rollout runs on (`rollout.event_loop`): asyncio's own, or uvloop.

Our agent loops, tool calls and, with the in-process sglang engine, sglang's tokenizer manager share one thread;
uvloop (the loop sglang's own server runs on; sglang depends on it) does the loop's scheduling, timers and I/O in C.
"asyncio" is made explicitly, whatever event-loop policy is set: importing sglang sets uvloop's, which would otherwise
decide silently by import order. On sglang 0.5.17's real tokenizer manager (scripts/sglang_cpu, a 2-core CPU) uvloop
took 4-5% less of the thread's CPU per turn; on an H200 two suites' ratios and loop CPU went both ways
(docs/benchmarks-log.md, fourteenth session), so asyncio stays the default."""
from __future__ import annotations

import asyncio

LOOPS = ("asyncio", "uvloop")


def new_event_loop(kind: str = "asyncio") -> asyncio.AbstractEventLoop:
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ValueError("rollout.event_loop=uvloop needs the uvloop package (pip install uvloop; "
                             "sglang installs it)") from None
        return uvloop.new_event_loop()
    raise ValueError(f"rollout.event_loop: {kind!r} is not one of {', '.join(LOOPS)}")
