"""Rewards with hand-computed values."""
import math

import pytest

from agent_rl.config.load import section_class
from agent_rl.rewards.text import normalize_answer
from agent_rl.tasks import compute_reward, register_reward, reward_fn_for
from agent_rl.tasks.kg.reward import answer_scores
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.record import ToolCallRecord

RewardConfig = section_class("reward")   # with the tasks' keys (reward.kg_*, reward.arith_format_weight)

KQ = '<tool_call>\n{"name": "kg_query", "arguments": {"action": "get_relations_out", "entity": "Paris"}}\n</tool_call>'
CFG = RewardConfig(kg_answer_weight=1.0, kg_format_weight=0.1, kg_validity_weight=0.1, kg_retrieval_weight=0.2,
                   kg_validity_cap=2)


def turn(i, text, calls=()):
    return TurnRecord(index=i, output_ids=[1], logprobs=[0.0], finish_reason="stop", text=text, tool_calls=list(calls))


def kg_call(ok=True, obs="Outgoing relations of \"Paris\": capital_of", lookup="get_relations_out|paris|",
            entities=None, status="ok"):
    metrics = {"success": ok, "error_type": "KG_SUCCESS" if ok else "KG_ENTITY_NOT_FOUND", "lookup": lookup}
    if entities is not None:
        metrics["entities"] = entities
    return ToolCallRecord(name="kg_query", arguments={}, observation=obs, status=status, metrics=metrics)


def entities_call(entities, relation="capital_of", obs=None):
    return kg_call(True, obs if obs is not None else f'Tail entities of "Paris" via {relation}: {", ".join(entities)}',
                   f"get_entities_out|paris|{relation}", entities)


def kg_traj(turns, gold):
    return Trajectory(uid="u", sample_index=0, prompt_ids=[0], turns=turns,
                      row={"data_source": "webqsp", "reward_model": {"ground_truth": gold}})


def kg_score(calls_per_turn, answer="<answer>Spain</answer>", gold=("France",), cfg=CFG):
    """Score of a trajectory that makes one turn of calls per entry, then answers."""
    turns = [turn(i, KQ * len(calls), calls) for i, calls in enumerate(calls_per_turn)]
    traj = kg_traj(turns + [turn(len(turns), answer)], list(gold))
    score, comps = compute_reward(traj, cfg)
    return score, comps, traj.turn_rewards


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
    cfg = RewardConfig(kg_answer_weight=1.0, kg_format_weight=0.1, kg_validity_weight=0.2, kg_retrieval_weight=0.5,
                       kg_validity_cap=3)
    turns = [turn(0, KQ, [kg_call()]),
             turn(1, KQ + KQ, [entities_call(["France"]), kg_call(False, "Error: entity not found", "get_relations_out|x|")]),
             turn(2, "I think <answer>France | Spain</answer>")]
    traj = kg_traj(turns, ["France"])
    score, c = compute_reward(traj, cfg)
    # f1: p = 1/2, r = 1 -> 2/3; format: every turn well-formed, answered; validity: 2 distinct ok look-ups of 3;
    # retrieval: get_entities_out returned France
    assert math.isclose(c["f1"], 2 / 3) and c["hits1"] == 1 and c["em"] == 0
    assert c["format"] == 1.0 and math.isclose(c["validity"], 2 / 3) and c["retrieval"] == 1.0
    assert c["answered"] == 1.0                      # logged, not added to the score
    assert math.isclose(score, 2 / 3 + 0.1 + 0.2 * 2 / 3 + 0.5)
    # per turn: 0.1 * format + 0.2 * (look-ups the turn added / 3) + 0.5 * (first turn that retrieved)
    assert traj.turn_rewards == pytest.approx([0.1 + 0.2 / 3, 0.1 + 0.2 / 3 + 0.5, 0.1])


def test_kg_turn_retrieval_credit_goes_to_the_turn_that_reaches_the_answer():
    turns = [turn(0, KQ, [kg_call()]), turn(1, KQ, [entities_call(["France"])]),
             turn(2, KQ, [entities_call(["France", "Italy"], "borders")]), turn(3, "<answer>Spain</answer>")]
    traj = kg_traj(turns, ["France"])
    score, c = compute_reward(traj, CFG)
    assert c["retrieval"] == 1.0 and c["f1"] == 0.0 and c["validity"] == 1.0
    assert math.isclose(score, 0.1 + 0.1 + 0.2)
    assert traj.turn_rewards == pytest.approx([0.15, 0.15 + 0.2, 0.1, 0.1])


