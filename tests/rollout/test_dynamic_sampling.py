"""Dynamic sampling in the scheduler: scripted engine, scripted rewards, the real ToolRuntime."""
import pytest

from agent_rl.config.schema import MultiTurnConfig
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.rollout.group_filter import FilterMetricError, GroupFilter
from agent_rl.orchestration.train_data import TrainData
from agent_rl.rollout.scheduler import RolloutScheduler
from agent_rl.rollout.trajectory import Trajectory
from rollout_fakes import ScriptedEngine, call_text
from rollout_tools import sleep_runtime
from test_scheduler import cfg, question, rows, slow_script, turn_of


@pytest.fixture
def setup(tokenizer):
    rt, tool = sleep_runtime(tokenizer, delay=0.0)
    return rt, tool, ChatRenderer(tokenizer, rt.schemas)


def scripted_rewards(informative):
    """Sample 0 of an informative question scores 1, every other sample 0: only those groups have signal."""
    def reward(t):
        q = t.row["extra_info"]["index"]
        r = 1.0 if (q in informative and t.sample_index == 0) else 0.0
        return r, {"correct": r}
    return reward


def engine_for(tokenizer, slow=(), words=300):
    """Every question: one tool call, then the answer; slow questions answer with `words` words first."""
    return ScriptedEngine(tokenizer, slow_script(tokenizer, set(slow), words=words), token_delay=0.002 if slow else 0.0)


def words_script(tokenizer, words):
    """Like `slow_script`, with its own answer length per question (`words[q]` words before the answer)."""
    def script(ids, rid):
        q = question(ids, tokenizer)
        if turn_of(rid) == 0:
            return call_text("sleep", '{"x": "%d"}' % q)
        return "word " * words.get(q, 0) + f"<answer>{q}</answer>"
    return script


def index(t):
    return t.row["extra_info"]["index"]


def has_signal(trajs):
    return len({t.reward for t in trajs}) > 1


def by_group(trajs):
    out = {}
    for t in trajs:
        out.setdefault(t.uid, []).append(t)
    return list(out.values())


def test_filter_metric_names():
    t = Trajectory(uid="u", sample_index=0, row={"data_source": "x"}, prompt_ids=[1])
    t.reward, t.reward_components = 0.7, {"correct": 1.0, "f1": 0.5}
    assert GroupFilter("score").value(t) == GroupFilter("seq_final_reward").value(t) == 0.7
    assert GroupFilter("acc").value(t) == 1.0 and GroupFilter("f1").value(t) == 0.5
    with pytest.raises(FilterMetricError, match="filter_groups.metric='em'.*correct, f1"):
        GroupFilter("em").value(t)
    assert GroupFilter().informative([t])   # a group of one sample counts (verl)


async def test_filtered_groups_never_reach_the_batch_extras_replace_them(tokenizer, setup):
    rt, tool, renderer = setup
    engine = engine_for(tokenizer, slow={3, 4, 5}, words=60)   # the groups without signal complete first
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=3, over_sample_rate=1.0),
                             reward_fn=scripted_rewards({1, 3, 4, 5}), group_filter=GroupFilter("score"))
    res = await sched.run_step(rows(6), step=1)          # B = 3 of 6 launched
    groups = by_group(res.trajectories)
    assert len(groups) == 3 and all(len(g) == 3 for g in groups)
    assert all(has_signal(g) for g in groups)              # the batch is full of informative groups
    assert {index(g[0]) for g in groups} <= {1, 3, 4, 5}
    assert all(t.status == "finished" for t in res.trajectories)   # never an aborted sample in a kept group
    filtered = by_group(res.filtered)
    assert sorted(index(g[0]) for g in filtered) == [0, 2] and not any(has_signal(g) for g in filtered)
    assert res.metrics["rollout/filtered_groups"] == len(filtered)
    assert res.metrics["rollout/kept_groups"] == 3
    kept_ids = {t.id for t in res.trajectories}
    assert not kept_ids & {t.id for t in res.filtered + res.dropped}
    await rt.close()
    assert tool.created == tool.released and not tool.live


async def test_short_step_when_the_launched_groups_run_out(tokenizer, setup):
    rt, tool, renderer = setup
    sched = RolloutScheduler(engine_for(tokenizer), renderer, rt, cfg(n=2),
                             reward_fn=scripted_rewards({2}), group_filter=GroupFilter("acc"))
    res = await sched.run_step(rows(4), step=1)          # B = 4, one informative group
    assert [index(t) for t in res.trajectories] == [2, 2]
    assert res.metrics["rollout/filtered_groups"] == 3 and not res.dropped and not res.carried
    assert sched.rows_needed(3) == 3                      # the trainer's next round asks for the shortfall


async def test_carry_over_with_the_filter(tokenizer, setup):
    """The cut group is carried with its samples intact and filtered like any other group when it completes."""
    rt, tool, renderer = setup
    engine = ScriptedEngine(tokenizer, words_script(tokenizer, {2: 60, 3: 600}), token_delay=0.002)
    long_turns = MultiTurnConfig(max_assistant_turns=4, max_new_tokens_per_turn=1024)
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2, over_sample_rate=1.0, partial_rollout=True,
                                                       multi_turn=long_turns),
                             reward_fn=scripted_rewards({0, 2, 3}), group_filter=GroupFilter("score"))
    res = await sched.run_step(rows(4), step=0, batch_size=2)
    assert sorted({index(t) for t in res.trajectories}) == [0, 2]
    assert [index(t) for t in res.filtered] == [1, 1]
    assert sched.num_carried_groups == 1 and {index(t) for t in res.carried} == {3}
    assert not engine.running
    res2 = await sched.run_step(rows(1), step=1, batch_size=2)   # carried group 3 + new rows; B = 2
    assert 3 in {index(t) for t in res2.trajectories}
    assert all(has_signal(g) for g in by_group(res2.trajectories))
    assert all(t.status == "finished" for t in res2.trajectories)
    await sched.close()
    await rt.close()
    assert tool.created == tool.released and not tool.live


