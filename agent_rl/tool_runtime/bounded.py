"""Bounded execution of tool coroutines: a time limit that never hangs (a task that ignores its cancellation is
abandoned but keeps its concurrency slots until it really ends), containment of the `BaseException`s a tool may
raise (`SystemExit`, `GeneratorExit`, ...; `KeyboardInterrupt` and cancellation still propagate), and the text
helpers for errors and responses.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any, Iterable, List, Optional


logger = logging.getLogger(__name__)


CANCEL_GRACE_S = 0.5        # how long a timed-out task gets to honour its cancellation
MAX_ERROR_DETAIL = 500      # characters of an exception message shown to the model
KWARG_KEYS = ("create_kwargs", "execute_kwargs", "calc_reward_kwargs", "release_kwargs")


class ToolTimeout(Exception):
    pass


class ToolBaseException(Exception):
    """A tool raised a BaseException that is not an Exception (SystemExit, GeneratorExit, ...): contained
    here so that it neither stops the event loop nor escapes `ToolSession.call`. `.original` holds it."""

    def __init__(self, original: BaseException):
        super().__init__(*getattr(original, "args", ()))
        self.original = original

    def __str__(self) -> str:
        return str(self.original)


async def _contained(make_coro):
    """Run `make_coro()` (also its synchronous part) and turn a foreign BaseException into an Exception.
    This must happen inside the task: asyncio re-raises SystemExit from a task out of the event loop."""
    try:
        return await make_coro()
    except (asyncio.CancelledError, KeyboardInterrupt, Exception):
        raise
    except BaseException as e:       # SystemExit, GeneratorExit, other BaseException subclasses
        raise ToolBaseException(e) from None


def _retrieve(task: "asyncio.Future") -> None:
    """Mark a finished task's outcome as retrieved (no 'exception was never retrieved' warning)."""
    if not task.cancelled():
        task.exception()


def _abandon(task: "asyncio.Future", on_abandon=None) -> None:
    """Forget a task that ignored its cancellation, without a 'never retrieved' warning; `on_abandon(task)`
    lets the owner keep its slots until the task really ends."""
    task.add_done_callback(_retrieve)
    if on_abandon is not None:
        on_abandon(task)


# Python 3.12's eager tasks run a task's first step at once, inside the new task (so `asyncio.current_task()`, which
# `asyncio.timeout` and aiohttp's timers cancel, is the tool's own task); earlier versions start it on the loop's
# next iteration.
EAGER_TASKS = sys.version_info >= (3, 12)


def _start(loop, coro) -> "asyncio.Task":
    if EAGER_TASKS:
        return asyncio.Task(coro, loop=loop, eager_start=True)
    return loop.create_task(coro)


async def run_bounded(make_coro, timeout: Optional[float], on_abandon=None):
    """Await `make_coro()` in its own task, at most `timeout` seconds. On timeout the task is
    cancelled and given CANCEL_GRACE_S to stop; a task that ignores cancellation is abandoned (handed
    to `on_abandon(task)`), so this never hangs. Raises ToolTimeout, the coroutine's exception (a
    BaseException other than KeyboardInterrupt / CancelledError as ToolBaseException), or
    CancelledError when the caller is cancelled (the inner task is cancelled too).

    On Python >= 3.12 the task starts eagerly: a call that finishes without waiting (an instant tool, a cache hit)
    is done when created and returns with no trip through the event loop, so a trajectory goes on to its next turn
    before the loop turns to the others (after a batch of turns that end together, the engine gets the next turns one
    by one instead of all at the end; docs/benchmarks-log.md). The time limit counts that first step."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = _start(loop, _contained(make_coro))
    if not task.done():
        await _wait_within(task, None if timeout is None else max(0.0, timeout - (loop.time() - started)), on_abandon)
    if task.cancelled():
        # The tool cancelled itself (nobody cancelled us): an ordinary failure.
        raise RuntimeError("the tool's task was cancelled")
    return task.result()


async def _wait_within(task: "asyncio.Task", timeout: Optional[float], on_abandon) -> None:
    """Wait for `task` at most `timeout` seconds; on timeout or the caller's cancellation, cancel it and give it
    CANCEL_GRACE_S (then raise ToolTimeout / CancelledError)."""
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
        _settle(task, on_abandon)
        raise
    if not done:
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
        except asyncio.CancelledError:
            _settle(task, on_abandon)
            raise
        _settle(task, on_abandon)
        raise ToolTimeout()


def _settle(task: "asyncio.Future", on_abandon) -> None:
    """After a cancelled wait: abandon the task if it still runs, else mark its outcome retrieved."""
    if not task.done():
        _abandon(task, on_abandon)
    else:
        _retrieve(task)


class Slots:
    """The concurrency slots one call holds. Released when the call ends, or, when the call abandoned a
    task that ignored its cancellation, only when that task really ends (so the cap is never exceeded)."""

    def __init__(self) -> None:
        self._held: List[asyncio.Semaphore] = []

    async def acquire(self, sems: Iterable[Optional[asyncio.Semaphore]]) -> None:
        for sem in sems:
            if sem is not None:
                await sem.acquire()
                self._held.append(sem)

    def hold_until_done(self, task: "asyncio.Future") -> None:
        held, self._held = self._held, []
        if held:
            task.add_done_callback(lambda _t: _release_all(held))

    def release(self) -> None:
        held, self._held = self._held, []
        _release_all(held)


def _release_all(sems: List[asyncio.Semaphore]) -> None:
    for sem in reversed(sems):
        sem.release()


def error_detail(e: BaseException) -> str:
    if isinstance(e, ToolBaseException):
        e = e.original
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text if len(text) <= MAX_ERROR_DETAIL else text[: MAX_ERROR_DETAIL - 3] + "..."


def response_text(value: Any) -> str:
    """str with any lone surrogates replaced, so the text is always encodable as UTF-8."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
