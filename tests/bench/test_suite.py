from agent_rl.bench.suite import (ceiling_check, engine_bounds_line, max_concurrency, scenarios, suite_markdown,
                                  target_checks)


def _mode(name, step, ratio=None, p50=None):
    return {"mode": name, "step_wall_s_mean": step, "ratio_to_ceiling": ratio, "latency_p50_s": p50}


def test_scenarios_share_the_base_workload():
    sc = scenarios(8, 4, "3", "128", "lognormal:mean=0.5,sigma=1,max=10", "pareto:alpha=1.2,scale=32,max=512", 4, "0.25,0.5", 3)
    assert [s.name for s in sc] == ["instant-tools", "tool-latency", "heavy-tail"]
    assert sc[0].workload.tool_latency.describe() == "0" and sc[1].workload.tool_latency.kind == "lognormal"
    assert sc[2].workload.num_prompts == 4 and sc[2].workload.tokens_per_turn.kind == "pareto"
    # same seed, same draws: the two scenarios differ only in the tool latency
    assert sc[0].workload.plan(1, 1).gen_tokens == sc[1].workload.plan(1, 1).gen_tokens
    assert sc[0].workload.plan(1, 1).tool_latency_s == [0.0, 0.0]
    # over-sampling and carry-over run once at each rate
    assert [m.name for m in sc[1].modes] == ["turn-batched", "async", "async+carryover 0.25", "async+carryover 0.5"]
    assert [m.name for m in sc[2].modes] == ["async", "async+oversample 0.25", "async+oversample 0.5",
                                             "async+carryover 0.25", "async+carryover 0.5"]
    # tool-latency's carry-over at rate 0.5 launches ceil(8 * 1.5) = 12 groups x 4 (heavy-tail: ceil(4 * 1.5) x 4 = 24)
    assert max_concurrency(sc) == 48


