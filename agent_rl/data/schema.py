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
    if ds not in DATA_SOURCES:      # a user's task: what the loader checks (columns and types), nothing task-specific
        problem = row_problem(row)
        bad = _no_empty_dicts(row, where)
        if problem or bad:
            raise ValueError(f"{where}: {problem}" if problem else f"{bad}: empty dict (parquet cannot store an empty struct; omit it)")
        return
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


ROLES = ("system", "user", "assistant", "tool")
TOOL_KWARG_KEYS = ("create_kwargs", "execute_kwargs", "calc_reward_kwargs", "release_kwargs")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def row_problem(row: Any) -> Optional[str]:
    """What is wrong with a loaded row, as `field: problem` (None when it can be trained on).

    The load-time check (`loader.load_rows`): everything the rollout and the rewards rely on, for any task, so a
    bad row is refused when the data are loaded instead of failing the step that draws it. Rows of another task
    (a data_source not in DATA_SOURCES) need the columns and types only; rows of the shipped tasks also need the
    ability and ground-truth type of their data_source. Plain per-row checks, no template rendering (100k rows
    in well under a second). `validate_row` (used when writing) is stricter: it also wants the fixed
    extra_info keys of our generators.
    """
    if not isinstance(row, dict):
        return f"row: must be a struct, got {_kind(row)}"
    prompt = row.get("prompt")
    if not isinstance(prompt, (list, tuple)):
        return f"prompt: must be a list of {{role, content}} messages, got {_kind(prompt)}"
    if not prompt:
        return "prompt: must not be empty"
    for i, m in enumerate(prompt):
        if not isinstance(m, dict):
            return f"prompt[{i}]: must be a {{role, content}} message, got {_kind(m)}"
        role = m.get("role")
        if role not in ROLES:
            return f"prompt[{i}].role: must be one of {', '.join(ROLES)}, got {role!r}"
        if not isinstance(m.get("content"), str):
            return f"prompt[{i}].content: must be a string, got {_kind(m.get('content'))}"
    ds = row.get("data_source")
    if not isinstance(ds, str) or not ds:
        return f"data_source: must be a non-empty string, got {ds!r}"
    ability = row.get("ability")
    if not isinstance(ability, str):
        return f"ability: must be a string, got {_kind(ability)}"
    rm = row.get("reward_model")
    if not isinstance(rm, dict):
        return f"reward_model: must be a struct {{style: 'rule', ground_truth}}, got {_kind(rm)}"
    if rm.get("style") not in (None, "rule"):
        return f"reward_model.style: must be 'rule', got {rm.get('style')!r}"
    gt = rm.get("ground_truth")
    if ds in DATA_SOURCES:
        if ability != DATA_SOURCES[ds]:
            return f"ability: {ability!r} does not match data_source {ds!r} (expected {DATA_SOURCES[ds]!r})"
        if DATA_SOURCES[ds] == "math":
            if not isinstance(gt, str) or not gt:
                return f"reward_model.ground_truth: math ground truth must be a non-empty string, got {gt!r}"
        elif not (isinstance(gt, (list, tuple)) and gt and all(isinstance(g, str) and g for g in gt)):
            return f"reward_model.ground_truth: KG ground truth must be a non-empty list of entity names, got {gt!r}"
    elif gt is None:   # another task's reward function reads it: any type, but present
        return "reward_model.ground_truth: missing (null)"
    extra = row.get("extra_info")
    if extra is None:
        return None
    if not isinstance(extra, dict):
        return f"extra_info: must be a struct, got {_kind(extra)}"
    tk = extra.get("tools_kwargs")
    if tk is None:
        return None
    if not isinstance(tk, dict):
        return f"extra_info.tools_kwargs: must be a struct {{tool: {{create_kwargs, ...}}}}, got {_kind(tk)}"
    for name, entry in tk.items():
        if entry is None:
            continue
        if not isinstance(entry, dict):
            return f"extra_info.tools_kwargs.{name}: must be a struct, got {_kind(entry)}"
        for key in TOOL_KWARG_KEYS:
            val = entry.get(key)
            if val is not None and not isinstance(val, dict):
                return f"extra_info.tools_kwargs.{name}.{key}: must be a struct, got {_kind(val)}"
    return None


def answer_strings(values: Sequence[Any]) -> List[str]:
    """Deduplicate answer names keeping first-seen order."""
    out: List[str] = []
    for v in values:
        s = str(v).strip()
        if s and s not in out:
            out.append(s)
    return out
