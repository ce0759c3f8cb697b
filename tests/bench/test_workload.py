import math

import numpy as np
import pytest

from agent_rl.bench.workload import Dist, Workload


def test_parse_specs():
    assert Dist.parse("16") == Dist("fixed", {"value": 16.0})
    assert Dist.parse("zero").sample(np.random.default_rng(0), 3).tolist() == [0, 0, 0]
    d = Dist.parse("lognormal:mean=0.5,sigma=1,max=5")
    assert d.kind == "lognormal" and d.params == {"mean": 0.5, "sigma": 1.0, "max": 5.0}
    assert Dist.parse("fixed:0.2").params["value"] == 0.2
    assert Dist.parse(d.describe()) == d
    for bad in ["gamma:k=1", "lognormal:mean=1", "pareto:alpha=1,scale=2,foo=3", "uniform:lo=x,hi=2"]:
        with pytest.raises(ValueError):
            Dist.parse(bad)


def test_lognormal_mean_and_clip():
    x = Dist.parse("lognormal:mean=0.5,sigma=1").sample(np.random.default_rng(0), 200_000)
    assert abs(x.mean() - 0.5) < 0.02
    y = Dist.parse("pareto:alpha=1.2,scale=16,max=256").sample(np.random.default_rng(0), 10_000)
    assert y.min() >= 16 and y.max() <= 256 and np.median(y) < 40
    assert Dist.parse("pareto:alpha=1.2,scale=16,max=256").upper() == 256
    assert math.isinf(Dist.parse("pareto:alpha=1.2,scale=16").upper())


def test_uniform_int_inclusive():
    v = Dist.parse("uniform:lo=1,hi=3").sample_int(np.random.default_rng(0), 1000)
    assert set(v) == {1, 2, 3}


def test_plans_are_deterministic_and_per_trajectory():
    w = Workload(num_prompts=4, n=2, turns=Dist.parse("uniform:lo=1,hi=4"),
                 tokens_per_turn=Dist.parse("pareto:alpha=1.5,scale=8,max=64"),
                 tool_latency=Dist.parse("lognormal:mean=0.5,sigma=1"), tool_failure_rate=0.3, seed=7)
    p = w.plan(2, 1)
    assert p == w.plan(2, 1)
    assert len(p.tool_latency_s) == len(p.tool_fails) == p.turns - 1
    assert all(8 <= t <= 64 for t in p.gen_tokens)
    plans = [w.plan(g, s) for g in range(50) for s in range(2)]
    assert len({tuple(q.gen_tokens) for q in plans}) > 10
    fails = [f for q in plans for f in q.tool_fails]
    assert 0.1 < sum(fails) / len(fails) < 0.5
    assert w.max_turns() == 4 and w.max_tokens_per_turn() == 64
    assert Workload(seed=8).plan(0, 0) == Workload(seed=8).plan(0, 0)


def test_tool_wait_floor_bounds_async_speedup():
    from agent_rl.bench.workload import TrajectoryPlan, tool_wait_floor

    def plan(lat):
        return TrajectoryPlan(0, 0, [8] * (len(lat) + 1), list(lat), [False] * len(lat))

    # turn-batched waits max(3, 1) + max(1, 3) = 6 s; async waits for the largest sum, 4 s
    f = tool_wait_floor([plan([3.0, 1.0]), plan([1.0, 3.0]), plan([2.0])])
    assert f == {"turn_batched_s": 6.0, "async_s": 4.0, "async_speedup_bound": 1.5}
    assert tool_wait_floor([plan([]), plan([])])["async_speedup_bound"] is None   # no tool calls: no bound


