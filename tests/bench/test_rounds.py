"""`bench rollout|suite --rounds`: repeated rounds, alternating mode order, merged headline numbers, and the raw
engine's warm-up at the measured batch shape."""
import json
import re

from agent_rl.bench.engine_bench import bench_engine, bench_engine_turns
from agent_rl.bench.engine_stacks import per_token_line
from agent_rl.bench.report import comparisons
from agent_rl.bench.results import charged_step_s
from agent_rl.bench.rounds import ceiling_rounds, merge_ceilings, merge_modes, round_order, step_range
from agent_rl.bench.suite import scenario_targets, scenarios
from agent_rl.cli.main import main as cli_main
from agent_rl.engines.base import GenerateOutput


def _m(name, steps, ratio, p50, idle, wall):
    return {"mode": name, "step_wall_s": steps, "step_wall_s_mean": sum(steps) / len(steps), "ratio_to_ceiling": ratio,
            "latency_p50_s": p50, "latency_p90_s": p50, "latency_p99_s": p50, "gen_tokens_per_s": 100.0 * ratio,
            "kept_tokens_per_s": 1.0, "trajectories_per_s": 1.0, "inflight_mean": 10.0, "loop_cpu_frac": 0.2,
            "engine_idle_s": idle, "engine_busy_s": wall - idle, "wall_s": wall, "gen_tokens": 10, "kept_tokens": 10,
            "trajectories_kept": 4, "launched": 4, "aborted": 0, "carried": 0, "loop_cpu_s": 0.1, "gc_s": 0.05, "engine_requests": 8, "inflight_peak": 8,
            "completion_s": [1.0, 2.0]}


def test_round_order_alternates():
    assert round_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert round_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert round_order(["a", "b", "c"], 2) == ["a", "b", "c"]


def test_merge_modes_over_rounds():
    r0 = [_m("turn-batched", [2.0, 2.0], 0.5, 1.0, 0.0, 4.0), _m("async", [1.0, 1.2], 0.9, 0.5, 1.0, 2.2)]
    r1 = [_m("async", [1.4, 1.4], 0.7, 0.7, 0.0, 2.8), _m("turn-batched", [3.0, 3.0], 0.4, 2.0, 2.0, 6.0)]  # reversed
    r2 = [_m("turn-batched", [2.5, 2.5], 0.45, 3.0, 0.0, 5.0), _m("async", [1.1, 1.1], 0.8, 0.6, 0.0, 2.2)]
    assert merge_modes([r0]) is r0                                     # one round: untouched
    tb, asy = merge_modes([r0, r1, r2])
    assert (tb["mode"], asy["mode"]) == ("turn-batched", "async")       # round 0's order
    assert tb["step_wall_s"] == [2.0, 2.0, 3.0, 3.0, 2.5, 2.5] and abs(tb["step_wall_s_mean"] - 2.5) < 1e-9
    assert tb["step_wall_s_range"] == [2.0, 3.0] and step_range(tb) == " (2.00-3.00)"
    assert tb["ratio_to_ceiling"] == 0.45 and tb["latency_p50_s"] == 2.0     # medians of the rounds
    assert abs(asy["gen_tokens_per_s"] - 80.0) < 1e-9                       # mean of 90, 70, 80
    assert tb["wall_s"] == 15.0 and tb["engine_idle_s"] == 2.0 and abs(tb["engine_idle_frac"] - 2 / 15) < 1e-9
    assert tb["engine_requests"] == 24 and abs(tb["loop_cpu_s"] - 0.3) < 1e-9   # summed alike: CPU per request holds
    assert abs(tb["gc_s"] - 0.15) < 1e-9                                   # collections' seconds: summed like wall_s
    assert [r["step_wall_s_mean"] for r in asy["rounds"]] == [1.1, 1.4, 1.1]
    assert asy["completion_s"] == [1.0, 2.0]                               # traces: round 0's
    assert step_range(r0[0]) == ""
    assert "warmup_step_wall_s" not in tb
    # the scheduler's samples: round 0's, with round 0's tokens (per token: its window over its tokens, not all rounds')
    sampled = [[dict(_m("async", [1.0], 0.9, 0.5, 0.0, 1.0), gen_tokens=1000,
                     engine_stacks={"wall_s": w, "tokens": 1000, "stages": []})] for w in (0.02, 0.03)]
    merged = merge_modes(sampled)[0]
    assert merged["gen_tokens"] == 2000 and merged["engine_stacks"]["wall_s"] == 0.02
    assert per_token_line(merged["engine_stacks"], merged["gen_tokens"]) == "per generated token 20.00 us"
    carry = [[dict(_m("async+carryover 0.5", [1.0, 1.0], 0.9, 0.5, 0.0, 2.0), warmup_step_wall_s=[w])] for w in (3.0, 2.5)]
    assert merge_modes(carry)[0]["warmup_step_wall_s"] == [3.0, 2.5]       # every round's own warm-up step


