"""Stopping a run: the exceptions `train` ends with (`TrainError`: the run cannot go on; `TrainInterrupted`: SIGINT /
SIGTERM), the signal handlers (`StopSignals`) and the cancellation of an in-process worker's pending tasks."""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Dict, Optional


class TrainError(RuntimeError):
    """A run that cannot go on (no trajectory came back, a checkpoint cannot be read, ...)."""


class TrainInterrupted(Exception):
    """The run was stopped by a signal (SIGINT / SIGTERM); everything is closed and the summary printed.
    `exit_code` is the shell's convention, 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class StopSignals:
    """SIGINT / SIGTERM handlers for the length of a run (main thread only).

    The first signal records its number and raises KeyboardInterrupt in the main thread: it ends a blocking
    `ray.get`, an event-loop wait or plain Python code at once (a torch kernel in progress finishes first). A
    second signal, while the run is closing, exits at once (`os._exit(128 + signum)`; Ray's own processes follow
    their driver). `install` is idempotent and is called again after `ray.init`, which replaces the SIGTERM
    handler with one that calls `sys.exit` (a SystemExit inside a Ray wait aborts the process: `Aborted`)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.SIGNALS:
            if signal.getsignal(s) != self._handle:
                prev = signal.signal(s, self._handle)
                self._previous.setdefault(s, prev)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        # os.write, not print: the main thread may be inside a print of its own (a reentrant write raises)
        if self.signum is None:
            self.signum = signum
            os.write(2, (f"\n{signal.Signals(signum).name} received: stopping the run "
                         "(send it again to exit at once, without cleaning up)\n").encode())
            raise KeyboardInterrupt
        os.write(2, f"\n{signal.Signals(signum).name} received again: exiting now\n".encode())
        os._exit(128 + signum)


def _cancel_pending_tasks(loop, timeout: float = 10.0) -> None:
    """Cancel every task left on `loop` by an interrupted `run_until_complete` (trajectories, tool calls, the hf
    engine's batch loop) and let them unwind, so that their tool sessions are released."""
    import asyncio

    if loop is None or loop.is_closed() or loop.is_running():
        return
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
