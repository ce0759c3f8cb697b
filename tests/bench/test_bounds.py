"""bench/bounds.py: what a step could take at best on the benchmark's workload."""
import pytest

from agent_rl.bench.bounds import carry_steps, decode_cost, ideal_steps, tail_bounds, tool_wait_floor
from agent_rl.bench.workload import Dist, TrajectoryPlan, Workload


def plan(tokens, lat):
    return TrajectoryPlan(0, 0, list(tokens), list(lat), [False] * len(lat))


def test_tool_wait_floor_bounds_async_speedup():
    def plan(lat):
        return TrajectoryPlan(0, 0, [8] * (len(lat) + 1), list(lat), [False] * len(lat))

    # turn-batched waits max(3, 1) + max(1, 3) = 6 s; async waits for the largest sum, 4 s
    f = tool_wait_floor([plan([3.0, 1.0]), plan([1.0, 3.0]), plan([2.0])])
    assert f == {"turn_batched_s": 6.0, "async_s": 4.0, "async_speedup_bound": 1.5}
    assert tool_wait_floor([plan([]), plan([])])["async_speedup_bound"] is None   # no tool calls: no bound


def test_tail_bounds_replay_the_modes_steps_with_free_decoding():
    tokens = [10, 2, 4, 6, 1, 8, 3, 5, 7]   # group g's single sample generates tokens[g]

    class W:
        num_prompts, n = 2, 1

        def plan(self, group, sample):
            return TrajectoryPlan(group, sample, [tokens[group]], [], [])

    # async: groups 0-1 then 2-3 -> steps of 10 and 6 (mean 8)
    # over-sampling 0.5, 3 groups a step: {10, 2, 4} ends at the 2nd fastest, 4; {6, 1, 8} at 6 -> 1 - 5/8
    assert abs(tail_bounds(W(), 0.5, carry=False, steps=2)["cut"] - (1 - 5 / 8)) < 1e-9
    # carry-over: {10, 2, 4} ends at 4 and carries group 0 with 6 left; {6 left, 6, 1} ends at 6 -> 1 - 5/8;
    # after one warm-up step the measured steps are {6 left, 6, 1} -> 6 and {0 left, 8, 3} -> 3 against async 8 -> 1 - 4.5 / 8
    assert abs(tail_bounds(W(), 0.5, carry=True, steps=2)["cut"] - (1 - 5 / 8)) < 1e-9
    assert abs(tail_bounds(W(), 0.5, carry=True, steps=2, warmup=1)["cut"] - (1 - 4.5 / 8)) < 1e-9
    assert tail_bounds(W(), 0.0, carry=True, steps=2) is None   # nothing launched past B: nothing to cut
    # every pass priced: (1 a pass, 0 a row) is free decoding again
    assert abs(tail_bounds(W(), 0.5, carry=False, steps=2, cost=(1.0, 0.0))["cut"] - (1 - 5 / 8)) < 1e-9
    # rows alone (0, 1): a step costs the tokens decoded until it ends. async {10, 2} -> 12, {4, 6} -> 10;
    # over-sampling {10, 2, 4} to 4 -> 4 + 2 + 4 = 10, {6, 1, 8} to 6 -> 13: 23 against 22, the extras cost more
    assert abs(tail_bounds(W(), 0.5, carry=False, steps=2, cost=(0.0, 1.0))["cut"] - (1 - 23 / 22)) < 1e-9
    # carry-over: {10, 2, 4} to 4 -> 10, then {6 left, 6, 1} to 6 -> 13
    assert abs(tail_bounds(W(), 0.5, carry=True, steps=2, cost=(0.0, 1.0))["cut"] - (1 - 23 / 22)) < 1e-9
    # both (1, 1): async 10 + 12 and 6 + 10 = 38; over-sampling 4 + 10 and 6 + 13 = 33
    assert abs(tail_bounds(W(), 0.5, carry=False, steps=2, cost=(1.0, 1.0))["cut"] - (1 - 33 / 38)) < 1e-9


