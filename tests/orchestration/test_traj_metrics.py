
import pytest

from agent_rl.orchestration.traj_metrics import (merge_worker_metrics, reward_metrics, rollout_metrics,
                                                 validation_metrics)
from agent_rl.rollout.metrics import is_trajectory_metric, trajectory_metrics
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.record import ToolCallRecord


def _traj(uid, i, reward, ds="kg_synth", calls=(), resp=4, stop="answer"):
    turn = TurnRecord(index=0, output_ids=[1] * resp, logprobs=[0.0] * resp, finish_reason="stop", text="",
                      tool_calls=list(calls))
    return Trajectory(uid=uid, sample_index=i, row={"data_source": ds}, prompt_ids=[1, 2, 3],
                      response_ids=[5] * resp, loss_mask=[1] * resp, rollout_logprobs=[0.0] * resp, turns=[turn],
                      reward=reward, reward_components={"answer": reward, "format": 0.5}, stop_reason=stop)


def _kg(ok):
    return ToolCallRecord(name="kg_query", arguments={}, observation="", status="ok",
                          metrics={"success": ok, "error_type": "KG_SUCCESS" if ok else "KG_ENTITY_NOT_FOUND"})


def test_reward_and_rollout_metrics():
    trajs = [_traj("g1", 0, 1.0, calls=[_kg(True), _kg(False)]), _traj("g1", 1, 0.0),
             _traj("g2", 0, 0.5, resp=8, stop="max_assistant_turns"), _traj("g2", 1, 0.5)]
    r = reward_metrics(trajs)
    assert r["reward/mean"] == pytest.approx(0.5) and r["reward/max"] == 1.0 and r["reward/min"] == 0.0
    assert r["reward/answer"] == pytest.approx(0.5) and r["reward/format"] == pytest.approx(0.5)
    m = rollout_metrics(trajs)
    assert m["rollout/response_len_mean"] == pytest.approx(5.0) and m["rollout/response_len_max"] == 8
    assert m["rollout/tool_call_rate"] == pytest.approx(0.25) and m["rollout/tool_calls_mean"] == pytest.approx(0.5)
    assert m["kg/query_success_rate"] == pytest.approx(0.5)
    assert m["rollout/stop_reason/answer"] == pytest.approx(0.75)
    assert m["rollout/stop_reason/max_assistant_turns"] == pytest.approx(0.25)
    assert m["rollout/groups_without_signal"] == pytest.approx(0.5)     # g2 has equal rewards


def test_validation_metrics_per_data_source():
    trajs = [_traj("a", 0, 1.0, ds="webqsp", calls=[_kg(True)]), _traj("b", 0, 0.0, ds="webqsp"),
             _traj("c", 0, 0.25, ds="cwq")]
    v = validation_metrics(trajs)
    assert v["val/webqsp/reward"] == pytest.approx(0.5) and v["val/cwq/reward"] == pytest.approx(0.25)
    assert v["val/webqsp/answer"] == pytest.approx(0.5) and v["val/webqsp/tool_call_rate"] == pytest.approx(0.5)
    assert v["val/webqsp/num_samples"] == 2 and v["val/webqsp/kg_query_success_rate"] == 1.0
    assert "val/cwq/kg_query_success_rate" not in v


def test_merge_worker_metrics_sums_counts_and_averages_rest():
    m = merge_worker_metrics([{"tools/kg_query/calls": 3, "tools/kg_query/latency_mean_s": 0.1, "x": float("nan"),
                               "rollout/kept_groups": 2, "rollout/seconds": 3.0, "rollout/tool_calls/kg_query/ok": 4,
                               "rollout/reward_mean": 0.3},
                              {"tools/kg_query/calls": 5, "tools/kg_query/latency_mean_s": 0.3,
                               "rollout/kept_groups": 2, "rollout/seconds": 5.0, "rollout/tool_calls/kg_query/ok": 1}])
    assert m["tools/kg_query/calls"] == 8 and m["tools/kg_query/latency_mean_s"] == pytest.approx(0.2)
    assert m["rollout/kept_groups"] == 4 and m["rollout/seconds"] == 5.0
    # trajectory aggregates come from the driver (exact over all workers), never from the workers' copies
    assert "x" not in m and "rollout/reward_mean" not in m and "rollout/tool_calls/kg_query/ok" not in m