def test_tail_cut_bound_replays_the_modes_steps_with_free_decoding():
    from types import SimpleNamespace

    from agent_rl.bench.workload import tail_cut_bound

    tokens = [10, 2, 4, 6, 1, 8, 3, 5, 7]   # group g's single sample generates tokens[g]

    class W:
        num_prompts, n = 2, 1

        def plan(self, group, sample):
            return SimpleNamespace(total_gen_tokens=tokens[group])

    # async: groups 0-1 then 2-3 -> steps of 10 and 6 (mean 8)
    # over-sampling 0.5, 3 groups a step: {10, 2, 4} ends at the 2nd fastest, 4; {6, 1, 8} at 6 -> 1 - 5/8
    assert abs(tail_cut_bound(W(), 0.5, carry=False, steps=2) - (1 - 5 / 8)) < 1e-9
    # carry-over: {10, 2, 4} ends at 4 and carries group 0 with 6 left; {6 left, 6, 1} ends at 6 -> 1 - 5/8;
    # after one warm-up step the measured steps are {6 left, 6, 1} -> 6 and {0 left, 8, 3} -> 3 against async 8 -> 1 - 4.5 / 8
    assert abs(tail_cut_bound(W(), 0.5, carry=True, steps=2) - (1 - 5 / 8)) < 1e-9
    assert abs(tail_cut_bound(W(), 0.5, carry=True, steps=2, warmup=1) - (1 - 4.5 / 8)) < 1e-9
    assert tail_cut_bound(W(), 0.0, carry=True, steps=2) is None   # nothing launched past B: nothing to cut
    # every pass priced: (1 a pass, 0 a row) is free decoding again
    assert abs(tail_cut_bound(W(), 0.5, carry=False, steps=2, cost=(1.0, 0.0)) - (1 - 5 / 8)) < 1e-9
    # rows alone (0, 1): a step costs the tokens decoded until it ends. async {10, 2} -> 12, {4, 6} -> 10;
    # over-sampling {10, 2, 4} to 4 -> 4 + 2 + 4 = 10, {6, 1, 8} to 6 -> 13: 23 against 22, the extras cost more
    assert abs(tail_cut_bound(W(), 0.5, carry=False, steps=2, cost=(0.0, 1.0)) - (1 - 23 / 22)) < 1e-9
    # carry-over: {10, 2, 4} to 4 -> 10, then {6 left, 6, 1} to 6 -> 13
    assert abs(tail_cut_bound(W(), 0.5, carry=True, steps=2, cost=(0.0, 1.0)) - (1 - 23 / 22)) < 1e-9
    # both (1, 1): async 10 + 12 and 6 + 10 = 38; over-sampling 4 + 10 and 6 + 13 = 33
    assert abs(tail_cut_bound(W(), 0.5, carry=False, steps=2, cost=(1.0, 1.0)) - (1 - 33 / 38)) < 1e-9


def test_decode_cost_fits_a_pass_and_a_row_on_raw_runs():
    from agent_rl.bench.workload import decode_cost

    def run(requests, new_tokens, pass_s, row_s):
        return {"requests": requests, "max_new_tokens_mean": new_tokens,
                "wall_s": new_tokens * (pass_s + row_s * requests)}
    fit = decode_cost([run(256, 256, 1.6e-3, 7.4e-6), None, run(1024, 256, 1.6e-3, 7.4e-6), run(512, 128, 1.6e-3, 7.4e-6)])
    assert abs(fit[0] - 1.6e-3) < 1e-12 and abs(fit[1] - 7.4e-6) < 1e-15
    assert decode_cost([run(256, 256, 1e-3, 1e-5)]) is None                       # one concurrency: nothing to fit
    assert decode_cost([run(256, 256, 1e-3, 1e-5), run(256, 64, 1e-3, 1e-5)]) is None
    # a pass slower at 256 rows than at 1024: no per-row cost >= 0 fits
    assert decode_cost([{"requests": 256, "max_new_tokens_mean": 10, "wall_s": 1.0},
                        {"requests": 1024, "max_new_tokens_mean": 10, "wall_s": 0.5}]) is None


def test_remembered_and_constant_plans_are_the_drawn_ones():
    from agent_rl.bench.workload import Dist, Workload

    for w in (Workload(tool_latency=Dist.parse("lognormal:mean=0.5,sigma=1"), tool_failure_rate=0.3),
              Workload(turns=Dist.parse("4"), tokens_per_turn=Dist.parse("128"), tool_latency=Dist.parse("0")),
              Workload(turns=Dist.parse("fixed:2,max=5"), tokens_per_turn=Dist.parse("fixed:40,min=50"),
                       tool_latency=Dist.parse("lognormal:mean=0,sigma=1"), tool_failure_rate=1.0),
              Workload(turns=Dist.parse("3"), tokens_per_turn=Dist.parse("uniform:lo=1,hi=9"))):
        for g in range(5):
            for s in range(3):
                assert w.plan(g, s) == w._draw(g, s) and w.plan(g, s) is w.plan(g, s)
    assert Workload()._constant() and not Workload(tool_failure_rate=0.5)._constant()
