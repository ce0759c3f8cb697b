"""Multi-objective rewards (`reward.objectives`): several reward functions with weights, each kept and logged.

    score, components = score_objectives(traj, reward_cfg)            # or `await score_objectives_async(...)`

An objective is `{function, weight, data_sources}` (`config.objectives`). It applies to a row when `data_sources` is
null or lists the row's `data_source`; its `function` is a `module:function` / `file.py:function` path, a task name
(`kg`, `arith`, `gsm8k`: the task's reward) or `auto` (the row's own reward, `rewards.reward_fn_for`). Every
function has the signature of any reward here, `fn(traj, reward_cfg) -> (score, {component: value})`, and may be
async (awaited on the rollout's loop, as the LLM judge is).

For a row, every objective that applies is scored, in config order, and:

    score                 = sum of weight * score over those objectives (TRL's reward_weights)
    components[obj/NAME]  = that objective's score (unweighted): reward/obj/NAME and val/<source>/obj/NAME
    components[...]       = the objectives' own components, unprefixed; on a name clash the first objective wins
    traj.turn_rewards     = sum of weight * turn rewards of the objectives that set them (grpo_multi_turn)

Objectives that do not apply to a row add nothing to it (no `obj/NAME` component either). A row no objective
applies to is an error (`UnknownDataSourceError`, one line, at load when the rows are checked). A function that
raises, returns something other than (number, dict) or a non-finite score stops the step with `ObjectiveError`
naming the objective.
"""
from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent_rl.config.objectives import AUTO, parse_objectives
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tasks.registry import TASKS, hook, load_callable
from agent_rl.tasks.rewards import RewardFn, UnknownDataSourceError, reward_fn_for

PREFIX = "obj/"     # component (and metric) prefix of an objective's score


class ObjectiveError(RuntimeError):
    """An objective's reward function failed or returned something unusable."""


@dataclass(frozen=True)
class Objective:
    name: str
    function: str
    weight: float = 1.0
    data_sources: Optional[Tuple[str, ...]] = None

    def applies(self, row: Optional[dict]) -> bool:
        return self.data_sources is None or (row or {}).get("data_source") in self.data_sources

    @property
    def key(self) -> str:
        return f"reward.objectives.{self.name}"


def objectives_of(reward_cfg) -> List[Objective]:
    """The configured objectives in config order ([] when none); ValueError naming the key (unknown task too)."""
    out = []
    for name, o in parse_objectives(getattr(reward_cfg, "objectives", None)).items():
        obj = Objective(name, o.function, o.weight, tuple(o.data_sources) if o.data_sources is not None else None)
        if ":" not in obj.function and obj.function != AUTO and obj.function not in TASKS:
            raise ValueError(f"{obj.key}.function: unknown task {obj.function!r} (a task: {', '.join(TASKS)}; "
                             f"{AUTO}; or `package.module:function`)")
        out.append(obj)
    return out


def check_objectives(reward_cfg) -> List[Objective]:
    """`objectives_of`, and every function that is not `auto` loads (ValueError naming the key)."""
    objs = objectives_of(reward_cfg)
    for o in objs:
        if o.function != AUTO:
            _function(o, None, reward_cfg)
    return objs


def _function(obj: Objective, row: Optional[dict], reward_cfg) -> RewardFn:
    if obj.function == AUTO:
        return reward_fn_for(row or {}, getattr(reward_cfg, "default_reward", None),
                             getattr(reward_cfg, "functions", None))
    if obj.function in TASKS:
        return hook(TASKS[obj.function], "reward")
    return load_callable(obj.function, f"{obj.key}.function")