def test_kg_success_is_the_records_notion_of_success():
    """kg/query_success_rate counts `ToolCallRecord.succeeded` calls, whatever their text says."""
    failed_text = ToolCallRecord(name="kg_query", arguments={}, observation="KG_SUCCESS", status="ok",
                                 metrics={"success": False, "error_type": "KG_NO_RESULTS"})
    ok_text = ToolCallRecord(name="kg_query", arguments={}, observation="KG_ENTITY_NOT_FOUND", status="ok",
                             metrics={"success": True, "error_type": "KG_SUCCESS"})
    timed_out = ToolCallRecord(name="kg_query", arguments={}, observation="Error: timed out", status="timeout")
    m = rollout_metrics([_traj("g", 0, 0.0, calls=[failed_text, ok_text, timed_out])])
    assert m["kg/query_success_rate"] == pytest.approx(1 / 3) and m["kg/queries_mean"] == 3


def test_driver_and_scheduler_share_the_trajectory_aggregates():
    """One definition: the driver's rollout/* are `trajectory_metrics`, which the scheduler reports too, and
    every name it produces is one the merge leaves to the driver."""
    calls = [_kg(True), ToolCallRecord(name="", arguments="x", observation="Error: bad", status="parse_error")]
    trajs = [_traj("g1", 0, 1.0, calls=calls), _traj("g1", 1, 0.0, stop="")]
    shared = trajectory_metrics(trajs)
    driver = rollout_metrics(trajs)
    assert {k: v for k, v in driver.items() if not k.startswith("kg/")} == shared
    assert shared["rollout/tool_calls/<none>/parse_error"] == 1 and shared["rollout/tool_calls/kg_query/ok"] == 1
    assert shared["rollout/tool_error_rate"] == pytest.approx(0.5) and shared["rollout/stop_reason/unknown"] == 0.5
    names = set(shared) | set(reward_metrics(trajs)) | set(reward_metrics(trajs, prefix="rollout/reward"))
    names.add("rollout/reward_mean")
    assert all(is_trajectory_metric(k) for k in names)
    assert not any(is_trajectory_metric(k) for k in ("rollout/kept_groups", "rollout/seconds", "rollout/gen_tokens",
                                                       "tools/kg_query/calls", "rollout/carried_groups", "kg/queries_mean"))


# ----------------------------------------------------------------- validation: what was learned (issue 15, item 2)

def _vtraj(uid, reward, comps, calls=(), hops=None, ds="kg_synth"):
    row = {"data_source": ds, "extra_info": {"sample_id": uid} if hops is None else {"hops": hops}}
    t = _traj(uid, 0, reward, ds=ds, calls=calls)
    t.row, t.reward_components = row, dict(comps)
    return t


def _fail(status="ok"):
    return ToolCallRecord(name="kg_query", arguments={}, observation="Error", status=status,
                          metrics={"success": False} if status == "ok" else {})


