"""Scheduler on a scripted engine + the real ToolRuntime: groups, over-sampling, carry-over, metrics."""
import asyncio
import re

import pytest

from agent_rl.config.schema import MultiTurnConfig, RolloutConfig
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.rollout.scheduler import RolloutScheduler, _Finished
from rollout_fakes import ScriptedEngine, call_text
from rollout_tools import sleep_runtime


def rows(k):
    return [{"prompt": [{"role": "user", "content": f"question {i}"}], "data_source": "arith_synth",
             "reward_model": {"ground_truth": str(i)}, "extra_info": {"index": i}} for i in range(k)]


def question(ids, tokenizer):
    return int(re.search(r"question (\d+)", tokenizer.decode(ids)).group(1))


def turn_of(rid):
    return int(re.search(r"-t(\d+)", rid).group(1))


def cfg(**kw):
    mt = MultiTurnConfig(max_assistant_turns=4, max_new_tokens_per_turn=64)
    base = dict(n=2, multi_turn=mt, progress_bar=False, max_model_len=4096)
    base.update(kw)
    return RolloutConfig(**base)


@pytest.fixture
def setup(tokenizer):
    rt, tool = sleep_runtime(tokenizer, delay=0.0)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    return rt, tool, renderer


def slow_script(tokenizer, slow_questions, words=60):
    """turn 0: one tool call; turn 1: answer. Slow questions answer with many tokens (cut by the scheduler)."""
    def script(ids, rid):
        q = question(ids, tokenizer)
        if turn_of(rid) == 0:
            return call_text("sleep", '{"x": "%d"}' % q)
        return ("word " * words if q in slow_questions else "") + f"<answer>{q}</answer>"
    return script


async def test_groups_rewards_and_metrics(tokenizer, setup):
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, set()))
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=3), reward_fn=lambda t: (1.0, {"dummy": 1.0}))
    res = await sched.run_step(rows(4), step=1)
    assert len(res.trajectories) == 12
    uids = [t.uid for t in res.trajectories]
    assert len(set(uids)) == 4 and all(uids.count(u) == 3 for u in set(uids))
    assert [t.sample_index for t in res.trajectories[:3]] == [0, 1, 2]
    assert all(t.status == "finished" and t.stop_reason == "answer" for t in res.trajectories)
    assert all(t.tool_rewards == {"sleep": 0.5} and t.reward == 1.0 and t.drift == 0 for t in res.trajectories)
    m = res.metrics
    assert m["rollout/launched_groups"] == 4 and m["rollout/kept_groups"] == 4
    assert m["rollout/turns_mean"] == 2 and m["rollout/tool_calls_mean"] == 1
    assert m["rollout/tool_calls/sleep/ok"] == 12 and m["rollout/stop_reason/answer"] == 1.0
    assert m["rollout/drift_mean"] == 0 and m["rollout/gen_tokens_per_s"] > 0 and m["tools/sleep/calls"] == 12
    assert tool.created == tool.released == 12 and not tool.live


async def test_over_sampling_keeps_only_complete_groups(tokenizer, setup):
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, {3, 4, 5}, words=400), token_delay=0.002)
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2, over_sample_rate=1.0))
    res = await sched.run_step(rows(6), step=0)   # B = 6 / 2 = 3
    kept = {t.row["extra_info"]["index"] for t in res.trajectories}
    assert kept == {0, 1, 2} and len(res.trajectories) == 6
    assert all(t.status == "finished" for t in res.trajectories)
    assert len(res.dropped) == 6 and all(t.status == "aborted" for t in res.dropped)
    assert res.metrics["rollout/aborted_trajectories"] == 6 and res.metrics["rollout/kept_groups"] == 3
    assert not engine.running                               # aborted requests really stopped
    assert any(c["finish"] == "abort" for c in engine.calls)
    await rt.close()
    assert tool.created == tool.released == 12 and not tool.live
    assert sched.num_carried_groups == 0


