"""`TrainWorker`: one per GPU (or CPU rank). It holds the colocated actor (FSDP2), reference model,
rollout engine, tool runtime and rollout scheduler of its rank, and one long-lived event loop on
which every engine / tool call runs (SGLang binds to the loop of its first call).

The driver (`trainer.Trainer`) calls, step by step:

    rollout(rows, step, batch_size)   data-parallel rollout of this rank's prompt groups -> trajectories
    train(shard, step)                old log-probs, reference log-probs, actor update on this rank's shard
    sync_weights()                    actor -> engine (resume engine memory first with free_cache_engine;
                                      http: through an HF folder on disk)
    validate(rows, step)              greedy (val_sampling) rollout of validation rows
    sft_begin / sft_step / sft_end    supervised warm-start before RL (`sft.*`, own optimizer)
    save(root, step, extra) / load(path)

Ray turns the class into an actor (`WorkerGroup`); with `trainer.use_ray=false` the same object
lives in the driver process.
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from agent_rl.config.schema import TrainConfig

log = logging.getLogger(__name__)


class TrainWorker:
    def __init__(self, rank: int, world_size: int, cfg: TrainConfig, device: str):
        self.rank, self.world_size = rank, world_size
        self.cfg = cfg
        self.device_kind = device
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.engine = None
        self.actor = None
        self.ref = None
        self.engine_released = False
        self.policy_version = 0
        self._sft = None  # (optimizer, scheduler) during the supervised warm-start
        self._gc = None   # Python's collections in this process since the last step's report (perf/gc_*)

    # ------------------------------------------------------------------ setup
    def endpoint(self) -> Tuple[str, int]:
        from agent_rl.orchestration.group import master_endpoint

        return master_endpoint()

    def setup(self, master_addr: str, master_port: int) -> Dict[str, Any]:
        cfg = self.cfg
        os.environ.update(RANK=str(self.rank), WORLD_SIZE=str(self.world_size), MASTER_ADDR=str(master_addr),
                          MASTER_PORT=str(master_port), LOCAL_RANK="0")
        if self.device_kind == "cuda":
            torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES to this worker's GPU
        from agent_rl.training.dist import init_distributed

        if self.world_size > 1:
            init_distributed("nccl" if self.device_kind == "cuda" else "gloo")
        torch.manual_seed(cfg.trainer.seed + self.rank)
        device = torch.device("cuda", 0) if self.device_kind == "cuda" else torch.device("cpu")

        from agent_rl.engines import build_engine
        from agent_rl.orchestration.components import build_renderer, build_scheduler, build_tool_runtime, load_tokenizer
        from agent_rl.training.actor import Actor
        from agent_rl.training.ref import ReferenceModel

        t0 = time.perf_counter()
        self.tokenizer = load_tokenizer(cfg, cfg.model.path)
        self.actor = Actor.from_config(cfg, device=device)
        self.ref = ReferenceModel.from_config(cfg, device=device, actor=self.actor) if cfg.actor.use_kl_loss else None
        from agent_rl.rollout.event_loop import new_event_loop

        self.loop = new_event_loop(cfg.rollout.event_loop)
        self.tool_runtime = build_tool_runtime(cfg, self.tokenizer)
        self.renderer = build_renderer(cfg, self.tokenizer, self.tool_runtime)
        self.engine = build_engine(cfg.rollout, cfg.model.path, device=str(device), seed=cfg.trainer.seed * 1000 + self.rank,
                                   log_dir=os.path.join(cfg.trainer.output_dir, "sglang_server"))
        self.scheduler = build_scheduler(cfg, self.engine, self.renderer, self.tool_runtime, rank=self.rank)
        if self.engine.weights_from_disk:  # an external server may still hold another run's weights (http)
            self.sync_weights()
        from agent_rl.metrics.gc_watch import GcWatch

        self._gc = GcWatch().start(count_objects=False)
        from agent_rl.engines.replicas import replicas_of

        return {"rank": self.rank, "engine": getattr(self.engine, "name", type(self.engine).__name__),
                "kv_sessions": any(bool(getattr(r, "kv_sessions", False)) for r in replicas_of(self.engine)),
                "device": str(device), "setup_s": time.perf_counter() - t0}

    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    # ------------------------------------------------------------------ rollout
    def rows_needed(self, batch_size: int) -> int:
        return self.scheduler.rows_needed(batch_size)

    def _ensure_engine(self) -> None:
        if self.engine_released:
            self.sync_weights()

    def rollout(self, rows: Sequence[Dict[str, Any]], step: int, batch_size: int):
        """This rank's GRPO groups of the step: (trajectories, scheduler metrics, carried groups left)."""
        self._ensure_engine()
        if batch_size <= 0 and not rows:  # nothing needed from this rank (carried groups wait for a step that needs them)
            return [], {}, self.scheduler.num_carried_groups
        from agent_rl.engines.replicas import session_counts
        from agent_rl.orchestration.traj_metrics import session_metrics

        sessions = session_counts(self.engine)
        res = self._run(self.scheduler.run_step(list(rows), step, batch_size=batch_size,
                                                policy_version=self.policy_version))
        metrics = {**res.metrics, **session_metrics(sessions, session_counts(self.engine))}
        return res.trajectories, metrics, self.scheduler.num_carried_groups

    def validate(self, rows: Sequence[Dict[str, Any]], step: int):
        self._ensure_engine()
        if not rows:
            return [], {}
        res = self._run(self.scheduler.validate(list(rows), step, n=1))
        return res.trajectories, res.metrics

    # ------------------------------------------------------------------ training
    def _release_engine(self) -> None:
        """Hybrid engine: the engine hands its memory to the actor (`rollout.free_cache_engine`) until the next sync."""
        if self.cfg.rollout.free_cache_engine and not self.engine_released:
            self._run(self.engine.release_memory())
            self.engine_released = True

    def train(self, shard: Dict[str, Any], step: int, kl_coef: Optional[float] = None,
              kl_objectives: Optional[List[str]] = None) -> Dict[str, float]:
        """Old and reference log-probs, then the actor update, on this rank's shard. `kl_coef`: the step's KL loss
        coefficient (the driver's `algorithm.kl_ctrl`; None = actor.kl_loss_coef; the shard's per-sample `kl_coef`
        wins). `kl_objectives`: names of the shard's `kl_objectives` columns, measured as actor/kl/<name>."""
        self._release_engine()
        if self.device_kind == "cuda":
            torch.cuda.reset_peak_memory_stats()
        batch = {k: v for k, v in shard.items() if isinstance(v, torch.Tensor)}
        times: Dict[str, float] = {}
        t0 = time.perf_counter()
        batch["old_logprobs"], _ = self.actor.compute_log_probs(batch, with_entropy=False, positions="loss_mask")
        times["timing/old_logprob_s"] = time.perf_counter() - t0
        if self.ref is not None:
            t0 = time.perf_counter()
            batch["ref_logprobs"] = self.ref.compute_ref_log_probs(batch, positions="loss_mask")
            times["timing/ref_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = self.actor.update(batch, kl_coef=kl_coef, kl_objectives=kl_objectives)
        times["timing/update_s"] = time.perf_counter() - t0
        metrics.update(times)
        metrics.update(self.memory_metrics())
        return metrics

    def sync_weights(self, version: Optional[int] = None) -> Dict[str, float]:
        """Actor weights into this rank's engine (every rank gathers: FSDP full_tensor is a collective); an external
        SGLang server (`http`, `sglang-server` engines) loads them from `<trainer.output_dir>/weight_sync`, an HF folder
        on a filesystem it must see. `version`: the policy version the engine samples from now on (the number of updates applied)."""
        from agent_rl.training.weight_sync import sync_weights, sync_weights_from_disk

        t0 = time.perf_counter()
        if self.engine_released:
            if self.device_kind == "cuda":  # hand the actor's cached blocks back first, or the engine's KV cache may not fit
                import torch
                torch.cuda.empty_cache()
            self._run(self.engine.resume_memory())
            self.engine_released = False
        # on GPU the engine computes in the actor's compute dtype (bf16): send that, half the bytes of fp32
        dtype = self.actor.policy.compute_dtype if self.device_kind == "cuda" else None
        if self.engine.weights_from_disk:
            path = os.path.join(self.cfg.trainer.output_dir, "weight_sync")
            m = self._run(sync_weights_from_disk(self.actor, self.engine, path, self.tokenizer, dtype=dtype))
        else:
            m = self._run(sync_weights(self.actor, self.engine, self.cfg.rollout.weight_sync_bucket_mb, dtype=dtype))
        if version is not None:
            self.policy_version = int(version)
        m["timing/sync_s"] = time.perf_counter() - t0
        return m

    # ------------------------------------------------------------------ supervised warm-start
    def sft_begin(self) -> None:
        """A fresh AdamW for the warm-start (lr `sft.lr`, warm-up `sft.warmup_steps`); the RL optimizer is untouched."""
        import dataclasses

        from agent_rl.training.optim import build_optimizer, build_scheduler

        s = self.cfg.sft
        ocfg = dataclasses.replace(self.cfg.actor.optim, lr=s.lr, warmup_steps=s.warmup_steps, warmup_ratio=0.0,
                                   lr_schedule="constant")
        opt = build_optimizer(self.actor.model.parameters(), ocfg)
        self._sft = (opt, build_scheduler(opt, ocfg, s.steps))

    def sft_step(self, shard: Dict[str, Any]) -> Dict[str, float]:
        from agent_rl.training.sft import sft_step

        self._release_engine()
        batch = {k: v for k, v in shard.items() if isinstance(v, torch.Tensor)}
        opt, sched = self._sft
        return sft_step(self.actor.policy, opt, sched, batch, self.cfg.actor.ppo_max_token_len_per_gpu,
                        self.cfg.actor.optim.grad_clip)

    def sft_end(self, root: str, extra_state: Dict[str, Any]) -> str:
        """Save the warm-started model (`<root>/global_step_<sft.steps>`), drop the warm-start optimizer, make it
        the reference (`sft.update_ref`) and push it into the engine."""
        from agent_rl.training.checkpoint import save_checkpoint

        self._sft = None
        path = save_checkpoint(root, self.cfg.sft.steps, self.actor, self.tokenizer, extra_state=extra_state, max_to_keep=1)
        self.load_sft(path, actor=False)
        return path

    def load_sft(self, path: str, actor: bool = True) -> None:
        """The warm-started weights at `path` into the actor (`actor`), the reference (`sft.update_ref`) and the engine."""
        from agent_rl.training.checkpoint import load_model_from_checkpoint
        from agent_rl.training.hf_folder import load_model_weights

        hf = os.path.join(path, "hf")
        if actor:
            load_model_from_checkpoint(self.actor.model, path)  # a LoRA actor: its adapter
        if self.ref is not None and self.cfg.sft.update_ref:
            load_model_weights(self.ref.model, hf)
        self.sync_weights()

    # ------------------------------------------------------------------ checkpoints
    def save(self, root: str, step: int, extra_state: Dict[str, Any]) -> str:
        from agent_rl.training.checkpoint import save_checkpoint

        return save_checkpoint(root, step, self.actor, self.tokenizer, extra_state=extra_state,
                               max_to_keep=self.cfg.trainer.max_ckpt_to_keep)

    def load(self, path: str) -> Dict[str, Any]:
        """Model, optimizer, lr schedule and RNG of this rank; the engine gets the weights at once."""
        from agent_rl.training.checkpoint import load_checkpoint

        extra = load_checkpoint(path, self.actor)
        self.sync_weights(version=int(extra.get("step", 0)))
        return extra

    # ------------------------------------------------------------------ introspection
    def memory_metrics(self) -> Dict[str, float]:
        """Peak host and GPU memory; and the seconds this process spent in Python's garbage collections since the last
        report (one a training step: rollout, update and weight sync), and how many of them were full ones."""
        out = {"perf/cpu_max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
        if self._gc is not None:
            collected = self._gc.take()
            out["perf/gc_s"] = collected["total_s"]
            out["perf/gc_full_collections"] = float(collected["collections"][2])
        if self.device_kind == "cuda" and torch.cuda.is_available():
            out["perf/max_memory_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
            out["perf/max_memory_reserved_gb"] = torch.cuda.max_memory_reserved() / 2 ** 30
        return out

    def param_digest(self) -> List[float]:
        """Sum and sum of squares of every full parameter, in order (a collective; for resume checks)."""
        from agent_rl.training.weight_sync import iter_full_params

        out = []
        for _, t in iter_full_params(self.actor):
            t = t.double()
            out += [float(t.sum()), float((t * t).sum())]
        return out

    def shutdown(self) -> None:
        if self._gc is not None:
            self._gc.stop()
            self._gc = None
        try:
            if self.loop is not None and getattr(self, "scheduler", None) is not None:
                self._run(self.scheduler.close())  # tool instances of trajectories still carried over
            if self.engine is not None and self.loop is not None:
                self._run(self.engine.shutdown())
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log.warning("engine shutdown failed: %s", e)
        self.engine = None
        if self.world_size > 1:
            from agent_rl.training.dist import close_distributed

            close_distributed()