def test_kg_reward_malformed_turn_and_metric_choice():
    bad = turn(0, '<tool_call>{"name": broken</tool_call>',
               [ToolCallRecord(name="", arguments="x", observation="Error: invalid JSON", status="parse_error")])
    traj = kg_traj([bad, turn(1, "<answer>paris</answer>")], ["Paris", "Lyon"])
    score, c = compute_reward(traj, RewardConfig(kg_answer_metric="hits1", kg_format_weight=0.1, kg_validity_weight=0.1))
    assert c["format"] == 0.0 and c["validity"] == 0.0 and c["retrieval"] == 0.0 and c["answer"] == 1.0
    assert score == 1.0
    assert traj.turn_rewards == pytest.approx([0.0, 0.1])
    # no answer at all
    score, c = compute_reward(kg_traj([turn(0, "no idea")], ["x"]), RewardConfig())
    assert score == 0.0 and c["f1"] == 0.0 and c["format"] == 0.0 and c["answered"] == 0.0


# One test per reward hack found in review (issue 12, item 4): none of them pays any more.

def test_kg_repeating_a_valid_lookup_does_not_pay():
    ok, failed = kg_call(), kg_call(False, "Error: entity not found", "get_relations_out|pariss|")
    base, c, _ = kg_score([[ok], [failed]])
    padded, c_padded, _ = kg_score([[ok], [failed], [kg_call()], [kg_call()]])  # was validity 1/2 -> 3/4
    assert padded == base and c_padded["validity"] == c["validity"] == 0.5


def test_kg_a_failed_second_hop_is_not_punished():
    one_hop, _, _ = kg_score([[kg_call()]])
    tried, _, _ = kg_score([[kg_call()], [kg_call(False, "Error: relation not found", "get_entities_out|paris|capitol")]])
    reached, _, _ = kg_score([[kg_call()], [entities_call(["Spain"])]])
    assert tried == one_hop == pytest.approx(0.1 + 0.05)   # was 0.150 < 0.200
    assert reached > one_hop                               # a second distinct successful look-up still counts


def test_kg_calls_that_never_ran_score_nothing():
    # the last allowed turn still made a call: the loop stops without running it (no call record)
    cut = kg_traj([turn(0, KQ, [kg_call()]), turn(1, KQ)], ["France"])
    score, c = compute_reward(cut, CFG)
    assert cut.turn_rewards == pytest.approx([0.15, 0.0]) and c["format"] == 0.0   # was 0.2 for turn 1
    assert math.isclose(score, 0.05)
    # over the tool-call budget: the call has status "budget" and never ran
    over = kg_call(obs="Error: tool-call budget exhausted", lookup="get_relations_out|france|", status="budget")
    _, c, turn_rewards = kg_score([[kg_call()], [over]])
    assert c["validity"] == 0.5 and turn_rewards[1] == 0.0


@pytest.mark.parametrize("answer", ["<answer></answer>", "<answer>  </answer>", "<answer> | </answer>"])
def test_kg_empty_answer_earns_no_format(answer):
    traj = kg_traj([turn(0, answer)], ["France"])
    score, c = compute_reward(traj, CFG)
    assert score == 0.0 and c["format"] == 0.0 and c["answered"] == 0.0 and traj.turn_rewards == [0.0]


def test_kg_answered_is_an_answer_with_a_letter_or_digit_in_any_form():
    # a wrong answer and an answer after malformed turns are still answers (format 0, answered 1)
    bad = turn(0, '<tool_call>{"name": broken</tool_call>',
               [ToolCallRecord(name="", arguments="x", observation="Error: invalid JSON", status="parse_error")])
    _, c = compute_reward(kg_traj([bad, turn(1, "<answer>Spain</answer>")], ["France"]), CFG)
    assert c["answered"] == 1.0 and c["format"] == 0.0 and c["f1"] == 0.0
    _, c = compute_reward(kg_traj([turn(0, "<answer>!!</answer>")], ["France"]), CFG)
    assert c["answered"] == 0.0


