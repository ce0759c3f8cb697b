"""`Tracker`: one `log(metrics, step)` call fans out to the console, a JSONL file and wandb.

    tracker = Tracker(["console", "jsonl", "wandb"], project="agent-rl", experiment="kg-grpo",
                      output_dir="outputs/kg-grpo", config_dict=cfg_dict, wandb_mode="auto", plot=True)
    tracker.log({"reward/mean": 0.4, "actor/kl_loss": 1e-3}, step=1)
    tracker.finish()          # closes sinks; with plot=True writes <output_dir>/metrics.png
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from agent_rl.metrics.console import format_block
from agent_rl.metrics.jsonl import JsonlWriter, to_jsonable

log = logging.getLogger(__name__)

BACKENDS = ("console", "jsonl", "wandb")


class Tracker:
    def __init__(self, backends: Sequence[str], project: str = "agent-rl", experiment: str = "run",
                 output_dir: str = ".", config_dict: Optional[Mapping[str, Any]] = None, wandb_mode: str = "auto",
                 plot: bool = True, print_fn: Optional[Callable[[str], None]] = None):
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown logger backend {unknown[0]!r} (one of {', '.join(BACKENDS)})")
        self.backends = list(backends)
        self.output_dir = output_dir
        self.plot = plot
        self._print = print_fn or (lambda s: print(s, file=sys.stdout, flush=True))
        os.makedirs(output_dir, exist_ok=True)
        self.jsonl_path = os.path.join(output_dir, "metrics.jsonl")
        self.png_path = os.path.join(output_dir, "metrics.png")
        self._jsonl = JsonlWriter(self.jsonl_path) if "jsonl" in self.backends else None
        self._wandb = None
        if "wandb" in self.backends:
            from agent_rl.metrics.wandb_sink import WandbSink

            self._wandb = WandbSink(project, experiment, output_dir, config_dict, mode=wandb_mode)
        self._finished = False

    @property
    def wandb_run_dir(self) -> Optional[str]:
        return self._wandb.run_dir if self._wandb else None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Fan `metrics` out to the sinks. The JSONL record is written first and is on disk (flushed and
        fsync'ed) when this returns: the trainer logs a step before making its checkpoint resumable."""
        clean: Dict[str, Any] = {k: to_jsonable(v) for k, v in metrics.items()}
        if self._jsonl:
            self._jsonl.write(clean, step)
        if "console" in self.backends:
            self._print(format_block({k: v for k, v in clean.items() if v is not None}, step))
        if self._wandb:
            try:
                self._wandb.log({k: v for k, v in clean.items() if isinstance(v, (int, float))}, step)
            except Exception as e:  # a logging sink never stops training
                log.warning("wandb log failed: %s", e)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._jsonl:
            self._jsonl.close()
            if self.plot and os.path.getsize(self.jsonl_path) > 0:
                try:
                    from agent_rl.metrics.plot import plot_metrics

                    if plot_metrics(self.jsonl_path, self.png_path):
                        self._print(f"training curves: {self.png_path}")
                except Exception as e:
                    log.warning("could not plot metrics: %s", e)
        if self._wandb:
            try:
                self._wandb.finish()
            except Exception as e:
                log.warning("wandb finish failed: %s", e)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