def test_tail_bounds_kept_latency_p50_counts_a_carried_trajectorys_earlier_steps():
    tokens = [10, 2, 4, 6, 1, 8, 3, 5, 7]

    class W:
        num_prompts, n = 2, 1

        def plan(self, group, sample):
            return TrajectoryPlan(group, sample, [tokens[group]], [], [])

    def p50(*args, **kw):
        return tail_bounds(W(), *args, **kw)["kept_p50"]
    # free decoding: a latency is a trajectory's tokens. async keeps 10, 2, 4, 6 (p50 5); over-sampling 0.5 the two
    # fastest of {10, 2, 4} and {6, 1, 8}: 2, 4, 1, 6 (p50 3)
    assert abs(p50(0.5, carry=False, steps=2) - (3 / 5 - 1)) < 1e-9
    # carry-over: {10, 2, 4} keeps 2, 4 and cuts group 0 at 4 with 6 left; {6 left, 6, 1} keeps 1 and group 0, whose
    # latency is its 4 in the step before plus 6: 2, 4, 1, 10 (p50 3)
    assert abs(p50(0.5, carry=True, steps=2) - (3 / 5 - 1)) < 1e-9
    # after a warm-up step: 1, 10, then {group 3, done at 6 in the step before; 8; 3} keeps group 3 (6) and 3: p50 4.5
    assert abs(p50(0.5, carry=True, steps=2, warmup=1) - (4.5 / 5 - 1)) < 1e-9
    # rows priced (0, 1): async's latencies 12, 4 and 8, 10 (p50 9); over-sampling's kept 6, 10 and 3, 13 (p50 8)
    assert abs(p50(0.5, carry=False, steps=2, cost=(0.0, 1.0)) - (8 / 9 - 1)) < 1e-9


def test_carry_steps_replay_carry_over_with_its_tool_waits():
    plans = {0: ([1, 1], [5.0]), 1: ([3], []), 2: ([8], []), 3: ([2], [])}

    class W:
        num_prompts, n = 1, 1

        def plan(self, group, sample):
            tokens, lat = plans[group]
            return TrajectoryPlan(group, sample, list(tokens), list(lat), [False] * len(lat))

    # B = 1, rate 1: two groups a step, a pass 1 s. Step 0: groups 0 and 1 decode 0-1; group 0's call runs 1-6; group 1
    # ends at 3 and is kept, so the step ends at 3 and cuts group 0 inside its call. Step 1: group 0 runs its call again
    # from the start (returns at 5; it would return at 3 if the call went on) while group 2 decodes; group 0's last
    # token 5-6 completes it first: 6. Mean 4.5; after step 0 as warm-up: 6
    assert carry_steps(W(), 1.0, steps=2, warmup=0, cost=(1.0, 0.0)) == pytest.approx(4.5)
    assert carry_steps(W(), 1.0, steps=1, warmup=1, cost=(1.0, 0.0)) == pytest.approx(6.0)
    # rows priced too (1 + 1 a row): step 0 one pass of 2 rows 0-3, group 1 alone 3-7 (2 passes of 2 s): 7; step 1
    # group 2 alone 0-6 (3 passes; group 0's call returns at 5, inside the third), both 6-9: group 0 done at 9
    assert carry_steps(W(), 1.0, steps=2, warmup=0, cost=(1.0, 1.0)) == pytest.approx((7 + 9) / 2)


