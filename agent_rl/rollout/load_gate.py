"""Spare-capacity gate for over-sampled extra groups.

An over-sampled step launches more groups than it keeps. Started all at once, the extras make every decode
batch bigger, so on a throughput-bound engine the groups the step needs finish later (measured on an H200:
docs/benchmarks-log.md). With a gate, an extra trajectory starts only while fewer than `limit` trajectories of the
step are running: the kept groups' trajectories count from launch, extras from admission, each until it ends.
Extras are admitted first come, first served, in launch order; once started a trajectory runs to its end.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Deque


class LoadGate:
    def __init__(self, limit: int, running: int = 0):
        self.limit = limit
        self.running = running      # trajectories of the step that started (or will start unconditionally) and not ended
        self.admitted = 0           # extras let in
        self._waiters: Deque[asyncio.Future] = collections.deque()

    async def admit(self) -> None:
        """Wait until an extra trajectory may start; it then counts as running until `ended()`."""
        if not self._waiters and self.running < self.limit:
            self.running += 1
            self.admitted += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():   # admitted, then cancelled before it could start
                self.ended()
            raise

    def ended(self) -> None:
        """A counted trajectory ended (finished, aborted or cancelled): admit waiting extras while there is room."""
        self.running -= 1
        while self._waiters and self.running < self.limit:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self.running += 1
            self.admitted += 1
            fut.set_result(None)
