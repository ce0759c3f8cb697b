from agent_rl.bench.suite import scenarios, suite_markdown, target_check


def _mode(name, step, ratio=None):
    return {"mode": name, "step_wall_s_mean": step, "ratio_to_ceiling": ratio}


def test_scenarios_share_the_base_workload():
    sc = scenarios(8, 4, "3", "128", "lognormal:mean=0.5,sigma=1,max=10", "pareto:alpha=1.2,scale=32,max=512", 4, "0.25,0.5", 3)
    assert [s.name for s in sc] == ["instant-tools", "tool-latency", "heavy-tail"]
    assert sc[0].workload.tool_latency.describe() == "0" and sc[1].workload.tool_latency.kind == "lognormal"
    assert sc[2].workload.num_prompts == 4 and sc[2].workload.tokens_per_turn.kind == "pareto"
    # same seed, same draws: the two scenarios differ only in the tool latency
    assert sc[0].workload.plan(1, 1).gen_tokens == sc[1].workload.plan(1, 1).gen_tokens
    assert sc[0].workload.plan(1, 1).tool_latency_s == [0.0, 0.0]
    assert [m.name for m in sc[2].modes] == ["async", "async+oversample 0.25", "async+oversample 0.5", "async+carryover 0.25"]


def test_target_checks():
    sc = scenarios(8, 4, "3", "16", "0.5", "pareto:alpha=1.2,scale=4,max=64", 8, "0.25,0.5", 0)
    r0 = target_check(sc[0], {"modes": [_mode("turn-batched", 2.0, 0.5), _mode("async", 1.0, 0.93)]})
    assert r0["met"] and r0["value"] == 0.93
    r1 = target_check(sc[1], {"modes": [_mode("turn-batched", 5.0), _mode("async", 2.0)]})
    assert not r1["met"] and r1["value"] == 2.5
    r2 = target_check(sc[2], {"modes": [_mode("async", 10.0), _mode("async+oversample 0.25", 7.0),
                                        _mode("async+oversample 0.5", 5.5), _mode("async+carryover 0.25", 8.0)]})
    assert r2["met"] and abs(r2["value"] - 0.45) < 1e-9 and "async+oversample 0.5" in r2["detail"]
    md = suite_markdown({"command": "x", "engine": "hf", "model": "m", "ceiling": None, "targets": [r0, r1, r2],
                         "environment": {"device": "cpu", "python": "3", "torch": "t", "transformers": "tf", "sglang": None}})
    assert "| 93% | yes |" in md and "| 2.50x | no |" in md and "| 45% | yes |" in md
