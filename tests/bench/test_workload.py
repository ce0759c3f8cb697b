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
