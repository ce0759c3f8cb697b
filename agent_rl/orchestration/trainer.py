"""The driver: single controller of the GRPO loop (docs/training.md).

One step:
    rows      the PromptLoader gives each worker the rows its scheduler asks for (its share of
              `data.train_batch_size` groups, plus the over-sampling extra, minus carried-over groups)
    rollout   every worker rolls out its groups on its own engine (data-parallel); the reward is
              computed in the worker as each trajectory finishes (rows and rounds: `rollout_rounds.py`)
    batch     the driver gathers the trajectories, builds the training batch and the GRPO advantages
              over whole groups (`algorithm.adv_estimator`), and deals it out in token-balanced shards
    train     each worker: old log-probs, reference log-probs, actor update (FSDP collectives)
    sync      each worker pushes the new weights into its engine
    then      validation every `test_freq`; the step's metrics record (durable); then its checkpoint every
              `save_freq` and at the end

Before the first step: validation (`val_before_train`), then the supervised warm-start when `sft.steps > 0`
(`warm_start.py`).

Prompt hints (`data.prompt_augmentation`, agent_rl/data/hints.py): each row gets its hint decision as it is drawn
(keyed on data.prompt_augmentation.seed, completed steps and the row's position in the data), before the length
filter and before it goes to a worker, so every trajectory of its group shares it; validation rows only with
`apply_to_val`.

Stops after `trainer.total_training_steps` steps or `trainer.total_epochs` passes over the data,
whichever comes first; resumes from the latest complete checkpoint with `trainer.resume=auto` (`resume.py`).

`train(cfg)` (what `agent-rl train` runs) ends with a summary (`run_summary`): the last complete checkpoint, its
`hf/` folder (loadable with transformers) and the best validation reward with its step. SIGINT / SIGTERM
(`StopSignals`) stop the run at once: the first one raises KeyboardInterrupt in the main thread (which also breaks
out of a Ray wait), `Trainer.close(interrupted=True)` (`teardown.py`) tears everything down without waiting for the
step in flight (busy Ray workers are killed, the in-process worker's pending tasks cancelled, the engine, tool sessions
and KG server closed), the summary says what was saved, and `train` raises `TrainInterrupted`; a second signal
exits at once.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from agent_rl.config.load import ConfigError, to_yaml
from agent_rl.config.schema import TrainConfig
from agent_rl.metrics.timer import PhaseTimer
from agent_rl.orchestration.resume import load_kl_ctrl, resume, save_checkpoint
from agent_rl.orchestration.rollout_rounds import rollout_step, take_rows
from agent_rl.orchestration.run_summary import run_summary
from agent_rl.orchestration.sharding import shard_batch, split_evenly
from agent_rl.orchestration.stop import StopSignals, TrainError, TrainInterrupted
from agent_rl.orchestration.teardown import close_run
from agent_rl.orchestration.traj_metrics import hint_metrics, reward_metrics, rollout_metrics, validation_metrics
from agent_rl.tasks.registry import TASKS, config_value, set_config_value


def _abs(path: Optional[str]) -> Optional[str]:
    return os.path.abspath(path) if path else path


class Trainer:
    _save_s: Optional[float] = None  # duration of the last checkpoint save, logged with the next step
    kl_ctrl = None  # the KL loss coefficient controller (algorithm.kl_ctrl); None without a KL loss
    objectives: tuple = ()  # reward.objectives (tasks.objectives.Objective), in config order
    data = None     # the run's prompts (train_data.TrainData)

    def __init__(self, cfg: TrainConfig, echo: Callable[[str], None] = print, signals: Optional[StopSignals] = None):
        from agent_rl.orchestration.prepare import (prepare_data, prepare_demos, prepare_model, resolve_device,
                                                    start_services, worker_env)

        self.echo = echo
        self.signals = signals
        self.group = None
        self.tracker = None
        self.services = []     # what the tasks' tools need running (the KG server): stopped at close
        self.step = 0
        cfg = copy.deepcopy(cfg)
        self.device = resolve_device(cfg)
        self.world_size = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
        if not cfg.trainer.use_ray and self.world_size != 1:
            raise ConfigError(f"trainer.use_ray: false runs one process, but trainer.n_gpus_per_node x trainer.nnodes "
                              f"= {self.world_size} (set both to 1)")
        prepare_data(cfg, log=echo)
        cfg.sft.files = [_abs(f) for f in cfg.sft.files]
        prepare_demos(cfg, log=echo)
        cfg.model.path = prepare_model(cfg, log=echo)
        # workers may start elsewhere (Ray): every path absolute
        cfg.data.train_files = [_abs(f) for f in cfg.data.train_files]
        cfg.data.val_files = [_abs(f) for f in cfg.data.val_files]
        cfg.tools.config_path = _abs(cfg.tools.config_path)
        for key in {key for task in TASKS.values() for key, _ in task.data_files}:   # the tasks' files the config names
            if isinstance(config_value(cfg, key), str):
                set_config_value(cfg, key, _abs(config_value(cfg, key)))
        cfg.model.tokenizer_path = _abs(cfg.model.tokenizer_path)
        cfg.trainer.output_dir = _abs(cfg.trainer.output_dir)
        cfg.rollout.trajectory_dir = _abs(cfg.rollout.trajectory_dir) or os.path.join(cfg.trainer.output_dir, "rollouts")
        self.cfg = cfg
        self.objectives = self._load_objectives(cfg)
        os.makedirs(cfg.trainer.output_dir, exist_ok=True)
        with open(os.path.join(cfg.trainer.output_dir, "config.yaml"), "w", encoding="utf-8") as f:
            f.write(to_yaml(cfg))
        try:
            self.services = start_services(cfg, log=echo)
            self._load_data()
            from agent_rl.metrics import Tracker
            from agent_rl.orchestration.group import WorkerGroup
            from agent_rl.orchestration.worker import TrainWorker

            self.group = WorkerGroup(TrainWorker, self.world_size, args=(cfg, self.device), use_ray=cfg.trainer.use_ray,
                                     device=self.device, ray_address=cfg.trainer.ray_address, env=worker_env())
            if signals is not None:
                signals.install()  # ray.init replaced the SIGTERM handler
            addr, port = self.group.call_rank0("endpoint")
            infos = self.group.call("setup", addr, port)
            sessions = " with KV sessions (rollout.kv_sessions)" if infos[0].get("kv_sessions") else ""
            echo(f"{self.world_size} worker(s) on {self.device}: engine {infos[0]['engine']}{sessions}, "
                 f"setup {max(i['setup_s'] for i in infos):.1f} s")
            self.step = 0
            if cfg.actor.use_kl_loss:
                from agent_rl.algorithms.kl_ctrl import build_kl_controller

                self.kl_ctrl = build_kl_controller(cfg.algorithm.kl_ctrl, cfg.actor.kl_loss_coef,
                                                   [o.name for o in self.objectives])
            resume(self)
            self.tracker = Tracker(cfg.logger.backends, cfg.trainer.project_name, cfg.trainer.experiment_name,
                                   cfg.trainer.output_dir, self._config_dict(), cfg.logger.wandb_mode, plot=cfg.logger.plot)
        except BaseException as e:
            self.close(interrupted=isinstance(e, KeyboardInterrupt))
            raise

    # ------------------------------------------------------------------ setup
    def _config_dict(self) -> Dict[str, Any]:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.structured(self.cfg), resolve=True)

    @staticmethod
    def _load_objectives(cfg: TrainConfig) -> tuple:
        from agent_rl.tasks.objectives import objectives_of

        try:
            return tuple(objectives_of(cfg.reward))
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _load_data(self) -> None:
        from agent_rl.orchestration.components import build_renderer, build_tool_runtime, load_tokenizer
        from agent_rl.orchestration.train_data import TrainData

        cfg = self.cfg
        self.tokenizer = load_tokenizer(cfg, cfg.model.path)
        self.pad_id = self.tokenizer.pad_token_id
        self.tool_runtime = build_tool_runtime(cfg, self.tokenizer)
        self.renderer = build_renderer(cfg, self.tokenizer, self.tool_runtime)
        self.data = TrainData.load(cfg, self.renderer, self.echo)

    # ------------------------------------------------------------------ loop
    def done(self) -> bool:
        total = self.cfg.trainer.total_training_steps
        if total is not None and self.step >= total:
            return True
        return self.data.loader.epoch >= self.cfg.trainer.total_epochs

    def fit(self) -> Dict[str, float]:
        cfg = self.cfg
        last: Dict[str, float] = {}
        m: Dict[str, float] = {}  # step 0: one record (a later record of a step replaces an earlier one)
        if cfg.trainer.val_before_train and self.step == 0 and self.data.val_rows:
            t0 = time.perf_counter()
            m = self.validate()
            m["timing/val_s"] = time.perf_counter() - t0
        if cfg.sft.steps > 0 and self.step == 0:
            from agent_rl.orchestration.warm_start import warm_start

            m.update(warm_start(self))
        if m:
            self.tracker.log(m, step=0)
        while not self.done():
            last = self.train_step()
        return last

    def _take_rows(self, n: int, step: int) -> List[Dict[str, Any]]:
        return take_rows(self, n, step)

    def _rollout(self, step: int):
        """The step's kept groups from every worker and the rollout metrics (`rollout_rounds.py`)."""
        return rollout_step(self, step)

    def train_step(self) -> Dict[str, float]:
        from agent_rl.rollout.output import step_path, write_trajectories

        cfg = self.cfg
        step = self.step + 1
        timer = PhaseTimer()
        t_step = time.perf_counter()
        with timer("rollout"):
            trajs, metrics = self._rollout(step)
        if not trajs and not cfg.algorithm.filter_groups.enable:
            raise TrainError(f"step {step}: no complete GRPO group came back from the rollout")
        if trajs:
            write_trajectories(step_path(cfg.rollout.trajectory_dir, step), trajs, tokenizer=self.tokenizer, step=step)
            metrics.update(reward_metrics(trajs))
            metrics.update(rollout_metrics(trajs))
            if self.data.hints is not None:
                metrics.update(hint_metrics(trajs))
            tokens = self._update(trajs, step, timer, metrics)
        else:  # dynamic sampling found no group with signal: nothing to learn from, the weights stay as they are
            metrics["actor/skipped_update"] = 1.0
            tokens = 0.0
        if self.data.hints is not None:
            metrics["hints/prob"] = self.data.hints.prob(step - 1)
        self.step = step
        metrics["data/epoch"] = self.data.epoch_progress
        if cfg.trainer.test_freq > 0 and self.data.val_rows and (step % cfg.trainer.test_freq == 0 or self.done()):
            with timer("val"):
                metrics.update(self.validate())
        metrics.update(timer.pop())
        if self._save_s is not None:  # the checkpoint written after the previous step's record
            metrics["timing/save_s"], self._save_s = self._save_s, None
        step_s = time.perf_counter() - t_step
        metrics["timing/step_s"] = step_s
        metrics["perf/tokens_per_s"] = tokens / max(step_s, 1e-9)
        metrics["perf/tokens_per_s_per_gpu"] = metrics["perf/tokens_per_s"] / self.world_size
        metrics["perf/total_tokens"] = tokens
        # The step's metrics record is on disk (Tracker.log: JSONL flushed + fsync'ed) *before* its checkpoint is
        # written: a checkpoint counts as resumable as soon as the worker renames its directory into place
        # (find_latest_checkpoint takes the newest complete directory even when the `latest` pointer was not
        # updated), so holding back only the pointer would not close the window, and a check at resume would need
        # an older checkpoint to re-run the step from (it may be pruned). Logging first means a run killed during
        # the save resumes from the previous checkpoint and logs this step again (the later record wins). The cost:
        # this save's duration cannot be in this record; it is logged as `timing/save_s` of the next step.
        self.tracker.log(metrics, step=step)
        if cfg.trainer.save_freq > 0 and (step % cfg.trainer.save_freq == 0 or self.done()):
            t_save = time.perf_counter()
            self.save()
            self._save_s = time.perf_counter() - t_save
        return metrics

    def _update(self, trajs, step: int, timer: PhaseTimer, metrics: Dict[str, float]) -> float:
        """Advantages over whole groups, token-balanced shards, the actor update on every worker, weight sync.
        Adds the update's metrics to `metrics`; returns the batch's tokens."""
        from agent_rl.algorithms.advantage import compute_advantages
        from agent_rl.orchestration.objectives import add_objective_inputs, drop_driver_only
        from agent_rl.rollout.batch import build_batch

        cfg = self.cfg
        with timer("adv"):
            batch = build_batch(trajs, self.pad_id)
            kl_names = add_objective_inputs(batch, trajs, self.objectives,
                                            bool(self.objectives) and cfg.algorithm.norm_per_objective, self.kl_ctrl)
            batch["advantages"] = compute_advantages(batch, cfg.algorithm.adv_estimator, cfg.algorithm.norm_adv_by_std,
                                                     cfg.algorithm.adv_epsilon, cfg.algorithm.turn_adv_coef)
            drop_driver_only(batch)
            shards = shard_batch(batch, self.world_size)
        mask = batch["loss_mask"].bool()
        if mask.any():
            adv = batch["advantages"][mask]
            metrics["actor/adv_mean"] = float(adv.mean())
            metrics["actor/adv_abs_mean"] = float(adv.abs().mean())
        kl_coef = self.kl_ctrl.value if self.kl_ctrl is not None else None
        extra = (kl_names,) if kl_names else ()    # the names of the shards' kl_objectives columns
        with timer("train"):
            results = self.group.call_each("train", [(s, step, kl_coef) + extra for s in shards])
        with timer("sync"):
            sync = self.group.call("sync_weights", step)
        metrics.update(self._merge_train(results))
        row_coefs = batch.get("kl_coef")
        self._step_kl_ctrl(metrics, n_samples=int(batch["attention_mask"].shape[0]),
                           mean_coef=float(row_coefs.mean()) if row_coefs is not None else None)
        metrics.update({k: v for k, v in sync[0].items() if k.startswith("weight_sync/")})
        return float(batch["attention_mask"].sum())

    @staticmethod
    def _merge_train(results: Sequence[Dict[str, float]]) -> Dict[str, float]:
        """Actor / mismatch metrics are all-reduced inside the actor (rank 0's are global); times and
        memory take the max over ranks."""
        out = dict(results[0])
        for r in results[1:]:
            for k, v in r.items():
                if k.startswith(("timing/", "perf/")):
                    out[k] = max(out.get(k, v), v)
        return out

    def validate(self) -> Dict[str, float]:
        from agent_rl.data.loader import batched

        trajs = []
        worker_metrics = []
        rows = self.data.val_batch(self.step)
        for chunk in batched(rows, max(1, self.cfg.data.val_batch_size)):
            parts = split_evenly(chunk, self.world_size)
            results = self.group.call_each("validate", [(p, self.step) for p in parts])
            trajs += [t for res in results for t in res[0]]
            worker_metrics += [res[1] for res in results]
        if not trajs:
            return {}
        out = validation_metrics(trajs)
        if self.data.hints is not None and self.data.hints.apply_to_val:
            out.update(hint_metrics(trajs, prefix="val/"))
        if len({(t.row or {}).get("data_source") for t in trajs}) > 1:
            out["val/all/reward"] = sum(t.reward for t in trajs) / len(trajs)
        return out

    def save(self) -> str:
        return save_checkpoint(self)

    def _step_kl_ctrl(self, metrics: Dict[str, float], n_samples: int, mean_coef: Optional[float] = None) -> None:
        """Log the KL coefficient this step trained with (`actor/kl_coef`, per objective `actor/kl_coef/<name>`),
        then move the controller with the step's measured KL for the next step: `actor/kl_loss`, or with one
        coefficient per reward objective each objective's `actor/kl/<name>` (an objective with no trained token this
        step keeps its coefficient). `mean_coef`: the mean per-trajectory coefficient (per-objective control), logged
        as actor/kl_coef."""
        if self.kl_ctrl is None:
            return
        from agent_rl.algorithms.kl_ctrl import kl_coef_metrics

        metrics.update(kl_coef_metrics(self.kl_ctrl))
        if mean_coef is not None:
            metrics["actor/kl_coef"] = mean_coef
        names = [o.name for o in self.objectives]
        if names and set(getattr(self.kl_ctrl, "coefs", ())) == set(names):
            self.kl_ctrl.update({n: metrics[f"actor/kl/{n}"] for n in names if f"actor/kl/{n}" in metrics})
            return
        kl = metrics.get("actor/kl_loss")
        if kl is not None:
            self.kl_ctrl.update(kl, n_samples)

    def _load_kl_ctrl(self, extra: Dict[str, Any], path: str) -> None:
        load_kl_ctrl(self, extra, path)

    def param_digest(self) -> List[float]:
        return self.group.call("param_digest")[0]

    # ------------------------------------------------------------------ teardown
    def close(self, interrupted: bool = False) -> None:
        """Tear down the tracker, the workers and the tasks' services (`teardown.py`); `interrupted`: a signal
        stopped the run (or a KeyboardInterrupt), busy workers are not waited for."""
        close_run(self, interrupted)


