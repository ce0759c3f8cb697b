"""Every rollout mode on a fast deterministic engine (no model): the scheduling effects the benchmark
exists to show, and the bookkeeping behind its numbers."""
import os

from agent_rl.bench.instrument import InstrumentedEngine
from agent_rl.bench.modes import parse_modes
from agent_rl.bench.report import summary_markdown, write_outputs
from agent_rl.bench.rollout_bench import RolloutBench, RolloutBenchSettings
from agent_rl.bench.workload import Dist, Workload
from agent_rl.config.schema import RolloutConfig


def _bench(tokenizer, engine, workload, steps):
    s = RolloutBenchSettings(workload=workload, steps=steps, progress=False)
    b = RolloutBench(InstrumentedEngine(engine), tokenizer, s, RolloutConfig(engine="hf"))
    b.check_context()
    return b


async def test_all_modes_same_workload_heavy_tail(tokenizer, step_engine, tmp_path):
    # heavy-tailed lengths, instant tools: the step waits for its longest trajectory
    w = Workload(num_prompts=6, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("pareto:alpha=1.1,scale=4,max=150"),
                 tool_latency=Dist.parse("0"), seed=1)
    bench = _bench(tokenizer, step_engine, w, steps=2)
    res = await bench.run(parse_modes("all", "0.5"))
    by = {m["mode"]: m for m in res["modes"]}
    assert list(by) == ["turn-batched", "async", "async+oversample 0.5", "async+carryover 0.5"]
    planned = sum(w.plan(g, s).total_gen_tokens for g in range(12) for s in range(2))
    for name in ("turn-batched", "async"):
        m = by[name]
        assert m["trajectories_kept"] == 24 and m["aborted"] == 0 and m["carried"] == 0
        assert m["gen_tokens"] == m["kept_tokens"] == planned          # ignore_eos: exactly the planned lengths
        assert m["latency_p50_s"] <= m["latency_p90_s"] <= m["latency_p99_s"]
    over, carry = by["async+oversample 0.5"], by["async+carryover 0.5"]
    assert over["trajectories_kept"] == 24 and over["launched"] == 36 and over["aborted"] > 0
    # over-sampling keeps the groups that finish first: shorter than the launched mean (the reward-bias check)
    assert over["bias"]["mean_planned_tokens_kept"] < over["bias"]["mean_planned_tokens_all"]
    assert over["step_wall_s_mean"] < by["async"]["step_wall_s_mean"]
    assert carry["carried"] > 0 and carry["step_metrics"][1]["rollout/resumed_groups"] > 0
    # carry-over keeps trajectories begun under an earlier step's policy; the others keep none
    assert carry["policy_lag_max"] >= 1 and 0 < carry["policy_lag_mean"] < carry["policy_lag_max"]
    assert by["async"]["policy_lag_max"] == over["policy_lag_max"] == 0 and "policy_lag_max" not in by["turn-batched"]
    for m in res["modes"]:  # kept trajectories generate their planned lengths, carried ones cut inside a turn too
        assert m["bias"]["mean_gen_tokens_kept"] == m["bias"]["mean_planned_tokens_kept"], m["mode"]
    assert res["ceiling"]["tokens_per_s"] > 0 and by["async"]["ratio_to_ceiling"] > 0
    for m in res["modes"]:
        assert 0 <= m["engine_idle_s"] <= m["wall_s"]
        assert len(m["completion_s"]) == m["trajectories_kept"]
        origin = m["kept_by_origin"]
        assert sum(o["count"] for o in origin.values()) == m["trajectories_kept"], m["mode"]
        # a kept trajectory finished before its step began is a completion of 0 s; only carry-over keeps any
        assert origin["earlier"]["count"] == sum(1 for c in m["completion_s"] if c == 0.0), m["mode"]
    for m in (by["async"], over, by["turn-batched"]):   # every kept trajectory launched in the step that kept it
        assert m["kept_by_origin"]["fresh"]["count"] == m["trajectories_kept"], m["mode"]
    resumed = carry["kept_by_origin"]["resumed"]
    assert resumed["count"] > 0 and resumed["latency_p50_s"] > carry["kept_by_origin"]["fresh"]["latency_p50_s"]

    result = {"kind": "rollout", "command": "test", "engine": "step", "model": "none", "workload": w.to_json(),
              "environment": {"device": "cpu", "python": "3", "torch": "x", "transformers": "y", "sglang": None}, **res}
    # the cut the draws allow without the engine's slowdown: one per over-sampling / carry-over mode
    assert set(res["tail_cut_bound"]) == {"async+oversample 0.5", "async+carryover 0.5"}
    paths = write_outputs(result, str(tmp_path), "rollout_bench")
    for p in paths.values():
        assert os.path.getsize(p) > 0
    summary = open(paths["summary"]).read()
    assert "async+carryover 0.5" in summary and "this workload's draws allow" in summary
    assert f"carry-over's staleness): async+carryover 0.5 mean {carry['policy_lag_mean']:.2f}, max" in summary
    assert "- async+carryover 0.5 with its stock change charged: step time" in summary     # carry-over only
    assert "with its stock change charged" not in summary.split("async+oversample 0.5: step time")[1].split("\n")[0]
    assert "the suite's targets read the slower" in summary
    assert f"async+carryover 0.5 fresh {carry['kept_by_origin']['fresh']['count']} (" in summary
    assert "async+oversample 0.5 fresh" not in summary     # nothing but fresh kept: no line
    moved = abs(carry["stock_drawn_tokens"]) / carry["kept_tokens"]
    assert (f"**The stock moved by more than 3% of the kept tokens** in async+carryover 0.5 {100 * moved:.0f}%"
            in summary) == (moved > 0.03)