def test_validation_metrics_per_hop_tool_and_answer_rate():
    none_call = ToolCallRecord(name=None, arguments="x", observation="Error: bad", status="parse_error")
    trajs = [
        _vtraj("a", 1.0, {"f1": 1.0, "em": 1.0, "format": 1.0, "answered": 1.0, "kg_queries": 2.0},
               calls=[_kg(True), _kg(True)], hops=1),
        _vtraj("b", 0.2, {"f1": 0.0, "em": 0.0, "format": 0.0, "answered": 0.0, "kg_queries": 1.0},
               calls=[_kg(False)], hops=1),
        _vtraj("c", 0.5, {"f1": 0.5, "em": 0.0, "format": 1.0, "answered": 1.0, "kg_queries": 3.0},
               calls=[_kg(True), _fail(), _fail("timeout"), none_call], hops=2),
        _vtraj("d", 0.0, {"f1": 0.0, "em": 0.0, "format": 0.0, "answered": 0.0, "kg_queries": 0.0}),  # no hops
        _vtraj("e", 1.0, {"correct": 1.0, "format": 1.0, "answered": 1.0}, ds="gsm8k"),
        _vtraj("f", 0.0, {"correct": 0.0, "format": 1.0, "answered": 1.0}, ds="gsm8k"),
    ]
    v = validation_metrics(trajs)
    k = "val/kg_synth"
    # per hop: reward, every component, answer rate, kg_query calls and successful ones per trajectory
    assert v[f"{k}/hop1/reward"] == pytest.approx(0.6) and v[f"{k}/hop2/reward"] == pytest.approx(0.5)
    assert v[f"{k}/hop1/f1"] == pytest.approx(0.5) and v[f"{k}/hop2/f1"] == pytest.approx(0.5)
    assert v[f"{k}/hop1/em"] == pytest.approx(0.5) and v[f"{k}/hop2/em"] == 0.0
    assert v[f"{k}/hop1/format"] == pytest.approx(0.5) and v[f"{k}/hop2/format"] == 1.0
    assert v[f"{k}/hop1/answer_rate"] == pytest.approx(0.5) and v[f"{k}/hop2/answer_rate"] == 1.0
    assert v[f"{k}/hop1/kg_queries"] == pytest.approx(1.5) and v[f"{k}/hop1/kg_lookups"] == pytest.approx(1.0)
    assert v[f"{k}/hop2/kg_queries"] == pytest.approx(3.0) and v[f"{k}/hop2/kg_lookups"] == pytest.approx(1.0)
    assert v[f"{k}/hop1/num_samples"] == 2 and v[f"{k}/hop2/num_samples"] == 1
    hop_keys = {x for x in v if x.startswith(f"{k}/hop")}
    names = ("reward", "f1", "em", "format", "answer_rate", "kg_queries", "kg_lookups", "num_samples")
    assert hop_keys == {f"{k}/hop{h}/{m}" for h in (1, 2) for m in names}
    # the data source as a whole still counts the row without hops
    assert v[f"{k}/num_samples"] == 4 and v[f"{k}/reward"] == pytest.approx(1.7 / 4)
    assert v[f"{k}/answer_rate"] == pytest.approx(0.5) and f"{k}/answered" not in v
    # success by tool: kg_query 3 of 6 calls succeeded (failed metrics, timeout), a call without a name
    assert v[f"{k}/tool/kg_query/success_rate"] == pytest.approx(0.5)
    assert v[f"{k}/tool/kg_query/calls"] == pytest.approx(6 / 4)
    assert v[f"{k}/tool/<none>/success_rate"] == 0.0 and v[f"{k}/tool/<none>/calls"] == pytest.approx(1 / 4)
    assert v[f"{k}/kg_query_success_rate"] == pytest.approx(0.5)
    # a data source without hops and without tool calls: nothing extra, answer rate from its component
    assert v["val/gsm8k/answer_rate"] == 1.0 and v["val/gsm8k/correct"] == pytest.approx(0.5)
    assert not any(x.startswith(("val/gsm8k/hop", "val/gsm8k/tool/")) for x in v)


def test_validation_without_an_answered_component_has_no_answer_rate():
    v = validation_metrics([_traj("a", 0, 1.0, ds="webqsp")])
    assert "val/webqsp/answer_rate" not in v and not any("/hop" in x or "/tool/" in x for x in v)


@pytest.mark.parametrize("extra,key", [({"hops": 2}, "hop2"), ({"hops": 2.0}, "hop2"), ({"hops": 0}, "hop0"),
                                       ({"hops": -1}, "hop_unreachable"), ({"hops": 2.5}, None),
                                       ({"hops": True}, None), ({"hops": "2"}, None), ({"hops": None}, None),
                                       ({"hops": float("nan")}, None), ({}, None), (None, None), ("x", None)])
def test_hop_key(extra, key):
    from agent_rl.orchestration.traj_metrics import hop_key

    assert hop_key({"extra_info": extra}) == key


