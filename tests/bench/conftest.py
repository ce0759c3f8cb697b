"""A deterministic engine for bench tests: a fixed per-step decode time shared by everything in flight
(continuous batching), so concurrency and idle gaps behave like a real engine at tiny cost."""
import asyncio

from agent_rl.engines.base import Engine, GenerateOutput


class StepEngine(Engine):
    name = "step"

    def __init__(self, step_s=0.002, token=42):
        self.step_s, self.token = step_s, token
        self._aborted = set()

    async def generate(self, input_ids, sampling, request_id):
        out = []
        for _ in range(sampling.max_new_tokens):
            if request_id in self._aborted:
                return GenerateOutput(out, [0.0] * len(out), "abort", len(input_ids))
            await asyncio.sleep(self.step_s)
            out.append(self.token)
        return GenerateOutput(out, [-1.0] * len(out), "length", len(input_ids))

    async def abort(self, request_id):
        self._aborted.add(request_id)

    async def update_weights(self, named_tensors):
        pass


import pytest  # noqa: E402


@pytest.fixture
def step_engine():
    return StepEngine()
