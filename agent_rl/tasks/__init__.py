"""Tasks, one folder each (`kg`, `arith`, `gsm8k`): data generator / converter, reward, demonstrations, the
services their tools need. `registry` is the list the framework reads; `rewards` dispatches a trajectory to its
task's reward (or a user's, from `reward.functions`). docs/architecture.md says how to add one."""
from agent_rl.tasks.registry import GENERATABLE, TASKS, Task, get_task, load_callable, task_of_source, task_of_tools
from agent_rl.tasks.rewards import (DEFAULT_REWARD_NAMES, REWARD_FNS, UnknownDataSourceError, check_row_reward,
                                    compute_reward, compute_reward_async, register_reward, reward_fn_for)

__all__ = ["DEFAULT_REWARD_NAMES", "GENERATABLE", "REWARD_FNS", "TASKS", "Task", "UnknownDataSourceError",
           "check_row_reward", "compute_reward", "compute_reward_async", "get_task", "load_callable", "register_reward", "reward_fn_for", "task_of_source",
           "task_of_tools"]