async def test_carry_over_is_measured_warm_after_an_unmeasured_first_step(tokenizer, step_engine):
    """A training run pays carry-over's cold first step (nothing carried, every group launched from scratch) once;
    the bench runs it outside the figures, so the first measured step already resumes carried groups."""
    w = Workload(num_prompts=4, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("pareto:alpha=1.1,scale=4,max=150"),
                 tool_latency=Dist.parse("0"), seed=1)
    warm = await _bench(tokenizer, step_engine, w, steps=2).run(parse_modes("carryover", "0.5"))
    m = warm["modes"][0]
    assert len(m["warmup_step_wall_s"]) == 1 and m["warmup_step_wall_s"][0] > 0
    assert len(m["step_wall_s"]) == 2 and m["trajectories_kept"] == 16
    assert m["step_metrics"][0]["rollout/resumed_groups"] > 0       # the warm-up's cut groups, carried on
    assert m["engine_busy_s"] <= m["wall_s"]                         # the trace starts after the warm-up
    md = summary_markdown({"kind": "rollout", "command": "t", "engine": "step", "model": "none", "workload": w.to_json(),
                           "environment": {"device": "cpu", "python": "3", "torch": "x", "transformers": "y",
                                           "sglang": None}, **warm})
    steps = ", ".join(f"{x:.2f}" for x in m["step_wall_s"])
    assert f"async+carryover 0.5 {steps} (after an unmeasured warm-up step of {m['warmup_step_wall_s'][0]:.2f})" in md

    s = RolloutBenchSettings(workload=w, steps=2, progress=False, carry_warmup_steps=0)
    b = RolloutBench(InstrumentedEngine(step_engine), tokenizer, s, RolloutConfig(engine="hf"))
    cold = (await b.run(parse_modes("carryover", "0.5")))["modes"][0]
    assert "warmup_step_wall_s" not in cold and cold["step_metrics"][0].get("rollout/resumed_groups", 0) == 0