async def test_carry_over_resumes_with_history_intact(tokenizer, setup):
    rt, tool, renderer = setup
    slow = {2, 3}
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, slow, words=300), token_delay=0.002)
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2, over_sample_rate=1.0, partial_rollout=True))
    res = await sched.run_step(rows(4), step=0, batch_size=2)
    assert {t.row["extra_info"]["index"] for t in res.trajectories} == {0, 1}
    assert sched.num_carried_groups == 2 and not res.dropped
    carried = res.carried
    assert len(carried) == 4 and res.metrics["rollout/carried_trajectories"] == 4
    assert all(t.status == "carried" for t in carried)
    snap = {t.id: (list(t.response_ids), list(t.rollout_logprobs), list(t.loss_mask)) for t in carried}
    assert any(len(t.turns) == 2 and t.turns[-1].finish_reason == "abort" and t.turns[-1].output_ids for t in carried)
    assert not engine.running
    assert sched.rows_needed(2) == 2   # ceil(2 * 2) - 2 carried groups
    # carried trajectories keep their tool instances (state such as a submitted answer survives the cut)
    assert len(tool.live) == 4 and tool.created == 8

    slow.clear()
    res2 = await sched.run_step(rows(2), step=1, batch_size=2)
    # the carried groups were launched first and count toward B
    assert res2.metrics["rollout/resumed_groups"] == 2 and res2.metrics["rollout/launched_groups"] == 4
    resumed = [t for t in res2.trajectories if t.id in snap]
    assert len(resumed) == 4, "carried groups finish first (they were nearly done)"
    for t in resumed:
        ids0, lps0, mask0 = snap[t.id]
        assert t.status == "finished" and t.response_ids[:len(ids0)] == ids0
        assert t.rollout_logprobs[:len(lps0)] == lps0 and t.loss_mask[:len(mask0)] == mask0
        assert t.policy_version == 0
    # the kept ones are the resumed ones, begun under step 0's policy: one version behind step 1's
    assert res.metrics["rollout/policy_lag_max"] == 0 and len(res2.trajectories) == 4
    assert res2.metrics["rollout/policy_lag_max"] == res2.metrics["rollout/policy_lag_mean"] == 1
    # no instance was created again for the 4 resumed trajectories: 8 (step 0) + 4 new ones (step 1)
    assert tool.created == 12
    await sched.close()   # releases the instances of trajectories still carried over
    await rt.close()
    assert tool.created == tool.released and not tool.live


async def test_validate_runs_every_row_once(tokenizer, setup):
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, set()))
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=5, over_sample_rate=0.5))
    res = await sched.validate(rows(3))
    assert len(res.trajectories) == 3 and res.metrics["rollout/kept_groups"] == 3


async def test_concurrency_cap(tokenizer):
    rt, tool = sleep_runtime(tokenizer, delay=0.05)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    active, peak = [0], [0]

    def script(ids, rid):
        return call_text("sleep", "{}") if turn_of(rid) == 0 else "done"

    engine = ScriptedEngine(tokenizer, script)
    orig = tool.execute

    async def counting(instance_id, arguments, **kw):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        try:
            return await orig(instance_id, arguments, **kw)
        finally:
            active[0] -= 1

    tool.execute = counting
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=4, max_concurrent_trajectories=3))
    res = await sched.run_step(rows(3), step=0)
    assert len(res.trajectories) == 12 and peak[0] == 3


async def test_drift_zero_for_a_cut_last_turn(tokenizer, setup):
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, lambda ids, rid: "word " * 100)
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=1, multi_turn=MultiTurnConfig(max_new_tokens_per_turn=8)))
    res = await sched.run_step(rows(1), step=0)
    t = res.trajectories[0]
    assert t.stop_reason == "max_new_tokens_per_turn" and t.drift == 0


async def test_drift_is_checked_on_a_bounded_number_per_step(tokenizer, setup):
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, set()))
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=3, drift_checks_per_step=2))
    res = await sched.run_step(rows(3), step=0)
    assert sum(t.drift is not None for t in res.trajectories) == 2 and res.metrics["rollout/drift_mean"] == 0
    res = await sched.run_step(rows(3), step=1)          # the budget is per step
    assert sum(t.drift is not None for t in res.trajectories) == 2


