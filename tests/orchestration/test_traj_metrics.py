import math

import pytest

from agent_rl.orchestration.traj_metrics import (merge_worker_metrics, reward_metrics, rollout_metrics,
                                                 validation_metrics)
from agent_rl.rollout.trajectory import ToolCallRecord, Trajectory, TurnRecord


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
    assert m["rollout/kept_groups"] == 4 and m["rollout/seconds"] == 5.0 and m["rollout/tool_calls/kg_query/ok"] == 5
    assert "x" not in m and "rollout/reward_mean" not in m