def test_carry_steps_with_instant_tools_are_the_tail_bounds_replay():
    w = Workload(num_prompts=8, n=2, turns=Dist.parse("3"), tokens_per_turn=Dist.parse("pareto:alpha=1.2,scale=32,max=512"))
    cost = (1e-3, 1e-5)
    # plain async's steps: the groups 0-7, then 8-15 (ideal_steps replays one step's plans)
    plain = [ideal_steps([w.plan(g, k) for g in range(s * 8, (s + 1) * 8) for k in range(2)], cost)["async_s"]
             for s in range(2)]
    for steps in (1, 2):
        carry = carry_steps(w, 0.5, steps=steps, warmup=1, cost=cost)
        cut = tail_bounds(w, 0.5, carry=True, steps=steps, warmup=1, cost=cost)["cut"]
        assert carry * steps == pytest.approx((1 - cut) * sum(plain[:steps]))
        assert 0 < carry < max(plain)


def test_decode_cost_fits_a_pass_and_a_row_on_raw_runs():
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


def test_ideal_steps_price_each_pass_by_the_trajectories_decoding_in_it():
    a, b = plan([2, 2], [1.0]), plan([2, 2], [3.0])
    # a pass 1 s, rows free: async 0-2 both decode; a waits to 3, decodes 3-5; b returns at 5, decodes 5-7.
    # turn-batched: 2 passes, the slowest call 3 s, 2 passes: 7 s as well
    assert ideal_steps([a, b], (1.0, 0.0)) == {"async_s": 7.0, "turn_batched_s": 7.0}
    # rows alone, 1 s each: both decode 0-4 (2 passes of 2 rows); a alone 5-7; b returns at 7, alone 7-9.
    # turn-batched: 4 s of rows, 3 s of waiting, 4 s of rows
    assert ideal_steps([a, b], (0.0, 1.0)) == {"async_s": 9.0, "turn_batched_s": 11.0}
    # a call that returns inside a pass joins the next pass. Passes cost 1 + 1 a row: 0-3 (c, d); c's call returns at
    # 3.5, inside d's lone pass 3-5; c joins at 5: 5-8 (c, d), then d's last token alone 8-10.
    # turn-batched: 4 passes of turn 0 (1 + 4 rows = 9 s), the call 0.5 s, c's turn alone 2 s
    c, d = plan([1, 1], [0.5]), plan([4], [])
    assert ideal_steps([c, d], (1.0, 1.0)) == {"async_s": 10.0, "turn_batched_s": 11.5}
    # nothing decoding while every call runs: the engine idles until the first returns
    assert ideal_steps([plan([1, 1, 1], [2.0, 0.0])], (1.0, 0.0)) == {"async_s": 5.0, "turn_batched_s": 5.0}
    assert ideal_steps([], (1.0, 1.0)) == {"async_s": 0.0, "turn_batched_s": 0.0}


def test_ideal_async_is_never_above_ideal_turn_batched_and_matches_the_floor_with_free_decoding():
    w = Workload(num_prompts=16, n=4, turns=Dist.parse("uniform:lo=1,hi=4"),
                 tokens_per_turn=Dist.parse("uniform:lo=8,hi=64"), tool_latency=Dist.parse("lognormal:mean=0.5,sigma=1"))
    plans = [w.plan(g, s) for g in range(16) for s in range(4)]
    for cost in ((1e-3, 1e-5), (2e-3, 0.0), (0.0, 5e-5)):
        ideal = ideal_steps(plans, cost)
        assert 0 < ideal["async_s"] <= ideal["turn_batched_s"]
        # no faster than its slowest trajectory's waits, nor than decoding its longest trajectory alone
        floor = tool_wait_floor(plans)
        longest = max(p.total_gen_tokens for p in plans) * (cost[0] + cost[1])
        assert ideal["async_s"] >= max(floor["async_s"], longest) - 1e-9
    # decoding that costs ~nothing: the tool waits alone (tool_wait_floor), up to the passes' nanoseconds
    free = ideal_steps(plans, (1e-9, 0.0))
    assert free["async_s"] == pytest.approx(floor["async_s"], abs=1e-6)
    assert free["turn_batched_s"] == pytest.approx(floor["turn_batched_s"], abs=1e-6)
