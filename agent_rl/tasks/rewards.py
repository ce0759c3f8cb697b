"""Reward dispatch by the row's `data_source`.

    score, components = compute_reward(traj, reward_cfg)

Also fills `traj.turn_rewards` (one value per assistant turn, for the multi-turn advantage). A row's reward is,
first match wins: `reward.functions[data_source]` (a `module:function` / `file.py:function` string, loaded in
every process from the config), a function registered in this process with `register_reward(name, fn)` (e.g. by
the tool module that introduces the data source; docs/tools.md), the reward of the task whose `data_sources` list
it (`registry.TASKS`).

A data_source with none of these is an error (`UnknownDataSourceError`, one line): at load when the trainer /
`agent-rl rollout` check the rows, else at the first trajectory that needs scoring, unless
`reward.default_reward` names a default: a task name (`kg`, `arith`: every unknown source gets that task's
reward) or `infer` (the task whose `abilities` hold the row's `ability`, else whose `ground_truth` types hold
the ground truth's type: list -> KG, str / number -> arithmetic).
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Awaitable, Callable, Dict, Optional, Tuple, Union

from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tasks.registry import TASKS, hook, load_callable, task_of_ability, task_of_source

RewardFn = Callable[[Trajectory, object], Union[Tuple[float, Dict[str, float]], Awaitable[Tuple[float, Dict[str, float]]]]]

REWARD_FNS: Dict[str, RewardFn] = {}      # registered in this process (register_reward); the tasks' come from TASKS
DEFAULT_REWARD_NAMES = tuple(TASKS) + ("infer",)     # values of reward.default_reward


class UnknownDataSourceError(ValueError):
    """A row's data_source has no reward function and no default reward is configured (the CLIs report it as a
    one-line config error when the rows are loaded)."""


def register_reward(data_source: str, fn: RewardFn) -> None:
    """Score rows of `data_source` with `fn(traj, reward_cfg) -> (score, {component: value})` in this process."""
    if not isinstance(data_source, str) or not data_source:
        raise ValueError(f"register_reward: data_source must be a non-empty string, got {data_source!r}")
    if not callable(fn):
        raise TypeError(f"register_reward({data_source!r}, ...): fn must be callable, got {type(fn).__name__}")
    REWARD_FNS[data_source] = fn


def configured_rewards(functions) -> Dict[str, RewardFn]:
    """`reward.functions` resolved (ValueError naming the key when one cannot be loaded)."""
    return {src: load_callable(spec, f"reward.functions.{src}") for src, spec in (functions or {}).items()}


def _infer(row: dict) -> Optional[RewardFn]:
    ability = row.get("ability")
    gt = (row.get("reward_model") or {}).get("ground_truth")
    task = task_of_ability(ability)
    if task is not None:
        return hook(task, "reward")
    if isinstance(gt, bool):
        return None
    for t in TASKS.values():
        if t.ground_truth and isinstance(gt, t.ground_truth):
            return hook(t, "reward")
    return None


def _unknown(source, detail: str = "") -> UnknownDataSourceError:
    known = ", ".join(sorted(set(REWARD_FNS) | {s for t in TASKS.values() for s in t.data_sources}))
    return UnknownDataSourceError(
        f"no reward function for data_source {source!r}{detail} (known: {known}); name one in the config: "
        f"reward.functions.{source}=package.module:function, or register_reward({source!r}, fn) in a module the run "
        f"imports (e.g. your tool's module), or set a default: "
        f"reward.default_reward={'|'.join(DEFAULT_REWARD_NAMES)} (docs/tools.md, 'Rewards for a new data_source')")


def reward_fn_for(row: dict, default: Optional[str] = None, functions=None) -> RewardFn:
    """The reward function of a row (see the module docstring); raises UnknownDataSourceError."""
    source = row.get("data_source")
    if functions and source in functions:
        return load_callable(functions[source], f"reward.functions.{source}")
    if source in REWARD_FNS:
        return REWARD_FNS[source]
    task = task_of_source(source)
    if task is not None:
        return hook(task, "reward")
    if default is None:
        raise _unknown(source)
    if default not in DEFAULT_REWARD_NAMES:
        raise ValueError(f"reward.default_reward: {default!r} is not one of {', '.join(DEFAULT_REWARD_NAMES)}")
    if default == "infer":
        fn = _infer(row)
        if fn is None:
            abilities = "|".join(a for t in TASKS.values() for a in t.abilities)
            raise _unknown(source, f" (the default 'infer' found no ability {abilities} and no str / number / list "
                                   "ground truth)")
        return fn
    return hook(TASKS[default], "reward")


def check_row_reward(row: dict, reward_cfg) -> None:
    """The load-time check of a row: it can be scored under `reward_cfg` (its reward function, or with
    `reward.objectives` some objective applying to it); raises UnknownDataSourceError / ValueError."""
    if getattr(reward_cfg, "objectives", None):
        from agent_rl.tasks.objectives import check_row

        check_row(row, reward_cfg)
        return
    reward_fn_for(row, getattr(reward_cfg, "default_reward", None), getattr(reward_cfg, "functions", None))


def compute_reward(traj: Trajectory, reward_cfg) -> Tuple[float, Dict[str, float]]:
    """(score, components) of a finished trajectory; sets `traj.turn_rewards`. An async reward function (one that
    returns an awaitable, e.g. `tasks/judge.py`) is run to completion here when no event loop runs in this thread;
    inside a loop, use `compute_reward_async` (the rollout scheduler does). With `reward.objectives`, the weighted
    sum of the objectives (`tasks/objectives.py`)."""
    if getattr(reward_cfg, "objectives", None):
        from agent_rl.tasks.objectives import score_objectives

        return score_objectives(traj, reward_cfg)
    fn = reward_fn_for(traj.row, getattr(reward_cfg, "default_reward", None), getattr(reward_cfg, "functions", None))
    out = fn(traj, reward_cfg)
    if inspect.isawaitable(out):
        out = _run_awaitable(out)
    score, comps = out
    return float(score), {k: float(v) for k, v in comps.items()}


async def compute_reward_async(traj: Trajectory, reward_cfg) -> Tuple[float, Dict[str, float]]:
    """`compute_reward` for the rollout's event loop: an async reward function is awaited, never run blocking."""
    if getattr(reward_cfg, "objectives", None):
        from agent_rl.tasks.objectives import score_objectives_async

        return await score_objectives_async(traj, reward_cfg)
    fn = reward_fn_for(traj.row, getattr(reward_cfg, "default_reward", None), getattr(reward_cfg, "functions", None))
    out = fn(traj, reward_cfg)
    if inspect.isawaitable(out):
        out = await out
    score, comps = out
    return float(score), {k: float(v) for k, v in comps.items()}


def _run_awaitable(aw):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async def _await():
            return await aw
        return asyncio.run(_await())
    if inspect.iscoroutine(aw):
        aw.close()
    raise RuntimeError("an async reward function was called through compute_reward inside a running event loop: "
                       "await compute_reward_async(traj, reward_cfg) instead")
