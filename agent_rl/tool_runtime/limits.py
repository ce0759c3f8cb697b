"""Rate limits shared by the whole process (time-based, GCRA) and per-event-loop semaphores (one per
runtime, or one per tool name shared by the process)."""
from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Dict, Optional, Tuple


class RateLimiter:
    """At most `rate` calls per second on average, `burst` back to back. Thread- and loop-safe:
    a slot is reserved under a lock, then the caller sleeps until its slot (cancelling the wait
    gives nothing back, which keeps the bound conservative)."""

    def __init__(self, rate: float, burst: int = 1, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate, self.burst = float(rate), int(burst)
        self.interval = 1.0 / self.rate
        self._clock = clock
        self._tat = 0.0          # theoretical arrival time of the next call
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve the next slot; -> seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            allowed_at = tat - (self.burst - 1) * self.interval
            self._tat = tat + self.interval
            return max(0.0, allowed_at - now)

    async def acquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


_limiters: Dict[Tuple[str, float, int], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_rate_limiter(key: str, rate: float, burst: int = 1) -> RateLimiter:
    """The process-wide limiter for (key, rate, burst): every runtime of a tool shares it."""
    k = (key, float(rate), int(burst))
    with _limiters_lock:
        lim = _limiters.get(k)
        if lim is None:
            lim = _limiters[k] = RateLimiter(rate, burst)
        return lim


class LoopSemaphore:
    """An asyncio.Semaphore per running event loop (asyncio primitives are bound to one loop)."""

    def __init__(self, value: Optional[int]):
        self.value = value
        self._by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self) -> Optional[asyncio.Semaphore]:
        if self.value is None:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._by_loop.get(loop)
            if sem is None:
                sem = self._by_loop[loop] = asyncio.Semaphore(self.value)
            return sem


_semaphores: Dict[Tuple[str, int], LoopSemaphore] = {}


def shared_semaphore(key: str, value: int) -> LoopSemaphore:
    """The process-wide concurrency cap for (key, value): every runtime of a tool on a loop shares it."""
    k = (key, int(value))
    with _limiters_lock:
        sem = _semaphores.get(k)
        if sem is None:
            sem = _semaphores[k] = LoopSemaphore(value)
        return sem
