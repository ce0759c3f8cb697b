"""The in-process sglang wrapper drives the tokenizer manager's request generator to its end (`_generate_to_end`).

The stand-in below has sglang 0.5.17's shape: `generate_request` is an async generator that holds the model-update
reader lock while it yields the request's one output from an inner `_wait_one_response` generator, and
`Engine.async_generate` returns its first output, dropping the generator."""
import asyncio
import contextlib
import dataclasses
import gc
import sys
from typing import Any, Dict, List, Optional

import pytest

from agent_rl.engines import sglang_engine
from agent_rl.engines.base import SamplingParams
from agent_rl.engines.sglang_engine import SGLangEngine


@dataclasses.dataclass
class ReqInput:   # the fields the wrapper sets; sglang's GenerateReqInput defaults the rest
    input_ids: List[int]
    sampling_params: Dict[str, Any]
    return_logprob: bool
    rid: str
    priority: Optional[int] = None


class RequestAbortedError(Exception):
    pass


class TM:
    def __init__(self):
        self.readers, self.finished_generators, self.requests = 0, 0, []
        self.abort_rids = set()

    async def _wait_one_response(self, obj):
        await asyncio.sleep(0)
        if obj.rid in self.abort_rids:
            raise RequestAbortedError("aborted before it reached the scheduler")
        n = obj.sampling_params["max_new_tokens"]
        yield {"output_ids": list(range(n)), "meta_info": {
            "finish_reason": {"type": "length", "length": n}, "prompt_tokens": len(obj.input_ids),
            "output_token_logprobs": [(-0.5, t, None) for t in range(n)]}}

    async def generate_request(self, obj, request=None):
        self.requests.append(obj)
        self.readers += 1
        try:
            async for out in self._wait_one_response(obj):
                yield out
        finally:
            self.readers -= 1
            self.finished_generators += 1


class Engine:
    def __init__(self):
        self.tokenizer_manager = TM()
        self.async_generate_calls = 0

    async def async_generate(self, input_ids, sampling_params, return_logprob, rid, **extra):
        self.async_generate_calls += 1   # sglang 0.5.17's Engine.async_generate, non-streaming
        gen = self.tokenizer_manager.generate_request(
            ReqInput(input_ids, sampling_params, return_logprob, rid, **extra), None)
        return await gen.__anext__()


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setattr(sglang_engine, "_request_input_class", lambda: ReqInput)
    return SGLangEngine.wrap(Engine(), priority_scheduling=True)


@contextlib.contextmanager
def finalizer_calls():
    """The async generators the running loop's finalizer hook is asked to close (each becomes a task of its own).
    Entered inside the loop: the loop installs its hooks when it starts running."""
    seen = []
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(hooks.firstiter, lambda agen: (seen.append(agen), hooks.finalizer(agen))[1])
    try:
        yield seen
    finally:
        sys.set_asyncgen_hooks(*hooks)


async def test_the_request_generator_has_ended_when_generate_returns(engine):
    engine.coalesce_submits = False   # generate returns in the pass its request ends
    gc.disable()   # the generator must end by being driven, not by being collected
    try:
        with finalizer_calls() as finalized:
            out = await engine.generate([1, 2, 3], SamplingParams(max_new_tokens=4, priority=2), "r")
        tm = engine._engine.tokenizer_manager
        # no pass of the loop ran since: a dropped generator would still hold the reader lock here, its close
        # waiting for asyncio's finalizer task
        assert tm.readers == 0 and tm.finished_generators == 1
    finally:
        gc.enable()
    assert out.output_ids == [0, 1, 2, 3] and out.finish_reason == "length" and len(out.logprobs) == 4
    assert engine._engine.async_generate_calls == 0 and finalized == []
    (req,) = tm.requests   # what async_generate would have built
    assert req.input_ids == [1, 2, 3] and req.return_logprob is True and req.priority == 2
    assert req.sampling_params["max_new_tokens"] == 4 and len(req.rid) == 32


async def test_many_requests_leave_no_generator_to_finalize(engine):
    with finalizer_calls() as finalized:
        outs = await asyncio.gather(*(engine.generate([i], SamplingParams(max_new_tokens=2), f"q{i}")
                                      for i in range(40)))
        await asyncio.sleep(0)
    assert [len(o.output_ids) for o in outs] == [2] * 40
    assert finalized == [] and engine._engine.tokenizer_manager.readers == 0


async def test_an_abort_before_the_scheduler_is_an_abort_output(engine):
    tm = engine._engine.tokenizer_manager
    orig = tm.generate_request

    def aborting(obj, request=None):
        tm.abort_rids.add(obj.rid)
        return orig(obj, request)
    tm.generate_request = aborting
    out = await engine.generate([1, 2], SamplingParams(max_new_tokens=3), "a")
    assert out.finish_reason == "abort" and out.output_ids == [] and out.prompt_tokens == 2
    assert tm.readers == 0


async def test_engines_without_sglang_go_through_async_generate(monkeypatch):
    monkeypatch.setattr(sglang_engine, "_request_input_class", lambda: None)   # sglang not importable
    engine = SGLangEngine.wrap(Engine())
    out = await engine.generate([1], SamplingParams(max_new_tokens=2), "r")
    assert out.output_ids == [0, 1] and engine._engine.async_generate_calls == 1
