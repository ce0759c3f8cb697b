"""KG question answering (after KG-R1): the answer score plus shaping terms that rise only with progress
toward the answer (docs/rewards.md gives the reasoning).

Predictions: the final `<answer>` split on `|`; gold: `reward_model.ground_truth` (list of names).
Both normalised (lowercase, punctuation and articles removed); predictions de-duplicated in order.
  f1        set F1 of predictions vs gold (0 without an answer)
  em        1 when the prediction set equals the gold set
  hits1     1 when the first prediction is a gold name
  format    1 when every assistant turn is well-formed (`turns.turn_well_formed`: calls that are valid
            and ran, or an answer with a letter or digit) and the trajectory ends with an answer, else 0
  validity  distinct successful look-ups, at most kg_validity_cap, divided by the cap. Distinct by
            kg_query's canonical `lookup` metric: a repeat adds nothing, a failed call takes nothing away,
            a call that never ran is no look-up
  retrieval 1 when a successful get_entities_* look-up returned a gold name (kg_query's `entities`
            metric) that its observation still shows after truncation; names in relation lists or in
            error messages never count
  answered  1 when the final `<answer>` holds a prediction with a letter or digit (the rule a well-formed
            answer turn follows), else 0; logged, not added (validation's answer_rate)
score = kg_answer_weight * {f1|em|hits1}[kg_answer_metric] + kg_format_weight * format
        + kg_validity_weight * validity + kg_retrieval_weight * retrieval

turn_rewards[t] = kg_format_weight * format_t + kg_validity_weight * validity_t + kg_retrieval_weight * retrieval_t,
where format_t is 1 when turn t is well-formed, validity_t is what turn t added to validity (they sum to
the trajectory's validity) and retrieval_t is 1 on the first turn that retrieved a gold name.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Set, Tuple

from agent_rl.rewards.text import final_answer, normalize_answer, split_answers
from agent_rl.rewards.turns import assistant_texts, turn_format_scores
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tasks.kg.config import reward_settings
from agent_rl.tasks.kg.rows import KG_TOOL
from agent_rl.tool_runtime.record import ToolCallRecord


def answer_scores(predictions: Sequence[str], gold: Sequence[str]) -> Dict[str, float]:
    preds: List[str] = []
    for p in predictions:
        n = normalize_answer(p)
        if n and n not in preds:
            preds.append(n)
    golds = {normalize_answer(g) for g in gold if normalize_answer(g)}
    if not preds or not golds:
        return {"f1": 0.0, "em": 0.0, "hits1": 0.0}
    common = len(set(preds) & golds)
    f1 = 0.0
    if common:
        p, r = common / len(preds), common / len(golds)
        f1 = 2 * p * r / (p + r)
    return {"f1": f1, "em": 1.0 if set(preds) == golds else 0.0, "hits1": 1.0 if preds[0] in golds else 0.0}


def query_ok(rec: ToolCallRecord) -> bool:
    """A kg_query call that ran and whose look-up succeeded (kg_query reports `success` on every answer)."""
    return rec.name == KG_TOOL and rec.succeeded


def gold_names(gold: Sequence[str]) -> List[str]:
    """The normalised, non-empty gold answer names."""
    return [normalize_answer(g) for g in gold if normalize_answer(g)]


def returns_gold(entities: Sequence[str], observation: str, golds: Set[str]) -> bool:
    """One of the returned entity names is a gold name (normalised) and `observation` still shows it."""
    return any(normalize_answer(e) in golds and e in observation for e in entities)


def retrieves_gold(rec: ToolCallRecord, golds: Set[str]) -> bool:
    """A successful get_entities_* look-up returned a gold name, and the observation shows it (kg_query
    reports `entities` only for successful get_entities_* look-ups)."""
    return query_ok(rec) and returns_gold(rec.metrics.get("entities", ()), rec.observation, golds)


def kg_reward(traj: Trajectory, cfg) -> Tuple[float, Dict[str, float]]:
    gold = (traj.row.get("reward_model") or {}).get("ground_truth") or []
    if hasattr(gold, "tolist"):  # numpy array from a parquet reader
        gold = gold.tolist()
    if isinstance(gold, str):
        gold = [gold]
    preds = split_answers(final_answer(assistant_texts(traj)))
    scores = answer_scores(preds, gold)
    golds = set(gold_names(gold))
    fmt_turns = turn_format_scores(traj)
    s = reward_settings(cfg)
    cap = max(1, int(s.kg_validity_cap))
    lookups: Set[str] = set()
    validity_turns, retrieval_turns = [], []
    for t in traj.turns:
        before = min(len(lookups), cap)
        lookups.update(c.metrics.get("lookup") for c in t.tool_calls if query_ok(c))
        validity_turns.append((min(len(lookups), cap) - before) / cap)
        first_hit = not any(retrieval_turns) and any(retrieves_gold(c, golds) for c in t.tool_calls)
        retrieval_turns.append(1.0 if first_hit else 0.0)
    validity, retrieval = min(len(lookups), cap) / cap, sum(retrieval_turns)
    fmt = 1.0 if preds and all(fmt_turns) else 0.0
    answer = scores[s.kg_answer_metric]
    wa, wf = float(s.kg_answer_weight), float(s.kg_format_weight)
    wv, wr = float(s.kg_validity_weight), float(s.kg_retrieval_weight)
    traj.turn_rewards = [wf * f + wv * v + wr * r for f, v, r in zip(fmt_turns, validity_turns, retrieval_turns)]
    queries = [c for t in traj.turns for c in t.tool_calls if c.name == KG_TOOL]
    answered = any(ch.isalnum() for p in preds for ch in p)
    comps = {"answer": answer, "f1": scores["f1"], "em": scores["em"], "hits1": scores["hits1"], "format": fmt,
             "validity": validity, "retrieval": retrieval, "answered": 1.0 if answered else 0.0,
             "num_answers": float(len(preds)), "kg_queries": float(len(queries))}
    return wa * answer + wf * fmt + wv * validity + wr * retrieval, comps