async def test_carry_over_step_time_with_its_stock_change_charged(tokenizer, step_engine):
    """What a carry-over step kept that earlier steps generated (net of what it leaves carried) is charged at the
    mode's own token rate: the engine's token count and the trajectories' own counts must agree on it."""
    w = Workload(num_prompts=4, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("pareto:alpha=1.1,scale=4,max=150"),
                 tool_latency=Dist.parse("0"), seed=1)
    s = RolloutBenchSettings(workload=w, steps=2, progress=False, carry_warmup_steps=0)
    cold = (await RolloutBench(InstrumentedEngine(step_engine), tokenizer, s, RolloutConfig(engine="hf"))
            .run(parse_modes("async,carryover", "1")))["modes"]
    plain, carry = cold
    assert "stock_drawn_tokens" not in plain and plain["step_wall_s_charged"] == plain["step_wall_s_mean"]
    # from a cold start nothing was generated before the window: it drew minus what it leaves carried
    assert carry["stock_end_tokens"] > 0 and carry["stock_drawn_tokens"] == -carry["stock_end_tokens"]
    g, d = carry["gen_tokens"], carry["stock_drawn_tokens"]
    assert abs(carry["step_wall_s_charged"] - carry["step_wall_s_mean"] * (g + d) / g) < 1e-9
    assert carry["step_wall_s_charged"] < carry["step_wall_s_mean"]     # credited for the stock it built
    warm = (await _bench(tokenizer, step_engine, w, steps=1).run(parse_modes("carryover", "1")))["modes"][0]
    # after the warm-up step (1 + rate times the groups, from scratch) the measured step starts with its cut groups
    assert warm["step_metrics"][0]["rollout/resumed_groups"] > 0
    assert warm["stock_drawn_tokens"] + warm["stock_end_tokens"] > 0          # the stock it started with
    g, d = warm["gen_tokens"], warm["stock_drawn_tokens"]
    assert abs(warm["step_wall_s_charged"] - warm["step_wall_s_mean"] * (g + d) / g) < 1e-9


async def test_async_overlaps_tool_latency(tokenizer, step_engine):
    w = Workload(num_prompts=4, n=2, turns=Dist.parse("3"), tokens_per_turn=Dist.parse("2"),
                 tool_latency=Dist.parse("lognormal:mean=0.3,sigma=1,max=2"), tool_failure_rate=0.25, seed=17)
    bench = _bench(tokenizer, step_engine, w, steps=1)
    res = await bench.run(parse_modes("turn-batched,async"))
    tb, asy = res["modes"]
    plans = [w.plan(g, s) for g in range(4) for s in range(2)]
    assert tb["wall_s"] >= sum(max(p.tool_latency_s[k] for p in plans) for k in range(2))
    assert asy["wall_s"] < tb["wall_s"] and asy["engine_idle_s"] < tb["engine_idle_s"]
    fails = sum(f for p in plans for f in p.tool_fails)
    assert asy["step_metrics"][0].get("rollout/tool_calls/bench_wait/exception", 0) == fails
    # tool waits are part of a step's time here, tokens are not all of it: no token-only tail bound
    assert "tail_cut_bound" not in res and bench.tail_estimates(parse_modes("carryover", "0.5")) == {}


class _FlushRecorder:
    """Wraps the step engine: counts requests in flight and records, at each flush, how many there were."""

    def __init__(self, inner, refuse=False):
        self.inner, self.refuse = inner, refuse
        self.inflight, self.flushes = 0, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def generate(self, input_ids, sampling, request_id):
        self.inflight += 1
        try:
            return await self.inner.generate(input_ids, sampling, request_id)
        finally:
            self.inflight -= 1

    async def flush_cache(self):
        self.flushes.append(self.inflight)
        return not self.refuse


async def test_every_step_starts_on_an_empty_prefix_cache_as_after_a_weight_sync(tokenizer, step_engine):
    """In training the weight sync before a step flushes sglang's prefix cache; the bench does the same before every
    step of every mode (carried trajectories included) and before each raw-engine run, never while a request runs."""
    w = Workload(num_prompts=3, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("uniform:lo=1,hi=12"),
                 tool_latency=Dist.parse("0"), seed=3)
    rec = _FlushRecorder(step_engine)
    bench = _bench(tokenizer, rec, w, steps=3)
    res = await bench.run(parse_modes("turn-batched,async,carryover", "0.5"))
    # the raw engine (before it and after its warm-up) + 3 steps of each of the 3 modes + carry-over's warm-up step,
    # all when idle
    assert rec.flushes == [0] * (2 + 3 * 3 + 1)
    assert all(m["cache_flushed"] and "cache_flush_failures" not in m for m in res["modes"])
    assert next(m for m in res["modes"] if m["mode"].startswith("async+carryover"))["carried"] > 0

    from tests.bench.conftest import StepEngine

    refused = _FlushRecorder(StepEngine(), refuse=True)
    bench = _bench(tokenizer, refused, w, steps=2)
    res = await bench.run(parse_modes("async"))
    assert res["modes"][0]["cache_flush_failures"] == 2   # each step that began on the previous step's cache

    kept = _FlushRecorder(step_engine)
    bench = _bench(tokenizer, kept, w, steps=2)
    bench.s.flush_cache = False
    res = await bench.run(parse_modes("async"))
    assert kept.flushes == [] and res["modes"][0]["cache_flushed"] is False