def _carry(steps, gen, drawn):
    m = dict(_m("async+carryover 0.5", steps, 0.9, 0.5, 0.0, sum(steps)), partial_rollout=True, gen_tokens=gen,
             stock_drawn_tokens=drawn)
    return dict(m, step_wall_s_charged=charged_step_s(m))


def test_carry_over_with_its_stock_change_charged_over_rounds():
    # round 0 kept 50 tokens more than it generated (drawn from the warm-up's stock), round 1 left 10 more behind
    r0 = [_m("async", [2.0], 0.9, 0.5, 0.0, 2.0), _carry([1.0], 100, 50)]
    r1 = [_carry([1.2], 120, -10), _m("async", [2.0], 0.9, 0.5, 0.0, 2.0)]
    assert abs(r0[1]["step_wall_s_charged"] - 1.5) < 1e-9 and abs(r1[0]["step_wall_s_charged"] - 1.1) < 1e-9
    asy, carry = merge_modes([r0, r1])
    assert carry["stock_drawn_tokens"] == 40 and carry["gen_tokens"] == 220
    assert abs(carry["step_wall_s_charged"] - 1.1 * 260 / 220) < 1e-9      # summed tokens over every round's steps
    assert asy["step_wall_s_charged"] == asy["step_wall_s_mean"] == 2.0      # a mode that carries nothing
    comp = comparisons([asy, carry])
    assert abs(comp["step_time_cut_vs_async"]["async+carryover 0.5"] - 0.45) < 1e-9            # measured
    assert abs(comp["step_time_cut_vs_async_charged"]["async+carryover 0.5"] - (1 - 1.3 / 2.0)) < 1e-9
    assert [round(v, 6) for v in comp["step_time_cut_vs_async_charged_rounds"]["async+carryover 0.5"]] == [0.25, 0.45]
    assert "step_time_cut_vs_async_charged" not in comparisons([asy, _m("async+oversample 0.5", [1.0], 0.9, 0.5, 0, 1)])


def test_merge_ceilings_takes_the_median_round():
    cs = [{"requests": 8, "tokens_per_s": v} for v in (300.0, 100.0, 200.0)]
    m = merge_ceilings(cs)
    assert m["tokens_per_s"] == 200.0 and m["tokens_per_s_rounds"] == [300.0, 100.0, 200.0]
    assert "300, 100, 200 tokens/s" in ceiling_rounds(m)
    assert merge_ceilings([cs[0]]) is cs[0] and ceiling_rounds(cs[0]) == "" and merge_ceilings([None]) is None
    assert merge_ceilings(cs[1:])["tokens_per_s"] == 200.0      # of two rounds the faster: ratios never flattered


def test_scenario_targets_show_each_round():
    sc = scenarios(8, 4, "3", "16", "0.5", "pareto:alpha=1.2,scale=4,max=64", 8, "0.25,0.5", 0)[0]
    rounds = [{"modes": [_m("turn-batched", [2.0], 0.5, 1.0, 0, 2), _m("async", [1.0], 0.93, 1.0, 0, 1)]},
              {"modes": [_m("async", [1.6], 0.6, 1.0, 0, 1), _m("turn-batched", [1.6], 0.5, 1.0, 0, 2)]}]
    merged = {"modes": merge_modes([r["modes"] for r in rounds]), "round_results": rounds}
    ceil, tb = scenario_targets(sc, merged)
    assert ceil["rounds"] == [0.93, 0.6] and ceil["detail"].endswith("rounds: 93%, 60%")
    assert tb["rounds"] == [2.0, 1.0] and tb["detail"].endswith("rounds: 2.00x, 1.00x")
    assert abs(tb["value"] - 1.8 / 1.3) < 1e-9                               # merged: mean steps 1.8 vs 1.3


