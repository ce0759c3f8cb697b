import math

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
