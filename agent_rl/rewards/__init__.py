"""Reward helpers every task shares: answer-text normalisation and number matching (`text`), per-turn format
scores (`turns`). The task rewards live with their task (`agent_rl/tasks/<task>/reward.py`); the dispatch by
`data_source` is `agent_rl.tasks.compute_reward`."""
