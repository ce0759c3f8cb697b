"""Rewards with hand-computed values."""
import math

import pytest

from agent_rl.config.schema import RewardConfig
from agent_rl.rewards import answer_scores, compute_reward, normalize_answer, register_reward, reward_fn_for
from agent_rl.rollout.trajectory import ToolCallRecord, Trajectory, TurnRecord

KQ = '<tool_call>\n{"name": "kg_query", "arguments": {"action": "get_relations_out", "entity": "Paris"}}\n</tool_call>'


def turn(i, text, calls=()):
    return TurnRecord(index=i, output_ids=[1], logprobs=[0.0], finish_reason="stop", text=text, tool_calls=list(calls))


def kg_call(ok=True, obs="capital_of -> France"):
    return ToolCallRecord(name="kg_query", arguments={}, observation=obs, status="ok",
                          metrics={"success": ok, "error_type": "KG_SUCCESS" if ok else "KG_ENTITY_NOT_FOUND"})


def kg_traj(turns, gold):
    return Trajectory(uid="u", sample_index=0, prompt_ids=[0], turns=turns,
                      row={"data_source": "webqsp", "reward_model": {"ground_truth": gold}})


def test_normalize():
    assert normalize_answer("  The Eiffel-Tower!  ") == "eiffel tower"
    assert normalize_answer("A  Tale of Two Cities.") == "tale of two cities"


def test_answer_scores_hand_computed():
    # preds {paris, lyon, nice}, gold {paris, lyon}: p = 2/3, r = 1, f1 = 0.8
    s = answer_scores(["Paris", "the Lyon", "Nice", "paris"], ["paris", "Lyon"])
    assert math.isclose(s["f1"], 0.8) and s["em"] == 0 and s["hits1"] == 1
    # first prediction wrong: hits1 0; p = 1/2, r = 1/3 -> f1 = 0.4
    s = answer_scores(["Berlin", "Rome"], ["rome", "milan", "turin"])
    assert math.isclose(s["f1"], 0.4) and s["hits1"] == 0 and s["em"] == 0
    s = answer_scores(["Rome", "Milan."], ["milan", "rome"])
    assert s == {"f1": 1.0, "em": 1.0, "hits1": 1.0}
    assert answer_scores([], ["x"]) == {"f1": 0.0, "em": 0.0, "hits1": 0.0}


def test_kg_reward_components_and_turn_rewards():
    cfg = RewardConfig(kg_answer_weight=1.0, kg_format_weight=0.1, kg_validity_weight=0.2, kg_retrieval_weight=0.5)
    turns = [turn(0, KQ, [kg_call(True, "Paris capital_of France")]),
             turn(1, KQ + KQ, [kg_call(True), kg_call(False, "Error: entity not found")]),
             turn(2, "I think <answer>France | Spain</answer>")]
    traj = kg_traj(turns, ["France"])
    score, c = compute_reward(traj, cfg)
    # f1: p = 1/2, r = 1 -> 2/3; format: 3/3; validity: 2 of 3 queries ok; retrieval: "france" seen
    assert math.isclose(c["f1"], 2 / 3) and c["hits1"] == 1 and c["em"] == 0
    assert c["format"] == 1.0 and math.isclose(c["validity"], 2 / 3) and c["retrieval"] == 1.0
    assert math.isclose(score, 2 / 3 + 0.1 * 1 + 0.2 * 2 / 3 + 0.5 * 1)
    # per turn: 0.1*format + 0.2*validity + 0.5*retrieval; answer turn validity 1; turn 1 sees France
    # again, but only the first turn that reaches a gold name gets the retrieval credit
    assert traj.turn_rewards == pytest.approx([0.1 + 0.2 + 0.5, 0.1 + 0.2 * 0.5, 0.1 + 0.2])


