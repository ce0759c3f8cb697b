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

With per-objective normalisation (GDPO, `algorithm.norm_per_objective`) a group whose weighted-sum score is the same
for every sample can still have signal (objectives that trade off against each other): with `objectives` (their
names) and a score metric, a group counts as informative when the score or any objective's score (the `obj/<name>`
component) differs within it.
"""
from __future__ import annotations

from typing import Optional, Sequence

from agent_rl.rollout.trajectory import Trajectory

REWARD_METRICS = ("score", "seq_reward", "seq_final_reward")
ACC_COMPONENTS = ("acc", "correct", "em")
EPS = 1e-8


class FilterMetricError(ValueError):
    """The filter's metric is not something the task's reward reports."""


class GroupFilter:
    def __init__(self, metric: str = "score", objectives: Sequence[str] = ()):
        self.metric = metric
        self.objectives = tuple(objectives) if metric in REWARD_METRICS else ()

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
        if len(values) < 2 or max(values) - min(values) > EPS:
            return True
        return any(_spread([(t.reward_components or {}).get(f"obj/{name}") for t in trajs]) for name in self.objectives)


def _spread(values: Sequence[Optional[float]]) -> bool:
    """The values differ (a value present for some samples only counts as a difference)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return False
    return len(present) < len(values) or max(present) - min(present) > EPS
