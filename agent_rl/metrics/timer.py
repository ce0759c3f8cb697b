"""Phase timing: `with timer("rollout"): ...` records `timing/rollout_s` (summed when a phase repeats)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator


class PhaseTimer:
    def __init__(self) -> None:
        self.times: Dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            key = f"timing/{phase}_s"
            self.times[key] = self.times.get(key, 0.0) + time.perf_counter() - t0

    def pop(self) -> Dict[str, float]:
        out, self.times = self.times, {}
        return out