class _Recorder:
    def __init__(self):
        self.calls = []

    async def generate(self, ids, sp, rid):
        self.calls.append((list(ids), sp.max_new_tokens, rid))
        return GenerateOutput([5] * sp.max_new_tokens, [-1.0] * sp.max_new_tokens, "length")


async def test_raw_engine_warms_up_at_the_measured_shape():
    eng = _Recorder()
    prompts = [[1, 2, 3], [4, 5, 6, 7]]
    res = await bench_engine(eng, prompts, 9)
    warm, measured = eng.calls[:2], eng.calls[2:]
    # an engine without a prefix cache to flush: one warm-up request per measured one, reversed ids, 2 new tokens
    assert [c[0] for c in warm] == [[3, 2, 1], [7, 6, 5, 4]] and {c[1] for c in warm} == {2}
    assert [c[0] for c in measured] == prompts and {c[1] for c in measured} == {9}
    assert res["output_tokens"] == 18 and res["requests"] == 2 and "warmup_cache_flushed" not in res
    await bench_engine(eng, prompts, 9, warmup=False)
    assert len(eng.calls) == 6


async def test_raw_engine_warms_up_on_the_measured_prompts_then_flushes_their_cache():
    # prompts sharing a prefix run other kernels (triton's JIT compiled them inside a fresh engine's measured run on the
    # GPU): the warm-up sends the measured prompts themselves, then the prefix cache is flushed before the timer
    class _Cached(_Recorder):
        def __init__(self, ok=True):
            super().__init__()
            self.ok = ok

        async def flush_cache(self):
            self.calls.append("flush")
            return self.ok

    prompts = [[1, 2, 3], [1, 2, 4]]
    eng = _Cached()
    res = await bench_engine(eng, prompts, 5)
    assert [c if c == "flush" else (c[0], c[1]) for c in eng.calls] == [
        ([1, 2, 3], 2), ([1, 2, 4], 2), "flush", ([1, 2, 3], 5), ([1, 2, 4], 5)]
    assert res["warmup_cache_flushed"] is True
    assert (await bench_engine(_Cached(ok=False), prompts, 5))["warmup_cache_flushed"] is False   # said, not hidden


async def test_the_raw_run_is_measured_with_the_heap_frozen_like_a_rollout_step():
    import gc

    from agent_rl.rollout.frozen_heap import _STARTUP_FROZEN

    class _Frozen(_Recorder):
        async def generate(self, ids, sp, rid):
            self.calls.append(gc.get_freeze_count())
            if not rid.endswith("-warmup-0") and len(self.calls) == 3:
                gc.collect()   # one full collection inside the measured run
            return GenerateOutput([5] * sp.max_new_tokens, [-1.0] * sp.max_new_tokens, "length")

    eng = _Frozen()
    res = await bench_engine(eng, [[1, 2, 3], [4, 5, 6, 7]], 4)
    assert all(n > _STARTUP_FROZEN for n in eng.calls[2:])         # the measured requests ran frozen
    assert res["gc_full_collections"] == 1 and res["gc_s"] > 0
    assert gc.get_freeze_count() <= _STARTUP_FROZEN                 # and given back after


