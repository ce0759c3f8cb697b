"""run_bounded starts a tool call's task eagerly where Python has eager tasks (3.12+, tool_runtime/bounded.py): a call
that finishes without waiting takes no trip through the event loop; one that waits keeps the time limit,
cancellation and containment it always had (the `eager_tool_tasks` fixture: tests/conftest.py)."""
import asyncio
import time

import pytest

from agent_rl.tool_runtime.bounded import ToolBaseException, ToolTimeout, run_bounded
from agent_rl.tool_runtime.runtime import ToolRuntime
from tool_fakes import ScriptedTool

pytestmark = pytest.mark.timeout(30)


def _loop_turned():
    """A flag that the event loop sets the next time it runs its ready callbacks."""
    flag = {"turned": False}
    asyncio.get_running_loop().call_soon(flag.__setitem__, "turned", True)
    return flag


async def test_a_call_that_does_not_wait_returns_without_a_loop_iteration(eager_tool_tasks):
    async def instant():
        return 42

    flag = _loop_turned()
    assert await run_bounded(instant, timeout=5) == 42
    assert not flag["turned"]


async def test_an_instant_tool_call_goes_on_without_a_loop_iteration(eager_tool_tasks):
    rt = ToolRuntime([ScriptedTool("echo")])
    async with rt.session("t0", {}) as s:
        flag = _loop_turned()
        rec = await s.call("echo", {"x": 1})
        assert rec.status == "ok" and rec.observation == "echo {'x': 1}"
        assert not flag["turned"]


async def test_first_step_failures_are_contained_as_from_a_task(eager_tool_tasks):
    async def exits():
        raise SystemExit(3)

    async def cancels_itself():
        raise asyncio.CancelledError()

    async def raises():
        raise ValueError("bad")

    with pytest.raises(ToolBaseException):
        await run_bounded(exits, timeout=5)
    with pytest.raises(RuntimeError, match="cancelled"):
        await run_bounded(cancels_itself, timeout=5)
    with pytest.raises(ValueError, match="bad"):
        await run_bounded(raises, timeout=5)


async def test_the_time_limit_counts_the_first_step():
    async def slow_start():
        time.sleep(0.3)                # blocking work before the first wait
        await asyncio.sleep(0.2)
        return "late"

    t0 = time.perf_counter()
    with pytest.raises(ToolTimeout):
        await run_bounded(slow_start, timeout=0.4)
    assert time.perf_counter() - t0 < 0.45


async def test_a_tool_with_its_own_asyncio_timeout_cancels_only_itself():
    """asyncio.timeout (and aiohttp's timers) cancel the task current when they were entered: the tool's task, also
    when its first step ran eagerly inside run_bounded."""
    async def own_timeout():
        async with asyncio.timeout(0.05):
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        await run_bounded(own_timeout, timeout=5)
    assert await run_bounded(lambda: asyncio.sleep(0.01, result="still here"), timeout=5) == "still here"


async def test_cancelling_the_caller_reaches_the_waiting_tool():
    seen = []

    async def waits():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    caller = asyncio.ensure_future(run_bounded(waits, timeout=30))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert seen == ["cancelled"]