def test_kg_turn_retrieval_credit_goes_to_the_turn_that_reaches_the_answer():
    cfg = RewardConfig(kg_answer_weight=1.0, kg_format_weight=0.1, kg_validity_weight=0.1, kg_retrieval_weight=0.2)
    turns = [turn(0, KQ, [kg_call(True, 'Outgoing relations of "Paris": location.capital_of')]),
             turn(1, KQ, [kg_call(True, 'Tail entities of "Paris" via location.capital_of: France')]),
             turn(2, "<answer>Spain</answer>")]
    traj = kg_traj(turns, ["France"])
    score, c = compute_reward(traj, cfg)
    assert c["retrieval"] == 1.0 and c["f1"] == 0.0
    assert math.isclose(score, 0.1 + 0.1 + 0.2)
    assert traj.turn_rewards == pytest.approx([0.2, 0.4, 0.2])
    # a name inside a longer word does not count; a failed call's text does not count
    turns = [turn(0, KQ, [kg_call(True, "Francesca")]), turn(1, KQ, [kg_call(False, "France")])]
    traj = kg_traj(turns, ["France"])
    _, c = compute_reward(traj, cfg)
    assert c["retrieval"] == 0.0 and traj.turn_rewards[0] == pytest.approx(0.2)


def test_kg_reward_malformed_turn_and_metric_choice():
    bad = turn(0, '<tool_call>{"name": broken</tool_call>',
               [ToolCallRecord(name="", arguments="x", observation="Error: invalid JSON", status="parse_error")])
    traj = kg_traj([bad, turn(1, "<answer>paris</answer>")], ["Paris", "Lyon"])
    score, c = compute_reward(traj, RewardConfig(kg_answer_metric="hits1", kg_format_weight=0.1, kg_validity_weight=0.1))
    assert c["format"] == 0.5 and c["validity"] == 0.0 and c["retrieval"] == 0.0 and c["answer"] == 1.0
    assert math.isclose(score, 1.0 + 0.05)
    assert traj.turn_rewards == pytest.approx([0.0, 0.2])
    # no answer at all
    score, c = compute_reward(kg_traj([turn(0, "no idea")], ["x"]), RewardConfig())
    assert score == 0.0 and c["f1"] == 0.0 and c["format"] == 0.0


def arith_traj(texts, gt, source="gsm8k", calls=None):
    turns = [turn(i, t) for i, t in enumerate(texts)]
    if calls:
        turns[0].tool_calls = calls
    return Trajectory(uid="u", sample_index=0, prompt_ids=[0], turns=turns,
                      row={"data_source": source, "reward_model": {"ground_truth": gt}})


def test_arith_reward():
    cfg = RewardConfig(arith_format_weight=0.1)
    score, c = compute_reward(arith_traj(["so <answer>1,234</answer>"], "1234"), cfg)
    assert c == {"correct": 1.0, "format": 1.0} and math.isclose(score, 1.1)
    score, c = compute_reward(arith_traj(["step one\n#### 42"], "42", "arith_synth"), cfg)
    assert c["correct"] == 1.0 and c["format"] == 1.0
    score, c = compute_reward(arith_traj(["the answer is 42"], "42"), cfg)
    assert score == 0.0 and c == {"correct": 0.0, "format": 0.0}
    score, c = compute_reward(arith_traj(["<answer>41.5</answer>"], "42"), cfg)
    assert c["correct"] == 0.0 and math.isclose(score, 0.1)
    sub = ToolCallRecord(name="calc_gsm8k_reward", arguments={"answer": "7"}, observation="correct", status="ok")
    traj = arith_traj(['<tool_call>{"name": "calc_gsm8k_reward", "arguments": {"answer": "7"}}</tool_call>',
                       "<answer>7</answer>"], "7", calls=[sub])
    traj.tool_rewards = {"calc_gsm8k_reward": 1.0}
    score, c = compute_reward(traj, cfg)
    assert c == {"correct": 1.0, "format": 1.0, "calc_reward": 1.0} and traj.turn_rewards == pytest.approx([0.1, 0.1])


def test_dispatch():
    assert reward_fn_for({"data_source": "other", "ability": "kgqa"}).__name__ == "kg_reward"
    assert reward_fn_for({"data_source": "other", "reward_model": {"ground_truth": "3"}}).__name__ == "arith_reward"
    with pytest.raises(ValueError):
        reward_fn_for({"data_source": "other"})
    register_reward("const", lambda t, c: (0.25, {"k": 1}))
    assert compute_reward(arith_traj(["x"], "1", source="const"), RewardConfig()) == (0.25, {"k": 1.0})
