"""KG question answering (after KG-R1): answer F1 / exact match / hits@1, format, query validity, retrieval.

Predictions: the final `<answer>` split on `|`; gold: `reward_model.ground_truth` (list of names).
Both normalised (lowercase, punctuation and articles removed); predictions de-duplicated in order.
  f1        set F1 of predictions vs gold (0 without an answer)
  em        1 when the prediction set equals the gold set
  hits1     1 when the first prediction is a gold name
  format    mean over assistant turns of "turn well-formed" (valid tool calls, or an answer)
  validity  fraction of the trajectory's kg_query calls that succeeded (0 without calls)
  retrieval 1 when a gold name appears (as whole words) in the observation of a successful query
score = kg_answer_weight * {f1|em|hits1}[kg_answer_metric] + kg_format_weight * format
        + kg_validity_weight * validity + kg_retrieval_weight * retrieval

turn_rewards[t] = kg_format_weight * format_t + kg_validity_weight * validity_t + kg_retrieval_weight * retrieval_t,
where validity_t is the fraction of turn t's kg_query calls that succeeded (a turn without kg_query calls
scores 1 when it is a well-formed answer turn, else 0) and retrieval_t is 1 on the first turn whose ok
observation holds a gold name (KG-R1's turn-wise retrieval quality), else 0.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from agent_rl.rewards.text import final_answer, normalize_answer, split_answers
from agent_rl.rewards.turns import assistant_texts, turn_format_scores
from agent_rl.rollout.trajectory import ToolCallRecord, Trajectory

KG_TOOL = "kg_query"


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
    return rec.status == "ok" and bool(rec.metrics.get("success", True))


def gold_names(gold: Sequence[str]) -> List[str]:
    """The normalised, non-empty gold answer names."""
    return [normalize_answer(g) for g in gold if normalize_answer(g)]


def names_gold(observation: str, golds: Sequence[str]) -> bool:
    """`observation` holds one of the normalised gold names as whole words."""
    text = f" {normalize_answer(observation)} "
    return any(f" {g} " in text for g in golds)


def turn_retrieves(turn, golds: Sequence[str]) -> bool:
    """One of the turn's successful observations names a gold answer. A failed query's error text (which may
    echo the entity the model asked for) never counts."""
    return any(query_ok(c) and names_gold(c.observation, golds) for c in turn.tool_calls)


def kg_reward(traj: Trajectory, cfg) -> Tuple[float, Dict[str, float]]:
    gold = (traj.row.get("reward_model") or {}).get("ground_truth") or []
    if hasattr(gold, "tolist"):  # numpy array from a parquet reader
        gold = gold.tolist()
    if isinstance(gold, str):
        gold = [gold]
    preds = split_answers(final_answer(assistant_texts(traj)))
    scores = answer_scores(preds, gold)
    fmt_turns = turn_format_scores(traj)
    queries = [c for t in traj.turns for c in t.tool_calls if c.name == KG_TOOL]
    validity = sum(query_ok(c) for c in queries) / len(queries) if queries else 0.0
    golds = gold_names(gold)
    first_hit = next((i for i, t in enumerate(traj.turns) if turn_retrieves(t, golds)), None)
    retrieval = 0.0 if first_hit is None else 1.0
    fmt = sum(fmt_turns) / len(fmt_turns) if fmt_turns else 0.0
    metric = getattr(cfg, "kg_answer_metric", "f1")
    answer = scores[metric]
    wa, wf = float(cfg.kg_answer_weight), float(cfg.kg_format_weight)
    wv, wr = float(cfg.kg_validity_weight), float(cfg.kg_retrieval_weight)
    turn_rewards = []
    for i, (t, f) in enumerate(zip(traj.turns, fmt_turns)):
        q = [c for c in t.tool_calls if c.name == KG_TOOL]
        v = sum(query_ok(c) for c in q) / len(q) if q else (1.0 if f and not t.tool_calls else 0.0)
        r = 1.0 if i == first_hit else 0.0  # only the first turn that reaches a gold name
        turn_rewards.append(wf * f + wv * v + wr * r)
    traj.turn_rewards = turn_rewards
    comps = {"answer": answer, "f1": scores["f1"], "em": scores["em"], "hits1": scores["hits1"], "format": fmt,
             "validity": validity, "retrieval": retrieval, "num_answers": float(len(preds)),
             "kg_queries": float(len(queries))}
    return wa * answer + wf * fmt + wv * validity + wr * retrieval, comps
