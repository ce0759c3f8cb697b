"""The sglang wrapper starts the requests of one event-loop pass back to back at its end (`_Coalescer`): order, the
batch cap, cancellation before and after the start, errors, and the switch that turns it off."""
import asyncio

import pytest

from agent_rl.engines.base import SamplingParams
from agent_rl.engines.sglang_engine import SGLangEngine


class _Recorder:
    """Stands in for sglang.Engine: logs when each request starts; answers after `hold` (an Event) is set."""

    def __init__(self, log, fail=None):
        self.log, self.fail = log, fail
        self.hold = asyncio.Event()
        self.hold.set()
        self.cancelled = []

    async def async_generate(self, input_ids, sampling_params, return_logprob=False, rid=None, **extra):
        self.log.append(("start", input_ids[0]))
        if self.fail is not None:
            raise self.fail
        try:
            await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled.append(input_ids[0])
            raise
        return {"output_ids": [9], "meta_info": {"finish_reason": {"type": "length"}, "prompt_tokens": 1,
                                                 "output_token_logprobs": [(-1.0, 9, None)]}}


SP = SamplingParams(max_new_tokens=1)


async def test_one_pass_of_requests_starts_together_after_the_work_of_the_pass():
    log = []
    eng = SGLangEngine.wrap(_Recorder(log))

    async def turn(i):
        log.append(("work", i))          # a woken trajectory's turn: parse, tool, render
        return await eng.generate([i], SP, f"r{i}")

    outs = await asyncio.gather(*(turn(i) for i in range(3)))
    assert log == [("work", 0), ("work", 1), ("work", 2), ("start", 0), ("start", 1), ("start", 2)]
    assert all(o.output_ids == [9] and o.finish_reason == "length" for o in outs)

    log.clear()
    eng.coalesce_submits = False         # off: each request starts at once
    await asyncio.gather(*(turn(i) for i in range(2)))
    assert log == [("work", 0), ("start", 0), ("work", 1), ("start", 1)]


async def test_the_request_that_fills_a_batch_starts_it_at_once():
    log = []
    eng = SGLangEngine.wrap(_Recorder(log))
    co = eng._coalescer
    co.max_batch = 2
    flush = co._flush

    def logged_flush():
        log.append(("flush", len(co._queue)))
        flush()

    co._flush = logged_flush

    async def turn(i):
        log.append(("work", i))
        return await eng.generate([i], SP, f"r{i}")

    await asyncio.gather(*(turn(i) for i in range(3)))
    # the second request fills the batch and hands it over at once; the third waits for the end of the pass
    assert log[:4] == [("work", 0), ("work", 1), ("flush", 2), ("work", 2)]
    assert ("flush", 1) in log and sorted(e for e in log if e[0] == "start") == [("start", 0), ("start", 1), ("start", 2)]


async def test_a_request_cancelled_before_its_batch_starts_is_never_sent_and_after_it_is_cancelled_in_sglang():
    log = []
    fake = _Recorder(log)
    eng = SGLangEngine.wrap(fake)
    early = asyncio.ensure_future(eng.generate([1], SP, "early"))
    kept = asyncio.ensure_future(eng.generate([2], SP, "kept"))
    await asyncio.sleep(0)               # both queued, the batch not started yet
    early.cancel()
    assert (await kept).output_ids == [9]
    with pytest.raises(asyncio.CancelledError):
        await early
    assert log == [("start", 2)] and eng._rids == {}

    fake.hold.clear()                    # a request already in sglang when its caller goes away
    late = asyncio.ensure_future(eng.generate([3], SP, "late"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert log[-1] == ("start", 3)
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    await asyncio.sleep(0)
    assert fake.cancelled == [3] and eng._rids == {}


async def test_errors_reach_the_caller_as_before():
    class RequestAbortedError(Exception):
        pass

    eng = SGLangEngine.wrap(_Recorder([], fail=RequestAbortedError("aborted before the scheduler")))
    out = await eng.generate([1, 2], SP, "a")
    assert out.finish_reason == "abort" and out.output_ids == [] and out.prompt_tokens == 2
    eng = SGLangEngine.wrap(_Recorder([], fail=RuntimeError("scheduler died")))
    with pytest.raises(RuntimeError, match="scheduler died"):
        await eng.generate([1], SP, "b")
    assert eng._rids == {}
