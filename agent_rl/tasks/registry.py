"""The tasks the framework knows: the one list that data generation, demonstrations, rewards, tool detection and
the services a run starts read. Nothing outside `agent_rl/tasks/` names a task.

A task is a folder of `agent_rl/tasks/` (`kg`, `arith`, `gsm8k`) described by a `Task` here, its hooks written as
`module:function` strings (imported on first use, so reading the registry imports no task):

    reward            (traj, reward_cfg) -> (score, {component: value}); scores the task's `data_sources`
    generate          (seed, hops) -> a generator with `.split(split, n, seen) -> (rows, histogram)` and
                      `.finish(out_dir) -> dict` (extra files, e.g. the KG store); `agent-rl data generate NAME`
    demos             (cfg, folder, out) -> (what, command, write): the warm-start demonstrations of a folder
    services          (cfg, log) -> handle with `.stop(timeout)` or None: what a run starts for the task's tools
                      (the KG server), when its tool YAML declares one of the task's `tools`
    hints             () -> {level: text}: the `[Hint]:` texts of `data.prompt_augmentation.guideline_level`
                      (agent_rl/data/hints.py); `hint_anchor` is the question marker of the task's prompts, before
                      whose last occurrence in the last user message the hint goes
    metrics           (trajs) -> {name: value}: added to every step's metrics (the KG task: kg/query_success_rate);
                      {} when the trajectories give it nothing to report
    group_metrics     (trajs) -> {name: value} for a group of validation rows (per hop count: hop<k>/kg_queries)

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


TASKS: Dict[str, Task] = {
    "kg": Task(
        name="kg", data_sources=("kg_synth", "webqsp", "cwq"), reward="agent_rl.tasks.kg.reward:kg_reward",
        abilities=("kgqa",), ground_truth=(list, tuple), tools=("kg_query",),
        tool_config="configs/tool_config/kg_query_tool_config.yaml",
        generate="agent_rl.tasks.kg.generate:KGGenerator",
        generated_files=("train.parquet", "val.parquet", "test.parquet", "kg_store.json"),
        demos="agent_rl.tasks.kg.demos:demo_plan", services="agent_rl.tasks.kg.server:start_services",
        hints="agent_rl.tasks.kg.hints:hint_texts", hint_anchor="Question:",
        metrics="agent_rl.tasks.kg.metrics:step_metrics", group_metrics="agent_rl.tasks.kg.metrics:group_metrics"),
    "arith": Task(
        name="arith", data_sources=("arith_synth",), reward="agent_rl.tasks.arith.reward:arith_reward",
        abilities=("math",), ground_truth=(str, int, float), tools=("calculator", "calc_gsm8k_reward"),
        tool_config="configs/tool_config/arith_tool_config.yaml",
        generate="agent_rl.tasks.arith.generate:ArithGenerator",
        generated_files=("train.parquet", "val.parquet", "test.parquet"),
        demos="agent_rl.tasks.arith.demos:demo_plan", hints="agent_rl.tasks.arith.hints:hint_texts",
        hint_anchor="Problem:"),
    "gsm8k": Task(
        name="gsm8k", data_sources=("gsm8k",), reward="agent_rl.tasks.arith.reward:arith_reward",
        tools=("calc_gsm8k_reward",), tool_config="configs/tool_config/gsm8k_tool_config.yaml",
        hints="agent_rl.tasks.arith.hints:hint_texts", hint_anchor="Problem:"),
}

GENERATABLE = tuple(n for n, t in TASKS.items() if t.generate)     # data.generate_if_missing / `data generate`


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (one of {', '.join(TASKS)})")
    return TASKS[name]


def task_of_source(data_source: Any) -> Optional[Task]:
    return next((t for t in TASKS.values() if data_source in t.data_sources), None)


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


def metric_hooks(name: str) -> List[Callable]:
    """The `name` hook (`metrics` | `group_metrics`) of every task that has one, in TASKS order."""
    return [hook(t, name) for t in TASKS.values() if getattr(t, name)]


def hook(task: Task, name: str) -> Optional[Callable]:
    spec = getattr(task, name)
    return load_callable(spec, f"task {task.name} {name}") if spec else None