async def test_validation_never_filters(tokenizer, setup):
    rt, tool, renderer = setup
    sched = RolloutScheduler(engine_for(tokenizer), renderer, rt, cfg(n=2),
                             reward_fn=scripted_rewards(set()), group_filter=GroupFilter("score"))
    res = await sched.validate(rows(3), step=0, n=2)
    assert len(res.trajectories) == 6 and not res.filtered
    await rt.close()


# ---------------------------------------------------------------- the trainer's generation rounds
class SchedulerGroup:
    """The trainer's worker group, each rank a real scheduler on a scripted engine (what `TrainWorker.rollout` does)."""

    def __init__(self, scheds):
        import asyncio

        self.scheds, self.loop = scheds, asyncio.new_event_loop()
        self.calls = []

    def call_each(self, method, args):
        out = []
        for s, a in zip(self.scheds, args):
            if method == "rows_needed":
                out.append(s.rows_needed(*a))
                continue
            rows_, step, b = a
            self.calls.append((len(rows_), b))
            if b <= 0 and not rows_:
                out.append(([], {}, s.num_carried_groups))
                continue
            res = self.loop.run_until_complete(s.run_step(list(rows_), step, batch_size=b))
            out.append((res.trajectories, res.metrics, s.num_carried_groups))
        return out


def trainer_with(tokenizer, informative, batch=4, ranks=2, max_rounds=3, rate=0.0, n_rows=40):
    import types

    from agent_rl.data.loader import PromptLoader
    from agent_rl.orchestration.trainer import Trainer

    scheds = []
    for rank in range(ranks):
        rt, _tool = sleep_runtime(tokenizer, delay=0.0)
        scheds.append(RolloutScheduler(engine_for(tokenizer), ChatRenderer(tokenizer, rt.schemas), rt,
                                       cfg(n=2, over_sample_rate=rate), reward_fn=scripted_rewards(informative),
                                       group_filter=GroupFilter("score"), rank=rank))
    tr = Trainer.__new__(Trainer)
    tr.cfg = types.SimpleNamespace(
        data=types.SimpleNamespace(train_batch_size=batch, max_prompt_length=10_000),
        tools=types.SimpleNamespace(max_failed_calls_per_step=None),
        algorithm=types.SimpleNamespace(filter_groups=types.SimpleNamespace(enable=True, metric="score",
                                                                            max_num_gen_batches=max_rounds)))
    tr.world_size = ranks
    tr.data = TrainData(PromptLoader(rows(n_rows), batch_size=1, shuffle=False), [],
                        types.SimpleNamespace(ok=lambda row: True, dropped=0))
    tr.echo = (lines := []).append
    tr.group = SchedulerGroup(scheds)
    return tr, lines


def test_rounds_fill_the_batch_with_informative_groups(tokenizer):
    tr, lines = trainer_with(tokenizer, informative=set(range(0, 40, 2)), max_rounds=4)   # even questions have signal
    trajs, m = tr._rollout(step=1)
    groups = by_group(trajs)
    assert len(groups) == 4 and all(has_signal(g) for g in groups)
    assert sorted(index(g[0]) for g in groups) == [0, 2, 4, 6]
    # round 1: rank 0 rows 0, 1 / rank 1 rows 2, 3; round 2: row 4 / row 5; round 3: rank 1 alone, row 6
    assert [c for c in tr.group.calls] == [(2, 2), (2, 2), (1, 1), (1, 1), (0, 0), (1, 1)]
    assert m["dynamic_sampling/rounds"] == 3 and m["dynamic_sampling/kept_groups"] == 4
    assert m["dynamic_sampling/filtered_groups"] == m["rollout/filtered_groups"] == 3
    assert m["dynamic_sampling/short_groups"] == 0 and m["dynamic_sampling/informative_share"] == pytest.approx(4 / 7)
    assert m["data/rows_drawn"] == m["rollout/launched_groups"] == 7     # summed over rounds and ranks
    assert m["rollout/kept_groups"] == 4 and not lines


def test_rounds_are_bounded_and_a_step_without_signal_is_reported(tokenizer):
    tr, lines = trainer_with(tokenizer, informative=set(), max_rounds=3, rate=0.5)
    trajs, m = tr._rollout(step=1)
    assert trajs == [] and m["dynamic_sampling/rounds"] == 3 and m["dynamic_sampling/short_groups"] == 4
    assert m["dynamic_sampling/kept_groups"] == 0 and m["dynamic_sampling/informative_share"] == 0
    assert len(lines) == 1 and "kept 0 of 4 groups after 3 generation round(s)" in lines[0]
    # each round asked each rank for its shortfall, over-sampled by the rate: ceil(2 * 1.5) = 3 rows
    assert [c[0] for c in tr.group.calls] == [3, 3] * 3


def test_without_the_filter_one_round(tokenizer):
    tr, lines = trainer_with(tokenizer, informative=set())
    tr.cfg.algorithm.filter_groups.enable = False
    for s in tr.group.scheds:
        s.group_filter = None
    trajs, m = tr._rollout(step=1)
    assert len(by_group(trajs)) == 4 and "dynamic_sampling/rounds" not in m
