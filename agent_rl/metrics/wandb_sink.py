"""wandb backend that never blocks a run on the network.

Mode `auto`: online when WANDB_API_KEY is set, otherwise offline (the run folder is written under
`<output_dir>/wandb`; upload later with `wandb sync`). A resumed run (same output_dir) continues
the same wandb run id (kept in `<output_dir>/wandb_run_id`). If an online init fails or times out, the sink
falls back to offline with one warning line; if wandb cannot start at all, it disables itself.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional

log = logging.getLogger(__name__)


def resolve_mode(mode: str) -> str:
    env = os.environ.get("WANDB_MODE")
    if mode == "auto":
        if env in ("offline", "online", "disabled", "dryrun"):
            return "offline" if env == "dryrun" else env
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class WandbSink:
    def __init__(self, project: str, experiment: str, output_dir: str, config: Optional[Mapping[str, Any]] = None,
                 mode: str = "auto", init_timeout_s: float = 30.0):
        self.mode = resolve_mode(mode)
        self.run = None
        self.run_dir = None
        if self.mode == "disabled":
            return
        import wandb

        self._wandb = wandb
        wdir = os.path.abspath(output_dir)
        os.makedirs(wdir, exist_ok=True)
        kwargs = dict(project=project, name=experiment, dir=wdir, config=dict(config or {}), reinit="finish_previous")
        # A resumed training run continues the same wandb run: its id is kept in the output folder.
        id_file = os.path.join(wdir, "wandb_run_id")
        if os.path.exists(id_file):
            with open(id_file) as f:
                kwargs.update(id=f.read().strip(), resume="allow")
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(init_timeout=init_timeout_s, silent=True,
                                                                          console="off"), **kwargs)
        except Exception as e:  # network down, bad key, ...
            if self.mode != "online":
                log.warning("wandb disabled: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
                return
            log.warning("wandb online init failed (%s); logging offline instead", str(e).splitlines()[0] if str(e) else type(e).__name__)
            self.mode = "offline"
            try:
                self.run = wandb.init(mode="offline", settings=wandb.Settings(silent=True, console="off"), **kwargs)
            except Exception as e2:
                log.warning("wandb disabled: %s", e2)

        # <output_dir>/wandb/offline-run-<time>-<id> (the folder `wandb sync` takes)
        if self.run is not None:
            self.run_dir = os.path.dirname(self.run.dir)
            with open(id_file, "w") as f:
                f.write(self.run.id)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(dict(metrics), step=int(step))

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            finally:
                self.run = None
