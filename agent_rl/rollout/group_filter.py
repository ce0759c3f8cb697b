"""Dynamic sampling's group filter (DAPO; verl `algorithm.filter_groups`).

A GRPO group whose samples all score the same gets advantage 0 on every token: it costs an update and
teaches nothing. With the filter on, the scheduler does not count such a group toward the step's B
(it is dropped, its tool instances released) and keeps waiting for over-sampled groups; the trainer
launches more rows in further generation rounds when the launched groups run out
(`algorithm.filter_groups.max_num_gen_batches`). Filtering works on whole groups, so a kept group's
baseline is its own n samples, as without the filter.

`metric` (verl's names): `score` / `seq_reward` / `seq_final_reward` = the trajectory reward; `acc` = answer
correctness (the reward component `acc`, `correct` or `em`, whichever the task's reward gives); any other
name = that reward component.
"""
from __future__ import annotations

from typing import Sequence

from agent_rl.rollout.trajectory import Trajectory

REWARD_METRICS = ("score", "seq_reward", "seq_final_reward")
ACC_COMPONENTS = ("acc", "correct", "em")
EPS = 1e-8


class FilterMetricError(ValueError):
    """The filter's metric is not something the task's reward reports."""


class GroupFilter:
    def __init__(self, metric: str = "score"):
        self.metric = metric

    def value(self, traj: Trajectory) -> float:
        if self.metric in REWARD_METRICS:
            return float(traj.reward)
        comps = traj.reward_components or {}
        names = ACC_COMPONENTS if self.metric == "acc" else (self.metric,)
        for name in names:
            if name in comps:
                return float(comps[name])
        raise FilterMetricError(
            f"algorithm.filter_groups.metric={self.metric!r}: the reward of data source "
            f"{(traj.row or {}).get('data_source')!r} has no such component (it has: "
            f"{', '.join(sorted(comps)) or 'none'}; or use score)")

    def informative(self, trajs: Sequence[Trajectory]) -> bool:
        """True when the group's samples differ in the metric (a group of one sample always counts, as in verl)."""
        values = [self.value(t) for t in trajs]
        return len(values) < 2 or max(values) - min(values) > EPS
