"""The dataset row schema shared by every task (see docs/data.md).

    prompt        list of {role, content}
    data_source   the task's data set (a shipped task's, agent_rl/tasks/registry.py, or a user's)
    ability       the kind of task (a shipped task's rows carry its own)
    reward_model  {style: "rule", ground_truth: anything the data source's reward reads}
    extra_info    {split, index, sample_id, tools_kwargs, ...task fields}

`tools_kwargs = {tool_name: {"create_kwargs": {...}, "execute_kwargs": {...}}}` with empty dicts
omitted (parquet cannot store a struct without fields).

The checks here are the same for every task. What a task requires of its own rows (its ability, the type of its
ground truth) comes in through `rules`: data_source -> the task's check `(row) -> problem or None`, or None for a
data source no task claims (`agent_rl.tasks.rows.rules_for` reads the task registry; this layer names no task).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

REQUIRED_COLUMNS = ("prompt", "data_source", "ability", "reward_model", "extra_info")
GENERATED_EXTRA = ("split", "index", "sample_id", "tools_kwargs")    # the extra_info keys every task generator writes

RowCheck = Callable[[Dict[str, Any]], Optional[str]]
Rules = Callable[[Any], Optional[RowCheck]]


def make_row(*, prompt: List[Dict[str, str]], data_source: str, ability: str, ground_truth: Any, split: str,
             index: int, sample_id: str, tools_kwargs: Dict[str, Any], rules: Optional[Rules] = None,
             **task_fields: Any) -> Dict[str, Any]:
    """Build one row and check it (`validate_row`); `task_fields` go into extra_info after the fixed keys."""
    extra = {"split": split, "index": int(index), "sample_id": sample_id, "tools_kwargs": tools_kwargs}
    extra.update(task_fields)
    row = {"prompt": prompt, "data_source": data_source, "ability": ability,
           "reward_model": {"style": "rule", "ground_truth": ground_truth}, "extra_info": extra}
    validate_row(row, rules=rules)
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


def validate_row(row: Dict[str, Any], where: str = "row", rules: Optional[Rules] = None) -> None:
    """Raise ValueError (one line naming the field) when `row` does not follow the schema: the load-time check
    (`row_problem`, with the task's rules), and for a row of a task's data source also what its generator writes
    (style `rule`, the fixed extra_info keys); no empty dicts anywhere (used when writing)."""
    for col in REQUIRED_COLUMNS:
        if col not in row:
            raise ValueError(f"{where}: missing column {col!r}")
    prompt = row["prompt"]
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt):
        raise ValueError(f"{where}: prompt must be a non-empty list of {{role, content}} strings")
    problem = row_problem(row, rules)
    if problem:
        raise ValueError(f"{where}: {problem}")
    if rules is not None and rules(row["data_source"]) is not None:      # a task's row: what its generator writes
        if row["reward_model"].get("style") != "rule":
            raise ValueError(f"{where}: reward_model must be {{style: 'rule', ground_truth}}")
        extra = row["extra_info"]
        if not isinstance(extra, dict):
            raise ValueError(f"{where}: extra_info must be a struct")
        for key in GENERATED_EXTRA:
            if key not in extra:
                raise ValueError(f"{where}: extra_info.{key} missing")
    bad = _no_empty_dicts(row, where)
    if bad:
        raise ValueError(f"{bad}: empty dict (parquet cannot store an empty struct; omit it)")


ROLES = ("system", "user", "assistant", "tool")
TOOL_KWARG_KEYS = ("create_kwargs", "execute_kwargs", "calc_reward_kwargs", "release_kwargs")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def row_problem(row: Any, rules: Optional[Rules] = None) -> Optional[str]:
    """What is wrong with a loaded row, as `field: problem` (None when it can be trained on).

    The load-time check (`loader.load_rows`): everything the rollout and the rewards rely on, for any task, so a
    bad row is refused when the data are loaded instead of failing the step that draws it. Every row needs the
    columns and types; the rows of a task (`rules` gives its check) also what that task requires (the shipped
    tasks: the ability and ground-truth type of their data_source). Plain per-row checks, no template rendering
    (100k rows in well under a second). `validate_row` (used when writing) is stricter: it also wants the fixed
    extra_info keys of our generators. `rules` (data_source -> the task's check, or None) adds what a task
    requires of its rows, checked where the ground truth is (`agent_rl.tasks.rows.rules_for`).
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
    check = rules(ds) if rules is not None else None
    if check is not None:      # a task's own rows: its ability and ground-truth type
        problem = check(row)
        if problem:
            return problem
    elif rm.get("ground_truth") is None:    # another task's reward function reads it: any type, but present
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