def test_target_checks():
    sc = scenarios(8, 4, "3", "16", "0.5", "pareto:alpha=1.2,scale=4,max=64", 8, "0.25,0.5", 0)
    r0 = target_checks(sc[0], {"modes": [_mode("turn-batched", 2.0, 0.5), _mode("async", 1.0, 0.93)]})
    assert [r["met"] for r in r0] == [True, True] and r0[0]["value"] == 0.93 and r0[1]["value"] == 2.0
    slow = target_checks(sc[0], {"modes": [_mode("turn-batched", 1.0, 0.5), _mode("async", 1.25, 0.93)]})
    assert [r["met"] for r in slow] == [True, False]
    r1 = target_checks(sc[1], {"modes": [_mode("turn-batched", 5.0), _mode("async", 2.0), _mode("async+carryover 0.25", 1.6)]})
    assert [r["met"] for r in r1] == [True, True] and r1[0]["value"] == 2.5 and r1[1]["value"] == 5.0 / 1.6
    # carry-over at several rates: the fastest one is checked, and named
    best = target_checks(sc[1], {"modes": [_mode("turn-batched", 5.0), _mode("async", 2.0), _mode("async+carryover 0.25", 2.5),
                                           _mode("async+carryover 0.5", 1.6)]})[1]
    assert best["value"] == 5.0 / 1.6 and "async+carryover 0.5 mean step time" in best["detail"]
    warm = dict(_mode("async+carryover 0.25", 1.6), partial_rollout=True, warmup_step_wall_s=[2.4])
    cold = dict(_mode("async+carryover 0.25", 1.6), partial_rollout=True)
    for carry, says in ((warm, "measured after its unmeasured warm-up step"), (cold, "measured from its cold first step")):
        checks = target_checks(sc[1], {"modes": [_mode("turn-batched", 5.0), _mode("async", 2.0), carry]})
        assert checks[1]["detail"].endswith(f"(async+carryover 0.25 {says})")
    bounded = target_checks(sc[1], {"modes": [_mode("turn-batched", 5.0), _mode("async", 4.0)],
                                    "tool_wait_floor": {"turn_batched_s": 3.0, "async_s": 2.0, "async_speedup_bound": 1.5}})
    assert not bounded[0]["met"] and "tool waits alone give 1.50x" in bounded[0]["detail"]
    r2 = target_checks(sc[2], {"modes": [_mode("async", 10.0, p50=3.0), _mode("async+oversample 0.25", 7.0, p50=3.1),
                                         _mode("async+oversample 0.5", 5.5, p50=3.6), _mode("async+carryover 0.25", 8.0, p50=2.0)]})
    assert r2[0]["met"] and abs(r2[0]["value"] - 0.45) < 1e-9 and "async+oversample 0.5" in r2[0]["detail"]
    assert not r2[1]["met"] and abs(r2[1]["value"] - 0.2) < 1e-9   # the best mode's p50 is 20% above async's
    assert "draws would allow" not in r2[0]["detail"]
    # carry-over is judged by the slower of its measured step time and the one with its stock change charged (a step
    # that kept tokens an earlier step generated is charged for them at its own rate; a steady run lies between)
    stocked = dict(_mode("async+carryover 0.5", 6.5, p50=2.0), partial_rollout=True, warmup_step_wall_s=[9.0],
                   gen_tokens=100, stock_drawn_tokens=20, kept_tokens=120, step_wall_s_charged=6.5 * 120 / 100)
    cut, _ = target_checks(sc[2], {"modes": [_mode("async", 10.0, p50=2.0), stocked]})
    assert not cut["met"] and abs(cut["value"] - 0.22) < 1e-9
    assert ("all (carry-over: the slower of measured and with its stock change charged): async+carryover 0.5 22%; "
            "measured async+carryover 0.5 35%") in cut["detail"]
    tl = target_checks(sc[1], {"modes": [_mode("turn-batched", 20.0), _mode("async", 10.0), stocked]})[1]
    assert abs(tl["value"] - 20.0 / 7.8) < 1e-9 and tl["met"]
    assert "17% of the tokens its measured steps kept were generated before them" in tl["detail"] and "measured 3.08x" in tl["detail"]
    grew = dict(stocked, stock_drawn_tokens=-20, kept_tokens=80, step_wall_s_charged=6.5 * 80 / 100)   # left more behind
    cut, _ = target_checks(sc[2], {"modes": [_mode("async", 10.0, p50=2.0), grew]})
    assert cut["met"] and abs(cut["value"] - 0.35) < 1e-9 and "; measured" not in cut["detail"]   # the measured one
    tl = target_checks(sc[1], {"modes": [_mode("turn-batched", 20.0), _mode("async", 10.0), grew]})[1]
    assert abs(tl["value"] - 20.0 / 6.5) < 1e-9 and "left 25% (of the tokens they kept) more for the next step" in tl["detail"]
    bounded = target_checks(sc[2], {"modes": [_mode("async", 10.0), _mode("async+carryover 0.5", 9.0)],
                                    "tail_cut_bound": {"async+carryover 0.5": 0.49}})
    assert not bounded[0]["met"] and bounded[0]["detail"].endswith("draws would allow async+carryover 0.5 49%")
    raw = ceiling_check([{"requests": 256, "tokens_per_s": 50e3}, {"requests": 1024, "tokens_per_s": 35e3}])
    assert not raw["met"] and abs(raw["value"] - 0.7) < 1e-9
    md = suite_markdown({"command": "x", "engine": "hf", "model": "m", "ceiling": None, "targets": r0 + r1 + r2 + [raw],
                         "environment": {"device": "cpu", "python": "3", "torch": "t", "transformers": "tf", "sglang": None}})
    assert "| 93% | yes |" in md and "| 2.50x | yes |" in md and "| 45% | yes |" in md and "| 0.70x | no |" in md