class _Collecting(_FlushRecorder):
    """Runs one full garbage collection inside the first request of the first mode (not the raw-engine run before
    it), as an allocation burst would."""

    collected = False

    async def generate(self, input_ids, sampling, request_id):
        if not self.collected and not request_id.startswith("ceiling"):
            import gc

            self.collected = True
            gc.collect()
        return await super().generate(input_ids, sampling, request_id)


async def test_each_mode_reports_the_garbage_collections_that_ran_during_its_steps(tokenizer, step_engine):
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("4"),
                 tool_latency=Dist.parse("0"), seed=1)
    engine = _Collecting(step_engine)
    res = await _bench(tokenizer, engine, w, steps=1).run(parse_modes("async"))
    mode = res["modes"][0]
    assert engine.collected and mode["gc"]["collections"][2] >= 1 and mode["gc_s"] == mode["gc"]["total_s"] > 0
    assert mode["gc"]["tracked_objects"] > 0


async def test_the_tail_bound_follows_the_drawn_waits_not_the_distributions_name(tokenizer, step_engine):
    """A tool latency that draws only zeros (`lognormal:mean=0`) is a workload without tool waits: it gets the
    token-only tail bound like `0` does; one wait in any replayed trajectory removes it."""
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("pareto:alpha=1.2,scale=2,max=20"),
                 tool_latency=Dist.parse("lognormal:mean=0,sigma=1"), seed=2)
    bench = _bench(tokenizer, step_engine, w, steps=2)
    assert set(bench.tail_estimates(parse_modes("async,carryover", "0.5"))) == {"async+carryover 0.5"}
    waits = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("4"),
                     tool_latency=Dist.parse("uniform:lo=0,hi=0.001"), seed=2)
    assert _bench(tokenizer, step_engine, waits, steps=2).tail_estimates(parse_modes("carryover", "0.5")) == {}


async def test_both_kinds_of_step_time_the_same_work(tokenizer, step_engine, monkeypatch):
    """A measured step of either kind starts its clock after the prefix-cache flush and before its prompts are rendered
    (the rollout scheduler renders them in its step; the async steps once timed the flush, turn-batched never timed
    its prompts)."""
    import time as _time

    from agent_rl.bench import async_modes, turn_batched

    events = []

    class Clock:   # the modules' `time`, with each perf_counter() read recorded
        def __getattr__(self, name):
            return getattr(_time, name)

        def perf_counter(self):
            events.append("clock")
            return _time.perf_counter()

    monkeypatch.setattr(async_modes, "time", Clock())
    monkeypatch.setattr(turn_batched, "time", Clock())
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("3"),
                 tool_latency=Dist.parse("0"), seed=1)
    bench = _bench(tokenizer, step_engine, w, steps=2)
    flush, render = bench.fresh_cache, bench.renderer.prompt_ids

    async def recorded_flush():
        events.append("flush")
        await flush()

    def recorded_render(messages):
        events.append("render")
        return render(messages)

    bench.fresh_cache = recorded_flush
    bench.renderer.prompt_ids = recorded_render
    bench.s.flush_cache = True
    for mode in ("turn-batched", "async"):
        events.clear()
        await bench.run_mode(parse_modes(mode, "0.5")[0], None)
        # each step: a flush, then its clock starts, then its groups' prompts are rendered (none before its clock)
        flushes = [i for i, e in enumerate(events) if e == "flush"]
        assert len(flushes) >= 2, (mode, events)
        for i in flushes[-2:]:
            after = events[i + 1:]
            assert after.index("clock") < after.index("render"), (mode, events)