async def test_drift_is_tokenised_off_the_event_loops_thread_and_still_counts(tokenizer, setup):
    """The re-render's tokenisation (the costly part of a drift check) runs in a worker thread and is collected at the
    step's end: a stream that matches reads 0, one that differs is counted, a tokenizer that fails leaves None, and
    a renderer without a thread-safe encoder checks on the loop as before."""
    import threading

    rt, tool, renderer = setup
    threads = []
    real = renderer.threaded_encoder()

    def encoder():
        def encode(text):
            threads.append(threading.get_ident())
            if "question 2" in text:
                raise RuntimeError("tokenizer broke")
            return real(text) + ([7, 7, 7] if "question 1" in text else [])   # 3 ids more than the stream
        return encode

    renderer.threaded_encoder = encoder
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, set()))
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=1, drift_checks_per_step=-1))
    res = await sched.run_step(rows(3), step=0)
    drift = {question(t.prompt_ids, tokenizer): t.drift for t in res.trajectories}
    assert drift == {0: 0, 1: 3, 2: None} and res.metrics["rollout/drift_mean"] == 1.5
    assert len(threads) == 3 and threading.get_ident() not in threads and not sched._drift_jobs
    renderer.threaded_encoder = lambda: None                  # no fast tokenizer: the check runs inline
    res = await sched.run_step(rows(2), step=1)
    assert [t.drift for t in res.trajectories] == [0, 0] and len(threads) == 3


async def test_requests_carry_the_group_launch_order_as_priority(tokenizer, setup):
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, set()))
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2))
    res = await sched.run_step(rows(3), step=0)
    prio = {rid: p for rid, _, p in engine.starts}
    by_question = {}
    for call in engine.calls:
        by_question.setdefault(question(call["input_ids"], tokenizer), set()).add(prio[call["request_id"]])
    assert by_question == {0: {0}, 1: {1}, 2: {2}} and len(res.trajectories) == 6


async def test_over_sampled_extras_start_only_with_spare_capacity(tokenizer, setup):
    """B = 2 groups of 2, 2 extra groups; over_sample_max_load 0.75 -> an extra starts only once fewer than
    ceil(0.75 * 4) = 3 of the step's trajectories are running: after the fast group 0 ended."""
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, {1}, words=300), token_delay=0.002)
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2, over_sample_rate=1.0, over_sample_max_load=0.75))
    res = await sched.run_step(rows(4), step=0, batch_size=2)
    extra_starts = [(i, prio) for i, (rid, running, prio) in enumerate(engine.starts) if prio >= 2 and "-t0" in rid]
    first_done = sorted(i for i, (rid, _, prio) in enumerate(engine.starts) if prio < 2 and "-t1" in rid)
    assert extra_starts and min(i for i, _ in extra_starts) > first_done[1]   # after two kept trajectories' last turns
    first = [running for rid, running, prio in engine.starts if prio < 2 and "-t0" in rid]
    assert max(first) == 4                                 # the B groups start together, ungated
    assert res.metrics["rollout/extra_trajectories_started"] >= len(extra_starts)   # admitted (some cut before a request)
    assert {t.row["extra_info"]["index"] for t in res.trajectories} | {t.row["extra_info"]["index"] for t in res.dropped} == {0, 1, 2, 3}
    assert tool.created == tool.released


async def test_without_a_gate_extras_start_at_once(tokenizer, setup):
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, slow_script(tokenizer, {0, 1}, words=40), token_delay=0.002)
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2, over_sample_rate=1.0))
    res = await sched.run_step(rows(4), step=0, batch_size=2)
    assert max(running for rid, running, _ in engine.starts if "-t0" in rid) == 8
    assert "rollout/extra_trajectories_started" not in res.metrics


