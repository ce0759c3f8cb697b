"""The run's checkpoints, driven from the trainer (docs/training.md: checkpoints and resume).

- `checkpoint_root(cfg)`: `<trainer.output_dir>/checkpoints`, where the workers write `global_step_<n>`.
- `save_checkpoint(trainer)`: every worker saves its part; the driver's state goes with it as the checkpoint's trainer state
  (step, data-loader position and epoch, experiment name, the KL controller's state).
- `resume(trainer)` (`trainer.resume`: `auto` = the newest checkpoint whose files match their saved checksums, a path
  = that checkpoint, verified; `disable` = start afresh): the workers load it, then the driver takes back its step,
  its KL controller (`load_kl_ctrl`), the KL reference of a finished warm-start and the data loader's position.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from agent_rl.config.load import ConfigError
from agent_rl.config.schema import TrainConfig
from agent_rl.orchestration.stop import TrainError


def checkpoint_root(cfg: TrainConfig) -> str:
    return os.path.join(cfg.trainer.output_dir, "checkpoints")


def save_checkpoint(trainer) -> str:
    extra = {"step": trainer.step, "loader": trainer.data.loader.state_dict(), "epoch": trainer.data.loader.epoch,
             "experiment": trainer.cfg.trainer.experiment_name}
    if trainer.kl_ctrl is not None:
        extra["kl_ctrl"] = trainer.kl_ctrl.state_dict()
    paths = trainer.group.call("save", checkpoint_root(trainer.cfg), trainer.step, extra)
    return paths[0]


def resume(trainer) -> None:
    from agent_rl.training.checkpoint import CheckpointError, find_resumable_checkpoint, is_complete
    from agent_rl.training.ckpt_verify import verify_checkpoint

    mode = trainer.cfg.trainer.resume
    if mode == "disable":
        return
    if mode == "auto":  # the newest checkpoint whose files match their saved checksums (warns on fallback)
        try:
            path = find_resumable_checkpoint(checkpoint_root(trainer.cfg), warn=lambda m: trainer.echo(f"WARNING: {m}"))
        except CheckpointError as e:
            raise TrainError(f"{e} (trainer.resume=disable starts afresh)") from None
        if path is None:
            return
    else:
        path = os.path.abspath(mode)
        if not is_complete(path):
            raise ConfigError(f"trainer.resume: not a complete checkpoint: {mode}")
        verdict = verify_checkpoint(path)
        if not verdict.ok:
            raise ConfigError(f"trainer.resume: checkpoint {mode} failed verification: {verdict.summary()}")
        if not verdict.verified:
            trainer.echo(f"WARNING: checkpoint {mode} has no manifest (saved before checksums were stored): "
                         "not verified")
    from agent_rl.orchestration.warm_start import reference_from_warm_start

    extras = trainer.group.call("load", path)
    extra = extras[0]
    trainer.step = int(extra["step"])
    load_kl_ctrl(trainer, extra, path)
    reference_from_warm_start(trainer)
    try:
        trainer.data.loader.load_state_dict(extra["loader"])
    except (KeyError, ValueError) as e:
        raise TrainError(f"cannot resume from {path}: data loader state does not fit ({e})") from None
    loader = trainer.data.loader
    trainer.echo(f"resumed from {path} (step {trainer.step}, epoch {loader.epoch}, position {loader.position})")


def load_kl_ctrl(trainer, extra: Dict[str, Any], path: str) -> None:
    """The controller's coefficient(s) from a checkpoint's trainer state; a checkpoint saved before KL control
    (or without a KL loss) keeps the configured starting value."""
    state = extra.get("kl_ctrl")
    if trainer.kl_ctrl is None or state is None:
        return
    if state.get("type") != trainer.kl_ctrl.kind:
        trainer.echo(f"WARNING: {path} was saved with algorithm.kl_ctrl.type={state.get('type')}, the config says "
                     f"{trainer.kl_ctrl.kind}: the KL coefficient starts from its configured value "
                     f"{trainer.kl_ctrl.value:g}")
        return
    try:
        trainer.kl_ctrl.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as e:
        raise TrainError(f"cannot resume from {path}: KL controller state does not fit algorithm.kl_ctrl ({e})") from None
