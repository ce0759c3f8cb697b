"""Metrics sinks: console block, JSONL file, wandb, training-curve PNG."""
from agent_rl.metrics.plot import plot_metrics
from agent_rl.metrics.tracker import Tracker

__all__ = ["Tracker", "plot_metrics"]