async def test_the_engine_alone_on_the_turns_chains_each_trajectory_in_its_session():
    class _Sessions(_Recorder):
        def __init__(self):
            super().__init__()
            self.ended = []

        async def generate(self, ids, sp, rid):
            self.calls.append((list(ids), sp.max_new_tokens, sp.session, sp.affinity, sp.ignore_eos))
            return GenerateOutput([7 + len(ids)] * sp.max_new_tokens, [-1.0] * sp.max_new_tokens, "length")

        async def end_session(self, key):
            self.ended.append(key)

    eng = _Sessions()
    res = await bench_engine_turns(eng, [[1, 2], [3]], [[2, 1, 3], [1]], [8, 8], groups=[4, 5], request_prefix="t")
    first, second = [c for c in eng.calls if c[2] == "t-0"], [c for c in eng.calls if c[2] == "t-1"]
    # each turn's context: the prompt, every earlier output, the observation after each turn but the last
    assert [c[0] for c in first] == [[1, 2], [1, 2, 9, 9, 8, 8], [1, 2, 9, 9, 8, 8, 13, 8, 8]]
    assert [c[1] for c in first] == [2, 1, 3] and second == [([3], 1, "t-1", "5", True)]
    assert {c[3] for c in first} == {"4"} and all(c[4] for c in eng.calls)   # the group's affinity, ignore_eos
    assert sorted(eng.ended) == ["t-0", "t-1"]                                # every session ended
    assert res["trajectories"] == 2 and res["requests"] == 4 and res["output_tokens"] == 7
    assert res["observation_tokens"] == 2 and res["tokens_per_s"] > 0


def test_bench_rollout_turns_ceiling_on_the_sim_engine(tmp_path, tiny_model_path):
    # a prefill pass of 20 ms a turn, decode passes of 0.2 ms: three turns cost the engine itself far more than one
    out = tmp_path / "t"
    assert cli_main(["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1,20", "--model", tiny_model_path,
                     "--out", str(out), "--prompts", "4", "--n", "2", "--turns", "3", "--tokens-per-turn", "4",
                     "--modes", "turn-batched,async", "--steps", "1", "--rounds", "2", "--turns-ceiling",
                     "--no-progress"]) == 0
    res = json.load(open(out / "rollout_bench.json"))
    turns = res["ceiling"]["turns"]
    assert turns["trajectories"] == 8 and turns["requests"] == 24 and turns["output_tokens"] == 8 * 12
    assert turns["ratio_to_raw"] < 0.8 and len(turns["tokens_per_s_rounds"]) == 2
    for m in res["modes"]:
        assert 0 < m["ratio_to_turns_ceiling"] and len([r for r in m["rounds"] if r["ratio_to_turns_ceiling"]]) == 2
    assert all(c["turns"]["tokens_per_s"] > 0 for c in (r["ceiling"] for r in res["round_results"]))
    summary = (out / "summary.md").read_text()
    assert re.search(r"the engine alone on the same turns \(8 trajectories, 24 requests.*\d+% of the raw engine "
                     r"\(rounds: \d+, \d+\).*: turn-batched \d+%, async \d+%", summary), summary


