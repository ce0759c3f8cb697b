import time

from agent_rl.bench.bench_tool import BenchTool
from agent_rl.bench.instrument import InstrumentedEngine
from agent_rl.bench.turn_batched import turn_batched_step
from agent_rl.bench.workload import Dist, Workload
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.tool_runtime.runtime import ToolRuntime




async def test_turn_batched_waits_for_slowest_tool_each_turn(tokenizer, step_engine):
    w = Workload(num_prompts=3, n=2, turns=Dist.parse("3"), tokens_per_turn=Dist.parse("uniform:lo=2,hi=6"),
                 tool_latency=Dist.parse("uniform:lo=0.01,hi=0.1"), tool_failure_rate=0.5, seed=3)
    tool = BenchTool.for_workload(w)
    rt = ToolRuntime([tool], tokenizer=tokenizer)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    prompts = {g: [{"role": "user", "content": f"q{g}"}] for g in range(3)}
    plans = [w.plan(g, s) for g in range(3) for s in range(2)]
    eng = InstrumentedEngine(step_engine)
    trace = eng.reset()
    t0 = time.perf_counter()
    step = await turn_batched_step(eng, renderer, rt, plans, prompts, 1.0, t0, 0)
    assert [t.gen_tokens for t in step.trajectories] == [p.total_gen_tokens for p in plans]
    assert trace.requests == sum(p.turns for p in plans)
    # wall >= sum over tool turns of the slowest planned latency
    slowest = sum(max(p.tool_latency_s[k] for p in plans) for k in range(2))
    assert step.wall_s >= slowest
    assert step.wall_s - sum(e - s for s, e in trace.busy) >= slowest * 0.9
    m = rt.metrics.snapshot()
    assert any(k.endswith("calls") for k in m)


async def test_each_turn_is_decoded_like_the_agent_loop_does(tokenizer, step_engine):
    """The baseline does the per-turn work a real turn-batched rollout does: the output decoded to text."""
    w = Workload(num_prompts=2, n=1, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("3"),
                 tool_latency=Dist.parse("0"), seed=1)
    rt = ToolRuntime([BenchTool.for_workload(w)], tokenizer=tokenizer)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    decoded = []
    decode = renderer.decode
    renderer.decode = lambda ids: decoded.append(list(ids)) or decode(ids)
    prompts = {g: [{"role": "user", "content": f"q{g}"}] for g in range(2)}
    await turn_batched_step(InstrumentedEngine(step_engine), renderer, rt, [w.plan(g, 0) for g in range(2)], prompts,
                            1.0, time.perf_counter(), 0)
    assert decoded == [[step_engine.token] * 3] * 4     # 2 trajectories x 2 turns, each turn's own output
