"""The rows of the tasks: the data layer's row schema (`agent_rl/data/schema.py`) plus what each task requires of its
own rows (the registry's `rows` hook: ability, ground-truth type), for the rows the tasks write and the rows a run
loads.

    rules_for(data_source)      the check of the task that scores `data_source` (None: no task claims it, e.g. a
                                user's task with a `reward.functions` entry: the schema's checks only)
    make_row(**fields)          data.schema.make_row for a task's data source (an unknown one is a ValueError)
    validate_row / write_rows   the write-time check / parquet writing with the tasks' rules
    row_problem(row)            the load-time check with the tasks' rules (`data.loader.load_rows(rules=rules_for)`)
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from agent_rl.data import parquet_io, schema
from agent_rl.tasks.registry import TASKS, hook, task_of_source


def rules_for(data_source: Any) -> Optional[schema.RowCheck]:
    task = task_of_source(data_source)
    return hook(task, "rows") if task is not None else None


def make_row(*, data_source: str, **fields: Any) -> Dict[str, Any]:
    if task_of_source(data_source) is None:
        known = sorted(ds for t in TASKS.values() for ds in t.data_sources)
        raise ValueError(f"unknown data_source {data_source!r} (expected one of {known})")
    return schema.make_row(data_source=data_source, rules=rules_for, **fields)


def validate_row(row: Dict[str, Any], where: str = "row") -> None:
    schema.validate_row(row, where, rules=rules_for)


def row_problem(row: Any) -> Optional[str]:
    return schema.row_problem(row, rules_for)


def write_rows(path: str, rows: Sequence[Dict[str, Any]]) -> str:
    return parquet_io.write_rows(path, rows, rules=rules_for)