def test_hop_key_numpy_integer():
    np = pytest.importorskip("numpy")
    from agent_rl.orchestration.traj_metrics import hop_key

    assert hop_key({"extra_info": {"hops": np.int64(3)}}) == "hop3" and hop_key(None) is None


def test_validation_answer_rate_and_hop_f1_from_the_real_rewards():
    """The KG and math reward functions give `answered`; validation turns it into answer_rate."""
    from agent_rl.config.schema import RewardConfig
    from agent_rl.tasks import compute_reward

    def scored(text, gold, ds, hops=None):
        t = _vtraj(text, 0.0, {}, hops=hops, ds=ds)
        t.row["reward_model"] = {"ground_truth": gold}
        t.turns[0].text = text
        t.reward, t.reward_components = compute_reward(t, RewardConfig())
        return t

    trajs = [scored("<answer>Paris</answer>", ["Paris"], "kg_synth", 1),
             scored("<answer>Lyon | Paris</answer>", ["Paris"], "kg_synth", 1),
             scored("I do not know", ["Rome"], "kg_synth", 2),
             scored("so #### 42", "42", "gsm8k"), scored("<answer>forty</answer>", "40", "gsm8k")]
    v = validation_metrics(trajs)
    assert v["val/kg_synth/answer_rate"] == pytest.approx(2 / 3) and v["val/gsm8k/answer_rate"] == pytest.approx(0.5)
    assert v["val/kg_synth/hop1/f1"] == pytest.approx((1.0 + 2 / 3) / 2) and v["val/kg_synth/hop1/answer_rate"] == 1.0
    assert v["val/kg_synth/hop2/f1"] == 0.0 and v["val/kg_synth/hop2/answer_rate"] == 0.0


def test_task_metric_hooks_reach_step_and_per_hop_metrics(tmp_path, monkeypatch):
    """The generic metrics name no task: a task's `metrics` / `group_metrics` hooks (tasks/registry.py) add its own
    names; here a second task next to KG, with hooks in a file."""
    import dataclasses

    from agent_rl.tasks import registry

    (tmp_path / "calc_metrics.py").write_text(
        "def step(trajs):\n    return {'calc/trajs': len(trajs)}\n"
        "def group(trajs):\n    return {'calc_rows': len(trajs)}\n")
    monkeypatch.chdir(tmp_path)
    extra = dataclasses.replace(registry.TASKS["arith"], name="calc", metrics="calc_metrics.py:step",
                                group_metrics="calc_metrics.py:group")
    monkeypatch.setitem(registry.TASKS, "calc", extra)
    trajs = [_traj("g1", 0, 1.0, calls=[_kg(True)]), _traj("g1", 1, 0.0)]
    m = rollout_metrics(trajs)
    assert m["calc/trajs"] == 2.0 and m["kg/query_success_rate"] == 1.0      # both tasks' hooks ran
    for t in trajs:
        t.row = {"data_source": "kg_synth", "extra_info": {"hops": 1}}
    v = validation_metrics(trajs)
    assert v["val/kg_synth/hop1/calc_rows"] == 2.0 and v["val/kg_synth/hop1/kg_queries"] == pytest.approx(0.5)


def test_kv_session_counts_are_the_rollout_s_own_and_add_up_over_workers_and_rounds():
    from agent_rl.orchestration.traj_metrics import merge_rounds, session_metrics

    before, after = {"started": 8, "appended": 16}, {"started": 12, "appended": 30, "full": 2}
    m = session_metrics(before, after)
    assert m == {"rollout/kv_sessions/appended": 14.0, "rollout/kv_sessions/full": 2.0, "rollout/kv_sessions/started": 4.0}
    assert session_metrics(None, after)["rollout/kv_sessions/started"] == 12 and session_metrics(before, None) == {}
    merged = merge_worker_metrics([m, {"rollout/kv_sessions/started": 6.0}])    # two ranks: summed, not averaged
    assert merged["rollout/kv_sessions/started"] == 10 and merged["rollout/kv_sessions/appended"] == 14
    assert merge_rounds([merged, merged])["rollout/kv_sessions/full"] == 4            # dynamic-sampling rounds add up
