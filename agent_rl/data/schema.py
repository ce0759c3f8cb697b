"""The dataset row schema shared by every task (see docs/data.md).

    prompt        list of {role, content}
    data_source   kg_synth | webqsp | cwq | arith_synth | gsm8k
    ability       kgqa | math
    reward_model  {style: "rule", ground_truth: str (math) | list[str] (KG gold entity names)}
    extra_info    {split, index, sample_id, tools_kwargs, ...task fields}

`tools_kwargs = {tool_name: {"create_kwargs": {...}, "execute_kwargs": {...}}}` with empty dicts
omitted (parquet cannot store a struct without fields).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

REQUIRED_COLUMNS = ("prompt", "data_source", "ability", "reward_model", "extra_info")
DATA_SOURCES = {"kg_synth": "kgqa", "webqsp": "kgqa", "cwq": "kgqa", "arith_synth": "math", "gsm8k": "math"}
KG_TOOL = "kg_query"
MATH_REWARD_TOOL = "calc_gsm8k_reward"
CALCULATOR_TOOL = "calculator"


def kg_tools_kwargs(sample_id: str, dataset: str) -> Dict[str, Any]:
    return {KG_TOOL: {"create_kwargs": {"sample_id": sample_id, "dataset": dataset}}}


def math_tools_kwargs(ground_truth: str) -> Dict[str, Any]:
    return {MATH_REWARD_TOOL: {"create_kwargs": {"ground_truth": str(ground_truth)}}}


def make_row(*, prompt: List[Dict[str, str]], data_source: str, ground_truth: Any, split: str, index: int,
             sample_id: str, tools_kwargs: Dict[str, Any], **task_fields: Any) -> Dict[str, Any]:
    """Build one row; `task_fields` go into extra_info after the fixed keys."""
    if data_source not in DATA_SOURCES:
        raise ValueError(f"unknown data_source {data_source!r} (expected one of {sorted(DATA_SOURCES)})")
    extra = {"split": split, "index": int(index), "sample_id": sample_id, "tools_kwargs": tools_kwargs}
    extra.update(task_fields)
    row = {"prompt": prompt, "data_source": data_source, "ability": DATA_SOURCES[data_source],
           "reward_model": {"style": "rule", "ground_truth": ground_truth}, "extra_info": extra}
    validate_row(row)
    return row


def _no_empty_dicts(value: Any, where: str) -> Optional[str]:
    if isinstance(value, dict):
        if not value:
            return where
        for k, v in value.items():
            bad = _no_empty_dicts(v, f"{where}.{k}")
            if bad:
                return bad
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = _no_empty_dicts(v, f"{where}[{i}]")
            if bad:
                return bad
    return None


def validate_row(row: Dict[str, Any], where: str = "row") -> None:
    """Raise ValueError (one line naming the field) when `row` does not follow the schema."""
    for col in REQUIRED_COLUMNS:
        if col not in row:
            raise ValueError(f"{where}: missing column {col!r}")
    prompt = row["prompt"]
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt):
        raise ValueError(f"{where}: prompt must be a non-empty list of {{role, content}} strings")
    ds = row["data_source"]
    if ds not in DATA_SOURCES:
        raise ValueError(f"{where}: unknown data_source {ds!r}")
    if row["ability"] != DATA_SOURCES[ds]:
        raise ValueError(f"{where}: ability {row['ability']!r} does not match data_source {ds!r}")
    rm = row["reward_model"]
    if not isinstance(rm, dict) or rm.get("style") != "rule" or "ground_truth" not in rm:
        raise ValueError(f"{where}: reward_model must be {{style: 'rule', ground_truth}}")
    gt = rm["ground_truth"]
    if DATA_SOURCES[ds] == "math":
        if not isinstance(gt, str) or not gt:
            raise ValueError(f"{where}: math ground_truth must be a non-empty string")
    elif not (isinstance(gt, list) and gt and all(isinstance(g, str) and g for g in gt)):
        raise ValueError(f"{where}: KG ground_truth must be a non-empty list of entity names")
    extra = row["extra_info"]
    if not isinstance(extra, dict):
        raise ValueError(f"{where}: extra_info must be a struct")
    for key in ("split", "index", "sample_id", "tools_kwargs"):
        if key not in extra:
            raise ValueError(f"{where}: extra_info.{key} missing")
    bad = _no_empty_dicts(row, where)
    if bad:
        raise ValueError(f"{bad}: empty dict (parquet cannot store an empty struct; omit it)")


def answer_strings(values: Sequence[Any]) -> List[str]:
    """Deduplicate answer names keeping first-seen order."""
    out: List[str] = []
    for v in values:
        s = str(v).strip()
        if s and s not in out:
            out.append(s)
    return out