def test_engine_bounds_line_flags_uncovered_decode_batches():
    assert "covered (graphs up to 1024)" in engine_bounds_line(
        {"cuda_graph_max_bs": 1024, "max_running_requests": None, "priority_scheduling": True}, 1024)
    assert "NOT covered" in engine_bounds_line({"cuda_graph_max_bs": 256, "max_running_requests": None}, 384)
    capped = engine_bounds_line({"cuda_graph_max_bs": 1024, "max_running_requests": 1024}, 1536)
    assert "at most 1024 rows" in capped and "covered" in capped and "NOT" not in capped
    assert "no CUDA-graph bounds" in engine_bounds_line(None, 64)
    two = engine_bounds_line({"cuda_graph_max_bs": 512, "max_running_requests": 512, "replicas": 2}, 1024)
    assert "1024 requests in flight over 2 engine replicas (about 512 each)" in two
    assert "at most 512 rows per decode step of each; covered" in two
    assert engine_bounds_line({"replicas": 2}, 8) == ("- decode batch: up to 8 requests in flight over 2 engine "
                                                      "replicas (about 4 each) (engine reports no CUDA-graph bounds)")
    assert engine_bounds_line({"cuda_graph_max_bs": 64, "prefill_delayer": True}, 64).endswith("prefill delayer on")
    line = engine_bounds_line({"cuda_graph_max_bs": 64, "prefill_delayer": True, "prefill_cuda_graph": "disabled"}, 64)
    assert line.endswith("prefill delayer on; prefill CUDA graphs disabled")
    line = engine_bounds_line({"cuda_graph_max_bs": 64, "prefill_delayer": True, "prefill_delayer_passes": 30}, 64)
    assert line.endswith("prefill delayer on (a prefill waits up to 30 decode passes)")
    assert engine_bounds_line({"cuda_graph_max_bs": 64, "partial_output_every": None}, 64).endswith(
        "partial outputs of unfinished requests off")
    assert engine_bounds_line({"cuda_graph_max_bs": 64, "partial_output_every": 50}, 64).endswith(
        "partial outputs of unfinished requests every 50 tokens")
    assert engine_bounds_line({"cuda_graph_max_bs": 64, "coalesce_submits": True}, 64).endswith(
        "a loop pass's requests sent together")
    assert "prefill delayer" not in capped                  # an engine that does not say
    patches = engine_bounds_line({"cuda_graph_max_bs": 64, "scheduler_patches": ["delayer_gather", "decode_rows"]}, 64)
    assert patches.endswith("agent-rl's scheduler patches asked: delayer_gather, decode_rows (the scheduler's start "
                            "line says which applied)")
    assert engine_bounds_line({"cuda_graph_max_bs": 64, "scheduler_patches": []}, 64).endswith("scheduler patches off")
    # a JSON of before the names (a bool) still reads
    assert engine_bounds_line({"cuda_graph_max_bs": 64, "scheduler_patches": True}, 64).endswith("scheduler patches on")


def test_suite_markdown_shows_the_cpu_by_process_column_when_sampled():
    env = {"device": "cpu", "python": "3", "torch": "t", "transformers": "tf", "sglang": None}
    mode = {"mode": "async", "step_wall_s_mean": 1.0, "ratio_to_ceiling": 0.5, "inflight_mean": 3, "inflight_peak": 4,
            "loop_cpu_frac": 0.2, "engine_idle_frac": 0.0}
    cpu = {"processes": [{"name": "sglang::scheduler", "cpu_cores_mean": 1.0, "threads": []}],
           "host_busy_frac": 0.5, "host_cpus": 2, "host_mhz_mean": None}
    suite = {"command": "x", "engine": "hf", "model": "m", "ceiling": None, "targets": [], "environment": env}
    plain = suite_markdown(dict(suite, scenario_modes={"instant-tools": [mode]}))
    assert "CPU cores by process" not in plain
    md = suite_markdown(dict(suite, scenario_modes={"instant-tools": [dict(mode, process_cpu=cpu)]}))
    assert "| CPU cores by process; host |" in md and "| sglang::scheduler 1.00; host 50% of 2 |" in md
    assert "| 20% |" in md                                 # no request count: the share alone
    per = suite_markdown(dict(suite, scenario_modes={"instant-tools": [dict(mode, loop_cpu_s=0.3, engine_requests=400)]}))
    assert "| 20%; 0.75 ms |" in per and "event-loop CPU (of wall; a request; garbage collection of wall; sglang outputs a message)" in per
    collected = suite_markdown(dict(suite, scenario_modes={"instant-tools": [dict(mode, gc_s=0.03, wall_s=2.0)]}))
    assert "| 20%; GC 1.5% |" in collected
    ceil = {"requests": 256, "max_new_tokens_mean": 256, "prompt_tokens_mean": 128, "tokens_per_s": 1000.0,
            "requests_per_s": 4.0, "wall_s": 64.0}
    assert "64.00 s\n" in suite_markdown(dict(suite, ceiling=ceil))                # an older JSON: no GC figure
    assert "64.00 s, garbage collection 0.71 s" in suite_markdown(dict(suite, ceiling=dict(ceil, gc_s=0.71)))
    tapped = suite_markdown(dict(suite, scenario_modes={"instant-tools": [dict(mode, engine_output_messages=40, engine_outputs=300)]}))
    assert "| 20%; 7.5 outputs a message |" in tapped
    header = next(line for line in md.splitlines() if line.startswith("| scenario | mode |"))
    sep = md.splitlines()[md.splitlines().index(header) + 1]
    assert header.count("|") == sep.count("|")               # one separator cell per column