def test_kg_retrieval_needs_a_returned_gold_entity():
    gold = ["Actor"]
    # a relation name that contains the gold answer as a word: a relation list is not a retrieval
    rels = kg_call(obs='Incoming relations of "Tom Hanks": film.performance.actor', lookup="get_relations_in|tom hanks|")
    _, c, _ = kg_score([[rels]], gold=gold)
    assert c["retrieval"] == 0.0
    _, c, turn_rewards = kg_score([[rels], [entities_call(["Actor", "Producer"], "profession")]], gold=gold)
    assert c["retrieval"] == 1.0 and turn_rewards[1] == pytest.approx(0.1 + 0.05 + 0.2)
    # the gold entity was returned but truncated out of what the model saw
    cut = entities_call(["Producer", "Actor"], "profession", obs='Tail entities of "Tom Hanks" via profession: Produ...')
    _, c, _ = kg_score([[cut]], gold=gold)
    assert c["retrieval"] == 0.0


def arith_traj(texts, gt, source="gsm8k", calls=None):
    turns = [turn(i, t) for i, t in enumerate(texts)]
    if calls:
        turns[0].tool_calls = calls
    return Trajectory(uid="u", sample_index=0, prompt_ids=[0], turns=turns,
                      row={"data_source": source, "reward_model": {"ground_truth": gt}})


def test_arith_reward():
    cfg = RewardConfig(arith_format_weight=0.1)
    score, c = compute_reward(arith_traj(["so <answer>1,234</answer>"], "1234"), cfg)
    assert c == {"correct": 1.0, "format": 1.0, "answered": 1.0} and math.isclose(score, 1.1)
    score, c = compute_reward(arith_traj(["step one\n#### 42"], "42", "arith_synth"), cfg)
    assert c["correct"] == 1.0 and c["format"] == 1.0
    score, c = compute_reward(arith_traj(["the answer is 42"], "42"), cfg)
    assert score == 0.0 and c == {"correct": 0.0, "format": 0.0, "answered": 0.0}
    score, c = compute_reward(arith_traj(["<answer>41.5</answer>"], "42"), cfg)
    assert c["correct"] == 0.0 and math.isclose(score, 0.1)
    sub = ToolCallRecord(name="calc_gsm8k_reward", arguments={"answer": "7"}, observation="correct", status="ok")
    traj = arith_traj(['<tool_call>{"name": "calc_gsm8k_reward", "arguments": {"answer": "7"}}</tool_call>',
                       "<answer>7</answer>"], "7", calls=[sub])
    traj.tool_rewards = {"calc_gsm8k_reward": 1.0}
    score, c = compute_reward(traj, cfg)
    assert c == {"correct": 1.0, "format": 1.0, "answered": 1.0, "calc_reward": 1.0, "submit_penalty": 0.0}
    assert traj.turn_rewards == pytest.approx([0.1, 0.1])


def test_dispatch():
    """Unknown sources: an error by default; reward.default_reward=infer reads the ability, then the truth's type."""
    with pytest.raises(ValueError):
        reward_fn_for({"data_source": "other", "ability": "kgqa"})
    assert reward_fn_for({"data_source": "other", "ability": "kgqa"}, "infer").__name__ == "kg_reward"
    assert reward_fn_for({"data_source": "other", "reward_model": {"ground_truth": "3"}}, "infer").__name__ == "arith_reward"
    with pytest.raises(ValueError):
        reward_fn_for({"data_source": "other"}, "infer")
    from agent_rl.tasks import REWARD_FNS

    register_reward("const", lambda t, c: (0.25, {"k": 1}))
    try:
        assert compute_reward(arith_traj(["x"], "1", source="const"), RewardConfig()) == (0.25, {"k": 1.0})
    finally:
        REWARD_FNS.pop("const", None)


def test_turn_format_follows_the_configured_call_format():
    """A turn's calls are the ones the agent loop's format found (`calls_parsed`), not a Hermes re-parse."""
    from agent_rl.rewards.turns import turn_well_formed
    from agent_rl.rollout.trajectory import TurnRecord
    from agent_rl.tool_runtime.record import OK, ToolCallRecord

    llama = TurnRecord(index=0, output_ids=[1], logprobs=[0.0], finish_reason="stop",
                       text='{"name": "kg_query", "parameters": {"action": "get_relations_out", "entity": "x"}}',
                       tool_calls=[ToolCallRecord(name="kg_query", arguments={}, observation="r", status=OK)],
                       calls_parsed=1)
    assert turn_well_formed(llama)
    llama.calls_parsed = 2                      # one call never ran
    assert not turn_well_formed(llama)