def applying(objs: Sequence[Objective], row: Optional[dict]) -> List[Objective]:
    """The objectives that score `row`; UnknownDataSourceError when there is none."""
    out = [o for o in objs if o.applies(row)]
    if not out:
        source = (row or {}).get("data_source")
        raise UnknownDataSourceError(
            f"no objective of reward.objectives applies to data_source {source!r} (their data_sources: "
            + "; ".join(f"{o.name}: {list(o.data_sources) if o.data_sources else 'every row'}" for o in objs)
            + f"); add {source!r} to one, or an objective without data_sources")
    return out


def check_row(row: dict, reward_cfg) -> None:
    """A row can be scored: some objective applies, and each `auto` one finds the row's reward (raises otherwise)."""
    for o in applying(objectives_of(reward_cfg), row):
        _function(o, row, reward_cfg)


def _fail(obj: Objective, traj: Trajectory, what: str) -> ObjectiveError:
    return ObjectiveError(f"{obj.key} ({obj.function}) on a {(traj.row or {}).get('data_source')!r} row: {what}")


def _checked(obj: Objective, traj: Trajectory, out: Any) -> Tuple[float, Dict[str, float]]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], dict)):
        raise _fail(obj, traj, f"returned {type(out).__name__}, not (score, {{component: value}})")
    try:
        score = float(out[0])
        comps = {str(k): float(v) for k, v in out[1].items()}
    except (TypeError, ValueError) as e:
        raise _fail(obj, traj, f"returned a non-numeric score or component ({e})") from None
    if not math.isfinite(score):
        raise _fail(obj, traj, f"returned a non-finite score {score}")
    return score, comps


def _error(obj: Objective, traj: Trajectory, e: Exception) -> ObjectiveError:
    first = str(e).splitlines()[0] if str(e) else ""
    return _fail(obj, traj, f"{type(e).__name__}: {first}")


class _Sum:
    """The weighted sum of a row's objectives, built one objective at a time."""

    def __init__(self, traj: Trajectory):
        self.traj = traj
        self.score = 0.0
        self.named: Dict[str, float] = {}
        self.comps: Dict[str, float] = {}
        self.turns: List[float] = []

    def add(self, obj: Objective, result: Tuple[float, Dict[str, float]], turns: List[float]) -> None:
        score, comps = result
        self.score += obj.weight * score
        self.named[PREFIX + obj.name] = score
        for k, v in comps.items():
            self.comps.setdefault(k, v)
        if turns:
            if len(turns) > len(self.turns):
                self.turns += [0.0] * (len(turns) - len(self.turns))
            for i, r in enumerate(turns):
                self.turns[i] += obj.weight * float(r)

    def result(self) -> Tuple[float, Dict[str, float]]:
        self.traj.turn_rewards = self.turns
        return float(self.score), {**self.comps, **self.named}


def score_objectives(traj: Trajectory, reward_cfg) -> Tuple[float, Dict[str, float]]:
    """(weighted score, components) of a finished trajectory under reward.objectives (module docstring): the async
    scoring run to completion. Inside a running event loop it only works when no objective function is async (it
    then never suspends); otherwise use `score_objectives_async`."""
    coro = score_objectives_async(traj, reward_cfg)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("an async reward objective was called through compute_reward inside a running event loop: "
                       "await compute_reward_async(traj, reward_cfg) instead")


async def score_objectives_async(traj: Trajectory, reward_cfg) -> Tuple[float, Dict[str, float]]:
    """Score every objective that applies to the trajectory's row, one after another (each may set
    `traj.turn_rewards`; async objective functions are awaited; trajectories are still scored concurrently)."""
    total = _Sum(traj)
    for obj in applying(objectives_of(reward_cfg), traj.row):
        fn = _function(obj, traj.row, reward_cfg)
        traj.turn_rewards = []
        try:
            out = fn(traj, reward_cfg)
            if inspect.isawaitable(out):
                out = await out
        except Exception as e:  # noqa: BLE001 - re-raised naming the objective
            raise _error(obj, traj, e) from e
        total.add(obj, _checked(obj, traj, out), list(traj.turn_rewards or []))
    return total.result()