def test_bench_rollout_rounds_on_the_sim_engine(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "b"
    assert cli_main(["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path,
                     "--out", str(out), "--prompts", "4", "--n", "2", "--turns", "2", "--tokens-per-turn", "4",
                     "--modes", "turn-batched,async,oversample,oversample@load0.5", "--over-sample", "0.5",
                     "--steps", "1", "--rounds", "3", "--no-progress"]) == 0
    res = json.load(open(out / "rollout_bench.json"))
    assert "turns" not in res["ceiling"]   # the engine alone on the turns only with --turns-ceiling
    variant = "async+oversample 0.5@load0.5"
    assert len(res["round_results"]) == 3 and len(res["ceiling"]["tokens_per_s_rounds"]) == 3
    assert [m["mode"] for m in res["round_results"][1]["modes"]] == [variant, "async+oversample 0.5", "async",
                                                                      "turn-batched"]   # reversed
    for m in res["modes"]:
        assert len(m["rounds"]) == 3 and len(m["step_wall_s"]) == 3 and m["trajectories_kept"] == 3 * 8
        assert "completion_s" not in res["round_results"][0]["modes"][0]
    summary = (out / "summary.md").read_text()
    assert "3 rounds (`--rounds`)" in summary and "rounds:" in summary
    # the tail bounds launch every group at once: none for the gated variant
    assert set(res["tail_cut_bound"]) == set(res["tail_cut_bound_engine"]) == {"async+oversample 0.5"}
    comp = res["comparisons"]   # round by round (bench/rounds.paired)
    assert len(comp["async_speedup_vs_turn_batched_rounds"]) == 3 and len(comp["step_time_cut_vs_async_rounds"][variant]) == 3
    assert comp["variant_vs_plain"][variant]["plain"] == "async+oversample 0.5" and len(comp["variant_vs_plain"][variant]["rounds"]) == 3
    assert re.search(r"faster \(each round: [\d.]+x, [\d.]+x, [\d.]+x\)", summary)
    assert re.search(re.escape(f"- {variant} vs async+oversample 0.5: step time ") + r"[+-]\d+% \(longer \+, shorter -\) "
                     r"\(each round: [+-]\d+%, [+-]\d+%, [+-]\d+%\)", summary)
    assert re.search(r"async\+oversample 0.5: step time .* \(each round's cut: [+-]\d+%, [+-]\d+%, [+-]\d+%\)", summary)
    assert cli_main(["bench", "rollout", "--engine", "sim", "--rounds", "0", "--model", tiny_model_path,
                     "--out", str(out)]) == 2
    assert "--rounds must be >= 1" in capsys.readouterr().err


def sim_suite(out, model_path, *extra) -> dict:
    """A small `bench suite` on the simulated engine into `out`; its suite.json."""
    assert cli_main(["bench", "suite", "--engine", "sim", "--sim-cost", "0.2,1", "--model", model_path,
                     "--out", str(out), "--prompts", "4", "--n", "2", "--turns", "2", "--tokens-per-turn", "4",
                     "--tool-latency", "0.01", "--heavy-tail-tokens", "pareto:alpha=1.2,scale=2,max=8",
                     "--over-sample", "0.5", "--ceiling-prompts", "4,8", "--ceiling-prompt-len", "8",
                     "--ceiling-new-tokens", "4", "--no-progress", *extra]) == 0
    return json.load(open(out / "suite.json"))


def test_bench_suite_end_to_end_with_rounds_on_the_sim_engine(tmp_path, tiny_model_path):
    out = tmp_path / "s"
    suite = sim_suite(out, tiny_model_path, "--steps", "2", "--rounds", "2")
    assert [c["requests"] for c in suite["ceilings"]] == [4, 8]
    assert all(len(c["tokens_per_s_rounds"]) == 2 for c in suite["ceilings"])
    assert set(suite["scenarios"]) == {"instant-tools", "tool-latency", "heavy-tail"}
    checks = [t for t in suite["targets"] if t["scenario"] != "raw engine"]
    assert len(checks) == 6 and all(len(t["rounds"]) == 2 and "; rounds: " in t["detail"] for t in checks)
    assert all(len(m["rounds"]) == 2 for sc in suite["scenario_modes"].values() for m in sc)
    md = (out / "summary.md").read_text()
    assert "(the median shown)" in md and "| instant-tools | async |" in md
    # the event-loop column: share of wall; CPU a request; garbage collection (the suite keeps what it needs)
    row = next(line for line in md.splitlines() if line.startswith("| instant-tools | async |"))
    assert re.search(r"\| \d+%; \d+\.\d+ ms; GC \d+\.\d+% \|", row), row
    for sc in suite["scenarios"].values():
        assert len(json.load(open(out / sc))["round_results"]) == 2
    # instant tools also ran the engine alone on their turns (each round), the other scenarios not
    instant = json.load(open(out / suite["scenarios"]["instant-tools"]))
    assert len(instant["ceiling"]["turns"]["tokens_per_s_rounds"]) == 2
    assert "turns" not in json.load(open(out / suite["scenarios"]["tool-latency"]))["ceiling"]
    ratio = next(t for t in suite["targets"] if t["scenario"] == "instant-tools" and "raw engine" in t["target"])
    assert re.search(r"; the engine alone on the same turns \(no tools, no rollout loop\) \d+% of the raw engine, "
                     r"async \d+% of that", ratio["detail"]), ratio["detail"]
    # the heavy-tail bound also at the simulated engine's own decode cost (--sim-cost 0.2,1)
    tail = json.load(open(out / suite["scenarios"]["heavy-tail"]))
    assert tail["decode_cost"] == {"pass_ms": 0.2, "row_us": 1.0, "source": "the simulated engine's (--sim-cost)"}
    assert set(tail["tail_cut_bound_engine"]) == set(tail["tail_cut_bound"]) == {"async+oversample 0.5", "async+carryover 0.5"}
    cut = next(t for t in suite["targets"] if t["scenario"] == "heavy-tail" and "cut step time" in t["target"])
    assert "at this engine's decode cost (0.20 ms a pass + 1.0 us a row, the simulated engine's (--sim-cost)) " \
           "async+oversample 0.5 " in cut["detail"]
    # and the kept trajectories' latency p50 there, for the best-cut mode's p50 target
    assert set(tail["tail_p50_bound_engine"]) == set(tail["tail_cut_bound"])
    kept = next(t for t in suite["targets"] if t["scenario"] == "heavy-tail" and "latency p50" in t["target"])
    best = cut["detail"].split("best: ")[1].split(";")[0]
    assert kept["bound"] == tail["tail_p50_bound_engine"][best] and kept["at_most"]
    assert f"draws put it at {100 * kept['bound']:+.0f}%" in kept["detail"]
    tail_md = open(out / suite["scenarios"]["heavy-tail"]).name.replace("rollout_bench.json", "summary.md")
    assert "- the kept trajectories' latency p50 against plain async's at that cost" in open(tail_md).read()
    # with tool waits: the step of an engine that costs only its decode passes at that cost, which the simulated
    # engine (the same passes, plus prefill and our loop) cannot beat; the async target's detail compares it
    tools = json.load(open(out / suite["scenarios"]["tool-latency"]))
    ideal, by = tools["ideal_step"], {m["mode"]: m for m in tools["modes"]}
    assert 0 < ideal["async_s"] <= by["async"]["step_wall_s_mean"]
    assert 0 < ideal["turn_batched_s"] <= by["turn-batched"]["step_wall_s_mean"]
    assert "ideal_step" not in tail and "ideal_step" not in instant   # no tool waits there
    speedup = next(t for t in suite["targets"] if t["scenario"] == "tool-latency" and "async step" in t["target"])
    want = by["turn-batched"]["step_wall_s_mean"] / ideal["async_s"]
    assert f"only its decode passes at this engine's cost would be {want:.2f}x faster than this turn-batched" \
        in speedup["detail"], speedup["detail"]
    assert f"a step takes {ideal['async_s']:.2f} s async" in (out / "tool-latency" / "summary.md").read_text()
    # and carry-over's step replayed at that cost (its warm-up too), the carry-over target's bound
    carried = [m for m in by if m.startswith("async+carryover")]
    assert set(ideal["carry_s"]) == set(carried) and carried
    assert all(0 < ideal["carry_s"][m] <= by[m]["step_wall_s_mean"] for m in carried)
    carry = next(t for t in suite["targets"] if t["scenario"] == "tool-latency" and "carry-over step" in t["target"])
    judged = re.search(r"/ (async\+carryover [0-9.]+) mean step time", carry["detail"]).group(1)
    assert abs(carry["bound"] - by["turn-batched"]["step_wall_s_mean"] / ideal["carry_s"][judged]) < 1e-9
    assert (f"; {judged}: {ideal['carry_s'][judged]:.2f} s a step after its warm-up (turn-batched's measured step "
            f"{carry['bound']:.2f}x it)") in (out / "tool-latency" / "summary.md").read_text()
    # the raw engine on each scenario's sizes, every round, kept in the suite: how the machine's pace moved
    assert set(suite["scenario_ceilings"]) == {"instant-tools", "tool-latency", "heavy-tail"}
    assert all(len(c["tokens_per_s_rounds"]) == 2 for c in suite["scenario_ceilings"].values())
    assert "- the raw engine's runs of one shape (rounds and scenarios) at most " in md \
        or "- **the machine's pace moved during this suite**" in md


def test_bench_suite_fits_a_real_engines_decode_cost_on_its_raw_runs(tmp_path, tiny_model_path, monkeypatch):
    import agent_rl.cli.bench as bench_cli

    monkeypatch.setattr(bench_cli, "_sim_decode_cost", lambda engine: None)   # as if its cost were unknown
    out = tmp_path / "s"
    assert cli_main(["bench", "suite", "--engine", "sim", "--sim-cost", "0.5,250", "--model", tiny_model_path,
                     "--out", str(out), "--prompts", "4", "--n", "2", "--turns", "2", "--tokens-per-turn", "4",
                     "--tool-latency", "0", "--heavy-tail-tokens", "pareto:alpha=1.2,scale=2,max=8",
                     "--over-sample", "0.5", "--ceiling-prompts", "4,16", "--ceiling-prompt-len", "8",
                     "--ceiling-new-tokens", "16", "--steps", "1", "--no-progress"]) == 0
    suite = json.load(open(out / "suite.json"))
    cost = json.load(open(out / suite["scenarios"]["heavy-tail"]))["decode_cost"]
    assert cost["source"] == "fitted on the raw runs at 4, 16 requests"
    # wall / new tokens at 4 and 16 rows: 0.5 ms + 250 us a row, plus the loop's own time and one prefill
    assert 100 < cost["row_us"] < 400, cost
    assert "fitted on the raw runs at 4, 16 requests" in (out / "summary.md").read_text()


def test_comparisons_pair_the_modes_round_by_round():
    # the machine's pace moved between rounds: pooled means say async@v is 10% slower, the rounds disagree in sign
    r0 = [_m("turn-batched", [2.0], 0.5, 1.0, 0.0, 4.0), _m("async", [1.0], 0.9, 0.5, 0.0, 2.0),
          dict(_m("async@v", [1.5], 0.9, 0.5, 0.0, 2.0), variant="v"), _m("async+oversample 0.5", [0.8], 0.9, 0.5, 0.0, 2.0)]
    r1 = [dict(_m("async@v", [0.8], 0.9, 0.5, 0.0, 2.0), variant="v"), _m("async", [1.2], 0.9, 0.5, 0.0, 2.0),
          _m("turn-batched", [1.8], 0.5, 1.0, 0.0, 4.0), _m("async+oversample 0.5", [0.9], 0.9, 0.5, 0.0, 2.0)]
    comp = comparisons(merge_modes([r0, r1]))
    assert abs(comp["async_speedup_vs_turn_batched"] - 3.8 / 2.2) < 1e-9
    assert [round(v, 6) for v in comp["async_speedup_vs_turn_batched_rounds"]] == [2.0, 1.5]
    cuts = comp["step_time_cut_vs_async_rounds"]
    assert [round(v, 6) for v in cuts["async+oversample 0.5"]] == [0.2, 0.25]
    v = comp["variant_vs_plain"]["async@v"]
    assert v["plain"] == "async" and abs(v["step_time_change"] - (2.3 / 2.2 - 1)) < 1e-9
    assert [round(x, 6) for x in v["rounds"]] == [0.5, round(0.8 / 1.2 - 1, 6)]
    assert list(comp["variant_vs_plain"]) == ["async@v"]            # a plain mode has no plain mode to compare with
    one = comparisons(r0)                                           # one round: no per-round figures
    assert "async_speedup_vs_turn_batched_rounds" not in one and one["variant_vs_plain"]["async@v"]["rounds"] == []


def test_summary_warns_when_the_carried_stock_moved():
    from agent_rl.bench.report import summary_markdown

    bias = {"mean_planned_tokens_kept": 1.0, "mean_planned_tokens_all": 1.0, "mean_gen_tokens_kept": 1.0}
    modes = [dict(_m("async", [2.0], 0.9, 0.5, 0.0, 2.0), bias=bias, engine_idle_frac=0.0),
             dict(_carry([1.0], 100, 10), kept_tokens=110, bias=bias, engine_idle_frac=0.0),          # drew 9%
             dict(_carry([1.0], 100, 2), mode="async+carryover 1", kept_tokens=102, bias=bias, engine_idle_frac=0.0)]
    result = {"kind": "rollout", "command": "t", "engine": "sim", "model": "m", "modes": modes,
              "comparisons": comparisons(modes),
              "environment": {"device": "cpu", "python": "3", "torch": "x", "transformers": "y", "sglang": None}}
    md = summary_markdown(result)
    assert "- async+carryover 0.5 with its stock change charged: step time +45% cut vs async (9% of the tokens" in md
    assert "**The stock moved by more than 3% of the kept tokens** in async+carryover 0.5 9%: neither" in md
    modes[1]["stock_drawn_tokens"] = 1
    assert "The stock moved" not in summary_markdown(dict(result, comparisons=comparisons(modes)))
