"""What the metrics layer reads of the task registry (`agent_rl/tasks/registry.py`): the panels a task adds to the
training-curve PNG (`Task.panels`) and the metric groups its `metrics` hook writes (`<task name>/...`, printed after
`tools` in the console). Read when asked, so the trainer's Tracker, `python -m agent_rl.metrics.plot` and a task a
user adds to the registry all see the same; the registry imports no task to answer. This module is the metrics
layer's one known exception to the import direction (docs/architecture.md, Layers).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

Panel = Tuple[str, Sequence[str], bool]     # (title, metric patterns, y axis from 0)


def task_panels() -> List[Sequence[Panel]]:
    """Each task's panels (`Task.panels`), in registry order."""
    from agent_rl.tasks.registry import TASKS

    return [t.panels for t in TASKS.values() if t.panels]


def task_groups() -> List[str]:
    """The metric groups the tasks' `metrics` hooks write (their names), in registry order."""
    from agent_rl.tasks.registry import TASKS

    return [t.name for t in TASKS.values() if t.metrics]