def train(cfg: TrainConfig, overrides: Sequence[str] = (), echo: Callable[[str], None] = print,
          handle_signals: bool = True) -> Dict[str, float]:
    """Run training to the end; returns the last step's metrics. Prints the end-of-run summary (`run_summary`).
    With `handle_signals` (the main thread only), SIGINT / SIGTERM stop the run cleanly: everything is closed, the
    summary says what was saved, and `TrainInterrupted` is raised."""
    signals = StopSignals() if handle_signals else None
    if signals is not None:
        signals.install()
    t0 = time.perf_counter()
    trainer = None
    output_dir = os.path.abspath(cfg.trainer.output_dir)
    try:
        try:
            trainer = Trainer(cfg, echo=echo, signals=signals)
            output_dir = trainer.cfg.trainer.output_dir
            try:
                last = trainer.fit()
            finally:
                trainer.close()
        except BaseException:
            if signals is None or signals.signum is None:
                raise
            step = trainer.step if trainer is not None else None
            lines = run_summary(output_dir, step=step, elapsed_s=time.perf_counter() - t0,
                                interrupted=signals.name, save_freq=cfg.trainer.save_freq)
            for line in lines:
                echo(line)
            saved = next((x.strip() for x in lines
                          if x.strip().startswith(("last checkpoint", "nothing was saved", "saved: only"))), "")
            raise TrainInterrupted(signals.signum, f"{lines[0]}; {saved}") from None
    finally:
        if signals is not None:
            signals.restore()
    for line in run_summary(output_dir, step=trainer.step, elapsed_s=time.perf_counter() - t0,
                            save_freq=cfg.trainer.save_freq):
        echo(line)
    return last
