"""`reward.objectives`: the free-form mapping checked against `schema.ObjectiveConfig` and filled with its defaults.

    reward:
      objectives:
        answer:  {function: kg, weight: 1.0}
        brevity: {function: my_task.rewards:brevity, weight: 0.2, data_sources: [kg_synth]}
        judge:   agent_rl.tasks.judge:judge_reward          # name -> function: weight 1, every row

`parse_objectives(raw)` -> {name: ObjectiveConfig} in config order, or ValueError naming the key in one line
(`reward.objectives.brevity.weight: must be a finite number, got nan`). The form of `function` is checked here
(`auto`, a bare task name, or `module:function` / `file.py:function`); that a task name exists and a path loads is
checked where the tasks are known (`tasks.objectives`, `orchestration.prepare.check_rewards`).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Any, Dict, Mapping

from agent_rl.config.schema import ObjectiveConfig

KEY = "reward.objectives"
AUTO = "auto"                                   # function: the row's own reward (as without objectives)
NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")      # names become metric keys (reward/obj/<name>) and Hydra keys
FIELDS = tuple(f.name for f in dataclasses.fields(ObjectiveConfig))


def _entry(name: str, value: Any) -> Dict[str, Any]:
    if isinstance(value, ObjectiveConfig):
        return dataclasses.asdict(value)
    if isinstance(value, str):
        return {"function": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"{KEY}.{name}: must be {{function, weight, data_sources}} or a function string, "
                     f"got {type(value).__name__}")


def parse_objective(name: Any, value: Any) -> ObjectiveConfig:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"{KEY}: objective name {name!r} must be letters, digits, _ or - (it names the metric "
                         f"reward/obj/<name>)")
    entry = _entry(name, value)
    unknown = [k for k in entry if k not in FIELDS]
    if unknown:
        raise ValueError(f"{KEY}.{name}.{unknown[0]}: unknown key (an objective has {', '.join(FIELDS)})")
    fn = entry.get("function")
    if not isinstance(fn, str) or not fn.strip():
        raise ValueError(f"{KEY}.{name}.function: missing; give `package.module:function`, `file.py:function`, a task "
                         f"name (kg, arith, gsm8k) or {AUTO}")
    fn = fn.strip()
    if ":" not in fn and not NAME_RE.match(fn):
        raise ValueError(f"{KEY}.{name}.function: {fn!r} is neither a task name nor `module:function` / "
                         f"`file.py:function`")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(float(weight)):
        raise ValueError(f"{KEY}.{name}.weight: must be a finite number, got {weight!r}")
    sources = entry.get("data_sources")
    if sources is not None:
        if isinstance(sources, (str, bytes)) or not isinstance(sources, (list, tuple)):
            raise ValueError(f"{KEY}.{name}.data_sources: must be a list of data sources or null (every row), "
                             f"got {sources!r}")
        sources = list(sources)
        if not sources:
            raise ValueError(f"{KEY}.{name}.data_sources: empty (the objective would score no row); list data "
                             f"sources, or null for every row")
        bad = [s for s in sources if not isinstance(s, str) or not s]
        if bad:
            raise ValueError(f"{KEY}.{name}.data_sources: every entry must be a non-empty string, got {bad[0]!r}")
    return ObjectiveConfig(function=fn, weight=float(weight), data_sources=sources)


def parse_objectives(raw: Any) -> Dict[str, ObjectiveConfig]:
    """{name: ObjectiveConfig} of `reward.objectives` (None / empty -> {}); ValueError naming the key."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{KEY}: must be a mapping name -> {{function, weight, data_sources}}, "
                         f"got {type(raw).__name__}")
    return {name: parse_objective(name, value) for name, value in raw.items()}


def normalized(raw: Any) -> Dict[str, Dict[str, Any]]:
    """`reward.objectives` as plain dicts with every default filled (what the validated config holds)."""
    return {name: dataclasses.asdict(o) for name, o in parse_objectives(raw).items()}
