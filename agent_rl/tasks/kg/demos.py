"""Gold demonstrations of KG rows: the look-ups that answer a question, as chat messages (for `sft.*`).

A demonstration follows the row's gold query (`extra_info.query`, branches of `out:rel` / `in:rel` steps,
as in `kg_traverse`) through the KG store, one `kg_query` call per assistant turn, the way the prompt's
worked example does:

    for each branch, for each step:
        get_relations_{dir}(first entity of the frontier)            (the relation list the model reads)
        get_entities_{dir}(entity, relation) for every frontier entity
    <answer>gold 1 | gold 2</answer>

Observations are the KG index's own result texts (what the KG server returns). A row whose demonstration
needs more than `max_turns` assistant turns, whose look-ups fail, or whose traversal does not end at the
gold answers gets no demonstration (counted in the summary).

File format: `demos.py` (the TRL / verl multi-turn SFT shape, shared with `arith_demos`).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent_rl.data.demos import DEMOS_FILENAME, answer_text, demo_rows, tool_call_text, tool_message, write_demos
from agent_rl.tasks.kg.rows import KG_TOOL
from agent_rl.tasks.kg.traverse import parse_step

DEFAULT_MAX_TURNS = 7


def call_text(action: str, entity: str, relation: Optional[str] = None) -> str:
    """An assistant turn with one kg_query call, in the prompt's Hermes format."""
    args: Dict[str, str] = {"action": action, "entity": entity}
    if relation is not None:
        args["relation"] = relation
    return tool_call_text(KG_TOOL, args)


def kg_demonstration(row: Dict[str, Any], index, max_turns: int = DEFAULT_MAX_TURNS) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    """(messages after the prompt, "") or (None, why not). `index` is a `tools.kg_index.KGIndex`."""
    extra = row.get("extra_info") or {}
    sid, query = extra.get("sample_id"), extra.get("query")
    gold = list((row.get("reward_model") or {}).get("ground_truth") or [])
    if not sid or not query or not gold:
        return None, "no_query"
    topics = {b["topic"] for b in query}
    msgs: List[Dict[str, Any]] = []

    def look_up(action: str, entity: str, relation: Optional[str] = None):
        res = index.query(sid, action, entity, relation)
        msgs.append({"role": "assistant", "content": call_text(action, entity, relation)})
        msgs.append(tool_message(KG_TOOL, res.result))
        return res

    result = None
    for branch in query:
        frontier = [branch["topic"]]
        for step in branch["path"]:
            direction, relation = parse_step(step)
            res = look_up(f"get_relations_{direction}", frontier[0])
            if not res.success or relation not in res.data:
                return None, "lookup_failed"
            nxt: List[str] = []
            for entity in frontier:
                res = look_up(f"get_entities_{direction}", entity, relation)
                if not res.success:
                    return None, "lookup_failed"
                nxt += [e for e in res.data if e not in topics and e not in nxt]
            frontier = nxt
            if len(msgs) // 2 + 1 > max_turns:
                return None, "too_long"
        result = set(frontier) if result is None else result & set(frontier)
    answers = sorted(result or ())
    if answers != sorted(gold):
        return None, "answer_mismatch"
    msgs.append({"role": "assistant", "content": answer_text(answers)})
    return msgs, ""


def build_kg_demos(rows: Sequence[Dict[str, Any]], index, max_turns: int = DEFAULT_MAX_TURNS
                   ) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """Demonstration rows of `rows` and a count of the rows without one, by reason."""
    return demo_rows(rows, [kg_demonstration(row, index, max_turns) for row in rows])


def write_kg_demos(data_dir: str, out: Optional[str] = None, max_turns: int = DEFAULT_MAX_TURNS,
                   split: str = "train") -> Dict[str, Any]:
    """Demonstrations of `<data_dir>/<split>.parquet` (store `<data_dir>/kg_store.json`) -> `out`
    (default `<data_dir>/sft.parquet`). Returns {file, demos, rows, skipped}."""
    from tools.kg_store import DEFAULT_FILENAME
    from agent_rl.data.loader import load_rows
    from agent_rl.tasks.rows import rules_for
    from tools.kg_index import KGIndex

    if max_turns < 3:
        raise ValueError(f"max_turns={max_turns}: a demonstration needs at least 3 turns (relations, entities, answer)")
    rows = load_rows(os.path.join(data_dir, f"{split}.parquet"), rules=rules_for)
    index = KGIndex.from_path(os.path.join(data_dir, DEFAULT_FILENAME))
    demos, skipped = build_kg_demos(rows, index, max_turns)
    if not demos:
        raise ValueError(f"{data_dir}: no {split} row has a demonstration within {max_turns} turns ({skipped})")
    out = write_demos(demos, out or os.path.join(data_dir, DEMOS_FILENAME))
    return {"file": out, "demos": len(demos), "rows": len(rows), "skipped": dict(sorted(skipped.items()))}


def demo_plan(cfg, folder: str, out: str):
    """The registry's demos hook: (what, `agent-rl data` command, writer) for a run's missing `sft.files` entry."""
    from functools import partial

    cmd = f"kg-demos --data {folder} --out {out} --max-turns {cfg.sft.max_turns}"
    return "KG", cmd, partial(write_kg_demos, folder, out=out, max_turns=cfg.sft.max_turns)