def test_the_pace_line_says_how_far_apart_the_raw_runs_of_one_shape_were():
    from agent_rl.bench.suite import pace_line

    def raw(requests, new, *tps):
        return {"requests": requests, "prompt_tokens_mean": 250.2, "max_new_tokens_mean": new, "wall_s": 1.0,
                "requests_per_s": 1.0, "tokens_per_s": sorted(tps)[len(tps) // 2], "tokens_per_s_rounds": list(tps)}
    steady = {"ceilings": [raw(256, 256, 61000, 60000), raw(1024, 256, 97000, 96000)],
              "scenario_ceilings": {"instant-tools": raw(1024, 384, 100000, 98000),
                                    "tool-latency": raw(1024, 384, 99000, 95000)}}
    assert pace_line(steady) == ("the raw engine's runs of one shape (rounds and scenarios) at most 5% apart "
                                 "(1024 requests x 384 new tokens: 95000-100000 tokens/s)")
    # instant tools and tool latency send the raw engine the same shape: their runs are compared with each other
    drifted = dict(steady, scenario_ceilings={"instant-tools": raw(1024, 384, 103000, 94000),
                                              "tool-latency": raw(1024, 384, 95000, 80000),
                                              "heavy-tail": dict(raw(1024, 305, 88000), tokens_per_s_rounds=None)})
    line = pace_line(drifted)
    assert line.startswith("**the machine's pace moved during this suite**: the raw engine's runs of one shape "
                           "(rounds and scenarios) at most 22% apart (1024 requests x 384 new tokens: 80000-103000")
    assert pace_line({"ceilings": [raw(256, 256, 61000)]}) == ""   # one run: nothing to compare
    env = {"device": "cpu", "python": "3", "torch": "t", "transformers": "tf", "sglang": None}
    suite = {"command": "x", "engine": "hf", "model": "m", "targets": [], "environment": env}
    assert f"\n- {line}\n" in suite_markdown(dict(suite, **drifted))
    assert "pace" not in suite_markdown(dict(suite, ceiling=None))


def test_a_miss_below_its_bound_says_it_is_out_of_reach():
    from agent_rl.bench.suite import met_words

    sc = scenarios(8, 4, "3", "16", "0.5", "pareto:alpha=1.2,scale=4,max=64", 8, "0.5", 0)
    env = {"device": "cpu", "python": "3", "torch": "t", "transformers": "tf", "sglang": None}
    # instant tools: the engine alone on the same turns reached 80% of raw, so 90% is out of reach
    alone = {"turns": {"ratio_to_raw": 0.8}}
    ratio, _ = target_checks(sc[0], {"modes": [dict(_mode("turn-batched", 2.0, 0.5)),
                                               dict(_mode("async", 2.1, 0.74), ratio_to_turns_ceiling=0.93)],
                                     "ceiling": alone})
    assert ratio["bound"] == 0.8 and met_words(ratio) == "no: out of reach here (at best 80%)"
    # tool latency: turn-batched 10 s over an ideal async step of 6.2 s = 1.61x at best
    ideal = {"ideal_step": {"async_s": 6.2, "turn_batched_s": 9.7}, "decode_cost": {"pass_ms": 1.0, "row_us": 8.0,
                                                                                   "source": "fit"}}
    speed = target_checks(sc[1], dict(ideal, modes=[_mode("turn-batched", 10.0), _mode("async", 6.5)]))[0]
    assert abs(speed["bound"] - 10.0 / 6.2) < 1e-9 and met_words(speed) == "no: out of reach here (at best 1.61x)"
    # a bound above the threshold: a plain miss
    near = target_checks(sc[1], dict(ideal, ideal_step={"async_s": 5.0, "turn_batched_s": 9.7},
                                     modes=[_mode("turn-batched", 10.0), _mode("async", 6.5)]))[0]
    assert near["bound"] == 2.0 and met_words(near) == "no"
    # carry-over: turn-batched's step over the replayed carry-over step at that cost (`ideal_step.carry_s`)
    both = dict(ideal, ideal_step={"async_s": 6.2, "turn_batched_s": 9.7, "carry_s": {"async+carryover 0.5": 5.0}},
                modes=[_mode("turn-batched", 10.0), _mode("async", 6.5), _mode("async+carryover 0.5", 5.5)])
    carry = target_checks(sc[1], both)[1]
    assert carry["bound"] == 2.0 and met_words(carry) == "no: out of reach here (at best 2.00x)"
    assert "a async+carryover 0.5 step that costs only its decode passes at this engine's cost (5.00 s) would be " \
           "2.00x faster than this turn-batched" in carry["detail"]
    reach = dict(both, ideal_step=dict(both["ideal_step"], carry_s={"async+carryover 0.5": 3.0}))
    assert met_words(target_checks(sc[1], reach)[1]) == "no"              # 3.33x allowed: a plain miss
    assert "bound" not in target_checks(sc[1], dict(both, ideal_step=ideal["ideal_step"]))[1]   # no replay: no bound
    # heavy tail: the best cut the draws allow at the fitted decode cost
    tail = target_checks(sc[2], {"modes": [_mode("async", 10.0, p50=2.0), _mode("async+carryover 0.5", 9.0, p50=2.0)],
                                 "tail_cut_bound": {"async+carryover 0.5": 0.5},
                                 "tail_cut_bound_engine": {"async+carryover 0.5": 0.17, "async+oversample 0.5": -0.1},
                                 "decode_cost": ideal["decode_cost"]})[0]
    assert tail["bound"] == 0.17 and met_words(tail) == "no: out of reach here (at best 17%)"
    # the kept p50 (at most 10% over async's): the best-cut mode's estimate at the fitted decode cost
    slow = target_checks(sc[2], {"modes": [_mode("async", 10.0, p50=2.0), _mode("async+carryover 0.5", 6.0, p50=2.5)],
                                 "tail_p50_bound_engine": {"async+carryover 0.5": 0.18, "async+oversample 0.5": 0.02},
                                 "tail_cut_bound_engine": {"async+carryover 0.5": 0.4}})[1]
    assert slow["bound"] == 0.18 and slow["at_most"] and not slow["met"]
    assert met_words(slow) == "no: out of reach here (at best 18%)"
    assert "draws put it at +18%" in slow["detail"]
    assert met_words(dict(slow, bound=0.14)) == "no"                        # within 5 points over: a plain miss
    assert met_words(dict(slow, bound=0.02)) == "no"                        # the draws allow it: a plain miss
    # without a bound (the async-vs-turn-batched target; the p50 one without an estimate): no key, a plain yes / no
    assert "bound" not in target_checks(sc[2], {"modes": [_mode("async", 10.0, p50=2.0),
                                                          _mode("async+carryover 0.5", 6.0, p50=2.0)]})[1]
    assert met_words({"met": True, "threshold": 0.3, "bound": 0.1}) == "yes"
    # the bounds are estimates: one within 5 points (0.05x) of the threshold is a plain miss
    assert met_words({"met": False, "threshold": 0.3, "bound": 0.26}) == "no"
    assert met_words({"met": False, "threshold": 1.8, "bound": 1.76}) == "no"
    assert met_words({"met": False, "threshold": 0.3, "bound": 0.24}) == "no: out of reach here (at best 24%)"
    md = suite_markdown({"command": "x", "engine": "hf", "model": "m", "ceiling": None, "targets": [speed, near],
                         "environment": env})
    assert "| 1.54x | no: out of reach here (at best 1.61x) |" in md and "| 1.54x | no |" in md
