"""OutputTap counts the scheduler's output messages that in-process sglang's tokenizer manager handles, per bench
mode; engines without that tokenizer manager get no tap and no figures."""
import asyncio
from types import SimpleNamespace

from agent_rl.bench.modes import parse_modes
from agent_rl.bench.output_tap import OutputTap
from agent_rl.bench.workload import Dist, Workload
from agent_rl.engines.sglang_engine import SGLangEngine
from tests.bench.test_rollout_modes import _bench


class _TokenizerManager:
    """sglang 0.5.17's shape: the handle loop awaits `self._handle_batch_output(recv_obj)` per message."""

    def __init__(self):
        self.rid_to_state = {}
        self.messages = []

    async def flush_cache(self, timeout_s=None):
        return SimpleNamespace(success=True)

    async def _handle_batch_output(self, recv_obj):
        self.messages.append(list(recv_obj.rids))
        for fut in recv_obj.futures:
            fut.set_result(None)


class _BatchingEngine:
    """Stands in for sglang.Engine: the requests that arrive within one event-loop iteration are answered together,
    one output message through the tokenizer manager (as a decode pass that ends them all)."""

    def __init__(self):
        self.tokenizer_manager = _TokenizerManager()
        self._pending = []

    async def async_generate(self, input_ids, sampling_params, return_logprob=False, rid=None, **extra):
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((rid, fut))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._send()))
        await fut
        n = int(sampling_params["max_new_tokens"])
        return {"output_ids": [7] * n, "meta_info": {"id": rid, "finish_reason": {"type": "length"},
                                                     "prompt_tokens": len(input_ids),
                                                     "output_token_logprobs": [(-1.0, 7, None)] * n}}

    async def _send(self):
        batch, self._pending = self._pending, []
        recv = SimpleNamespace(rids=[r for r, _ in batch], futures=[f for _, f in batch])
        await self.tokenizer_manager._handle_batch_output(recv)


def test_install_counts_messages_and_outputs_once_per_tokenizer_manager():
    engine = SGLangEngine.wrap(_BatchingEngine())
    tap = OutputTap.install(engine)
    assert OutputTap.install(engine) is tap                       # a second bench on the same engine shares it
    before = tap.counts()

    async def run():
        await asyncio.gather(*(engine._engine.async_generate([1], {"max_new_tokens": 2}, rid=f"r{i}") for i in range(5)))
        await engine._engine.async_generate([1], {"max_new_tokens": 2}, rid="r5")

    asyncio.run(run())
    assert engine.tokenizer_manager.messages == [["r0", "r1", "r2", "r3", "r4"], ["r5"]]
    assert OutputTap.figures(before, tap.counts()) == {"engine_output_messages": 2, "engine_outputs": 6}


def test_engines_without_sglangs_tokenizer_manager_get_no_tap(step_engine):
    from agent_rl.bench.loop_cpu import InstantSGLang

    assert OutputTap.install(step_engine) is None
    assert OutputTap.install(SGLangEngine.wrap(InstantSGLang([1, 2, 3]))) is None   # a tokenizer manager without it


async def test_each_mode_reports_the_output_messages_of_its_steps(tokenizer, step_engine):
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("3"),
                 tool_latency=Dist.parse("0"), seed=1)
    engine = SGLangEngine.wrap(_BatchingEngine())
    res = await _bench(tokenizer, engine, w, steps=2).run(parse_modes("turn-batched,async"))
    handled = engine.tokenizer_manager.messages
    for m in res["modes"]:
        assert m["engine_outputs"] == m["engine_requests"] == 2 * 4 * 2   # 2 steps x 4 trajectories x 2 turns
        assert 0 < m["engine_output_messages"] <= m["engine_outputs"]
    # every message of the run is either the raw-engine run's or one mode's
    assert sum(m["engine_output_messages"] for m in res["modes"]) < len(handled)
    plain = await _bench(tokenizer, step_engine, w, steps=1).run(parse_modes("async"))
    assert "engine_output_messages" not in plain["modes"][0]


def test_replicas_are_counted_together():
    from agent_rl.engines.replicas import ReplicaEngine

    a, b = SGLangEngine.wrap(_BatchingEngine()), SGLangEngine.wrap(_BatchingEngine())
    tap = OutputTap.install(ReplicaEngine([a, b]))
    before = tap.counts()

    async def run():
        await asyncio.gather(*(r._engine.async_generate([1], {"max_new_tokens": 1}, rid=f"{k}-{i}")
                               for k, r in enumerate((a, b)) for i in range(3)))

    asyncio.run(run())
    assert OutputTap.figures(before, tap.counts()) == {"engine_output_messages": 2, "engine_outputs": 6}