async def test_replicated_engine_keeps_each_group_on_one_replica_and_aborts_there(tokenizer, setup):
    """rollout.engine_replicas: a group's turns (its prefix cache) on one replica, groups spread over both, and the
    over-sampled extras' aborts reach the replica that runs them."""
    from agent_rl.engines.replicas import ReplicaEngine

    rt, tool, renderer = setup
    script = slow_script(tokenizer, {3, 4, 5}, words=400)
    a, b = ScriptedEngine(tokenizer, script, token_delay=0.002), ScriptedEngine(tokenizer, script, token_delay=0.002)
    sched = RolloutScheduler(ReplicaEngine([a, b]), renderer, rt, cfg(n=2, over_sample_rate=1.0))
    res = await sched.run_step(rows(6), step=0)   # B = 3 of 6 groups
    assert {t.row["extra_info"]["index"] for t in res.trajectories} == {0, 1, 2} and len(res.dropped) == 6
    where = {}
    for k, eng in enumerate((a, b)):
        for c in eng.calls:
            where.setdefault(question(c["input_ids"], tokenizer), set()).add(k)
    assert all(len(ks) == 1 for ks in where.values()) and len(where) == 6   # every group on one replica
    assert {next(iter(ks)) for ks in where.values()} == {0, 1}              # both replicas used
    assert not a.running and not b.running and any(c["finish"] == "abort" for c in a.calls + b.calls)
    await rt.close()
    assert tool.created == tool.released == 12


async def test_finished_tasks_come_in_the_order_they_end_a_pass_at_a_time():
    gates = [asyncio.Event() for _ in range(4)]

    async def job(i):
        await gates[i].wait()
        return i

    before = asyncio.ensure_future(asyncio.sleep(0, result="early"))
    await before                                     # done before anything waits on it: still delivered
    tasks = [asyncio.ensure_future(job(i)) for i in range(4)]
    finished = _Finished([before, *tasks])
    assert [t.result() for t in await finished.next_batch()] == ["early"]
    gates[2].set()
    assert [t.result() for t in await finished.next_batch()] == [2]
    gates[3].set()                                   # two end in one pass: one batch, in the order they ended
    gates[0].set()
    assert [t.result() for t in await finished.next_batch()] == [3, 0]
    gates[1].set()
    assert [t.result() for t in await finished.next_batch()] == [1]


async def test_waiting_for_a_steps_trajectories_does_not_grow_with_the_pending_set(tokenizer, setup):
    """Trajectories that end one by one: each task gets one done callback from the step, not one per wake-up.
    (`asyncio.wait(pending, FIRST_COMPLETED)` in a loop added and removed one on every pending task at each wake-up:
    O(n^2) a step, ~0.5 s of the loop's CPU at 1536 trajectories.)"""
    rt, tool, renderer = setup
    lengths = {q: 5 * (q + 1) for q in range(8)}     # every trajectory ends at its own time
    engine = ScriptedEngine(tokenizer, lambda ids, rid: "word " * lengths[question(ids, tokenizer)] + "<answer>1</answer>",
                            token_delay=0.001)
    added = {}

    class CountingTask(asyncio.Task):
        def add_done_callback(self, fn, *, context=None):
            added[self] = added.get(self, 0) + 1
            return super().add_done_callback(fn, context=context)

    loop = asyncio.get_running_loop()
    loop.set_task_factory(lambda lp, coro, **kw: CountingTask(coro, loop=lp, **kw))
    try:
        sched = RolloutScheduler(engine, renderer, rt, cfg(n=2, multi_turn=MultiTurnConfig(enable=False)))
        res = await sched.run_step(rows(8), step=0)
    finally:
        loop.set_task_factory(None)
    assert len(res.trajectories) == 16 and all(t.status == "finished" for t in res.trajectories)
    ends = sorted({round(t.end_time, 3) for t in res.trajectories})
    assert len(ends) >= 8                            # they did end at different times
    traj_tasks = [t for t in added if getattr(t.get_coro(), "__name__", "") == "_traj_task"]
    assert len(traj_tasks) == 16
    assert max(added[t] for t in traj_tasks) <= 2    # was one per wake-up of the step: up to 16
