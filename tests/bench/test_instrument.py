import asyncio

from agent_rl.bench.instrument import InstrumentedEngine, busy_seconds, trace_summary
from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams


class SleepEngine(Engine):
    name = "sleep"

    async def generate(self, input_ids, sampling, request_id):
        await asyncio.sleep(0.01 * sampling.max_new_tokens)
        return GenerateOutput([1] * sampling.max_new_tokens, [0.0] * sampling.max_new_tokens, "length")

    async def abort(self, request_id):
        pass

    async def update_weights(self, named_tensors):
        pass


def test_busy_seconds_union():
    assert busy_seconds([(0, 1), (0.5, 2), (3, 4)], 0, 10) == 3
    assert busy_seconds([(0, 1), (3, 5)], 0.5, 4) == 1.5
    assert busy_seconds([], 0, 1) == 0


async def test_instrumented_engine_records_busy_and_idle():
    eng = InstrumentedEngine(SleepEngine())
    trace = eng.reset()
    sp = SamplingParams(max_new_tokens=5)
    await asyncio.gather(eng.generate([1], sp, "a"), eng.generate([1, 2], sp, "b"))
    await asyncio.sleep(0.1)
    await eng.generate([1], sp, "c")
    wall = trace.events[-1][0] + 0.0
    s = trace_summary(trace, wall)
    assert len(trace.busy) == 2 and s["engine_requests"] == 3 and s["engine_output_tokens"] == 15
    assert 0.09 < s["engine_idle_s"] < 0.2
    assert max(n for _, n in trace.events) == 2
