"""The tasks the framework knows: the one list that data generation, demonstrations, rewards, tool detection and
the services a run starts read. Nothing outside `agent_rl/tasks/` names a task.

A task is a folder of `agent_rl/tasks/` (`kg`, `arith`, `gsm8k`) described by a `Task` here, its hooks written as
`module:function` strings (imported on first use, so reading the registry imports no task):

    reward            (traj, reward_cfg) -> (score, {component: value}); scores the task's `data_sources`
    generate          (seed, hops) -> a generator with `.split(split, n, seen) -> (rows, histogram)` and
                      `.finish(out_dir) -> dict` (extra files, e.g. the KG store); `agent-rl data generate NAME`
    demos             (cfg, folder, out) -> (what, command, write): the warm-start demonstrations of a folder
    services          (cfg, log) -> handle with `.stop(timeout)` or None: what a run starts for the task's tools
                      (the KG server), when its tool YAML declares one of the task's `tools`; `env` names the
                      environment variables it sets that the Ray workers need (the server's URL)
    hints             () -> {level: text}: the `[Hint]:` texts of `data.prompt_augmentation.guideline_level`
                      (agent_rl/data/hints.py); `hint_anchor` is the question marker of the task's prompts, before
                      whose last occurrence in the last user message the hint goes
    metrics           (trajs) -> {name: value}: added to every step's metrics, named `<task name>/...` (the KG task:
                      kg/query_success_rate; the console prints the group after `tools`); {} when the trajectories
                      give it nothing to report
    group_metrics     (trajs) -> {name: value} for a group of validation rows (per hop count: hop<k>/kg_queries)
                      (`val_metrics` declares which step metrics validation also reports, per data source)
    rows              (row) -> "field: problem" or None: what the task requires of the rows of its data_sources
                      beyond the row schema (ability, ground-truth type), checked when rows are written and loaded
                      (agent_rl/tasks/rows.py)

and declarations:

    data_files        ((config key, file name), ...): a file of the task's data folder that a config key names (the KG
                      store, `tools.kg_store`): generated with the data when missing from the default folder
                      (data.generate_if_missing), found next to the data by `agent-rl eval`
    panels            ((title, (metric globs, ...), y axis from 0), ...): what the task adds to the training-curve PNG
                      (agent_rl/metrics/plot.py): a default panel's title adds the globs to it, each right after the
                      glob listed before it; a new title is a panel right after the one listed before it
    config            ((section, "module:Dataclass"), ...): the config keys the task adds to a section of the
                      schema, under their own names (the KG task: tools.kg_server_url, reward.kg_answer_metric, ...;
                      agent_rl/config/extend.py); `config_additions()` is what `config.load` reads

A user's own reward needs no edit here: `reward.functions: {DATA_SOURCE: "package.module:function"}` (or
`path/to/file.py:function`) in the config; every process (Ray workers too) loads it from the config string.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent_rl.tool_runtime import imports


@dataclass(frozen=True)
class Task:
    name: str
    data_sources: Tuple[str, ...]
    reward: str
    abilities: Tuple[str, ...] = ()           # row `ability` values whose rows the task scores (reward.default_reward=infer)
    ground_truth: Tuple[type, ...] = ()       # ground-truth types it scores (infer, when the ability says nothing)
    tools: Tuple[str, ...] = ()               # tool names that mark a tool YAML as this task's
    tool_config: Optional[str] = None         # its default tool YAML
    generate: Optional[str] = None
    generated_files: Tuple[str, ...] = ()     # what `agent-rl data generate NAME --out DIR` writes into DIR
    demos: Optional[str] = None
    services: Optional[str] = None
    hints: Optional[str] = None
    hint_anchor: Optional[str] = None         # the hint goes right before this text (e.g. `Question:`), else first
    metrics: Optional[str] = None             # (trajs) -> {name: value} added to every step's and validation's metrics
    group_metrics: Optional[str] = None       # (trajs) -> {name: value} per group of rows (validation, per hop count)
    rows: Optional[str] = None                # (row) -> problem or None: the task's own row rules
    val_metrics: Tuple[Tuple[str, str], ...] = ()   # (step metric of `metrics`, its name under val/<source>/)
    env: Tuple[str, ...] = ()                 # environment variables its services set that the workers need
    data_files: Tuple[Tuple[str, str], ...] = ()    # (config key, file name): files of its data folder the config names
    panels: Tuple[Tuple[str, Tuple[str, ...], bool], ...] = ()   # (title, metric globs, y from 0): training-curve PNG
    config: Tuple[Tuple[str, str], ...] = ()  # (section, "module:Dataclass"): the config keys the task adds


TASKS: Dict[str, Task] = {
    "kg": Task(
        name="kg", data_sources=("kg_synth", "webqsp", "cwq"), reward="agent_rl.tasks.kg.reward:kg_reward",
        abilities=("kgqa",), ground_truth=(list, tuple), tools=("kg_query",),
        tool_config="configs/tool_config/kg_query_tool_config.yaml",
        generate="agent_rl.tasks.kg.generate:KGGenerator",
        generated_files=("train.parquet", "val.parquet", "test.parquet", "kg_store.json"),
        demos="agent_rl.tasks.kg.demos:demo_plan", services="agent_rl.tasks.kg.server:start_services",
        hints="agent_rl.tasks.kg.hints:hint_texts", hint_anchor="Question:",
        metrics="agent_rl.tasks.kg.metrics:step_metrics", group_metrics="agent_rl.tasks.kg.metrics:group_metrics",
        val_metrics=(("kg/query_success_rate", "kg_query_success_rate"),), rows="agent_rl.tasks.kg.rows:row_problem",
        env=("AGENT_RL_KG_SERVER_URL",), data_files=(("tools.kg_store", "kg_store.json"),),
        panels=(("validation", ("val/*/f1", "val/*/format", "val/*/validity", "val/*/retrieval", "val/*/tool_call_rate",
                                "val/*/kg_query_success_rate"), True),
                ("validation F1 by hop", ("val/*/hop*/f1",), True),
                ("tool calls", (), True),
                ("KG query success rate", ("kg/query_success_rate",), True)),
        config=(("tools", "agent_rl.tasks.kg.config:KGToolsConfig"), ("reward", "agent_rl.tasks.kg.config:KGRewardConfig"))),
    "arith": Task(
        name="arith", data_sources=("arith_synth",), reward="agent_rl.tasks.arith.reward:arith_reward",
        abilities=("math",), ground_truth=(str, int, float), tools=("calculator", "calc_gsm8k_reward"),
        tool_config="configs/tool_config/arith_tool_config.yaml",
        generate="agent_rl.tasks.arith.generate:ArithGenerator",
        generated_files=("train.parquet", "val.parquet", "test.parquet"),
        demos="agent_rl.tasks.arith.demos:demo_plan", hints="agent_rl.tasks.arith.hints:hint_texts",
        hint_anchor="Problem:", rows="agent_rl.tasks.arith.rows:row_problem",
        config=(("reward", "agent_rl.tasks.arith.config:ArithRewardConfig"),)),
    "gsm8k": Task(
        name="gsm8k", data_sources=("gsm8k",), reward="agent_rl.tasks.arith.reward:arith_reward",
        tools=("calc_gsm8k_reward",), tool_config="configs/tool_config/gsm8k_tool_config.yaml",
        hints="agent_rl.tasks.arith.hints:hint_texts", hint_anchor="Problem:",
        rows="agent_rl.tasks.arith.rows:row_problem", config=(("reward", "agent_rl.tasks.arith.config:ArithRewardConfig"),)),
}

GENERATABLE = tuple(n for n, t in TASKS.items() if t.generate)     # data.generate_if_missing / `data generate`


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (one of {', '.join(TASKS)})")
    return TASKS[name]


def task_of_source(data_source: Any) -> Optional[Task]:
    return next((t for t in TASKS.values() if data_source in t.data_sources), None)


def task_of_ability(ability: Any) -> Optional[Task]:
    """The first task (registry order) whose `abilities` hold `ability`."""
    return next((t for t in TASKS.values() if ability in t.abilities), None)


def task_of_tools(names) -> Optional[Task]:
    """The first task (registry order) one of whose tools a tool YAML declares."""
    names = set(names)
    return next((t for t in TASKS.values() if names & set(t.tools)), None)


def task_hints(data_source: Any) -> Tuple[Dict[str, str], Optional[str]]:
    """({level: hint text}, anchor) of the task that scores `data_source`; ({}, None) when no task does or it has
    no hints (`data.prompt_augmentation`)."""
    task = task_of_source(data_source)
    if task is None:
        return {}, None
    fn = hook(task, "hints")
    return (dict(fn()) if fn else {}), task.hint_anchor


_CACHE: Dict[Tuple[str, str], Any] = {}


def load_callable(spec: str, where: str = "", base_dir: Optional[str] = None) -> Callable:
    """`package.module:name` or `path/to/file.py:name` (relative to `base_dir`, default the working directory) ->
    the object (tool_runtime/imports.py); ValueError (one line, prefixed with `where`) when it cannot be loaded or
    is not callable."""
    key = (spec, base_dir or "")
    if key in _CACHE:
        return _CACHE[key]
    try:
        obj = imports.load_callable(spec, base_dir)
    except imports.ImportSpecError as e:
        raise ValueError(f"{where}: {e}" if where else str(e)) from None
    _CACHE[key] = obj
    return obj


def config_value(cfg: Any, key: str) -> Any:
    """The value of a dotted config key (`tools.kg_store`) of a config object, None when it has none."""
    for part in key.split("."):
        cfg = getattr(cfg, part, None)
    return cfg


def set_config_value(cfg: Any, key: str, value: Any) -> None:
    """Set a dotted config key (`tools.kg_store`) of a config object."""
    section, _, leaf = key.rpartition(".")
    setattr(config_value(cfg, section) if section else cfg, leaf, value)


def config_additions() -> List[Tuple[str, type]]:
    """(section, dataclass) of every task's config keys (`Task.config`), in TASKS order; a dataclass two tasks share
    (arith and gsm8k) once. ValueError (one line) when one does not load."""
    out: List[Tuple[str, type]] = []
    for t in TASKS.values():
        for section, spec in t.config:
            cls = load_callable(spec, f"task {t.name} config")
            if (section, cls) not in out:
                out.append((section, cls))
    return out


def metric_hooks(name: str) -> List[Callable]:
    """The `name` hook (`metrics` | `group_metrics`) of every task that has one, in TASKS order."""
    return [hook(t, name) for t in TASKS.values() if getattr(t, name)]


def hook(task: Task, name: str) -> Optional[Callable]:
    spec = getattr(task, name)
    return load_callable(spec, f"task {task.name} {name}") if spec else None
