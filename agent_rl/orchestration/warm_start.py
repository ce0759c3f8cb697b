"""Supervised warm-start before RL (`sft.*`, docs/training.md), driven from the trainer.

`warm_start(trainer)` runs once, before the first RL step:
  1. a complete `<output_dir>/sft/global_step_<sft.steps>` from an earlier attempt is loaded instead of training again;
  2. else the demonstrations (`sft.files`) are encoded in the rollout token stream (`training.sft.encode_demo`),
     and `sft.steps` optimizer steps of `sft.batch_size` demonstrations run on the workers (token-balanced shards);
     per-step metrics go to `<output_dir>/sft_metrics.jsonl`, a line every 10 steps to the console;
  3. the workers save the model there (HF-loadable), make it the KL reference (`sft.update_ref`) and push it into
     their engines;
  4. one validation (`sft.validate`), logged at step 0 as `sft/val/*` next to the pre-training `val/*`.
On resume after RL steps, `reference_from_warm_start` loads that checkpoint into the reference again.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List

from agent_rl.config.load import ConfigError
from agent_rl.orchestration.sharding import shard_batch


def sft_root(cfg) -> str:
    return os.path.join(cfg.trainer.output_dir, "sft")


def finished_warm_start(cfg):
    """Path of the complete warm-start checkpoint of this config, or None."""
    from agent_rl.training.checkpoint import is_complete, step_dir_name

    path = os.path.join(sft_root(cfg), step_dir_name(cfg.sft.steps))
    return path if is_complete(path) else None


def load_demo_chats(files: List[str]) -> List[List[Dict[str, Any]]]:
    from agent_rl.data.parquet_io import read_table

    chats = []
    for f in files:
        try:
            table = read_table(f)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"sft.files: {e}") from None
        if "messages" not in table.column_names:
            raise ConfigError(f"sft.files: {f} has no `messages` column (columns: {', '.join(table.column_names)})")
        chats += table.column("messages").to_pylist()
    return chats


def warm_start(trainer) -> Dict[str, float]:
    from agent_rl.training.sft import DemoError, DemoSet

    cfg, echo = trainer.cfg, trainer.echo
    done = finished_warm_start(cfg)
    t0 = time.perf_counter()
    out: Dict[str, float] = {}
    if done:
        echo(f"warm-start: loading {done} (finished earlier)")
        trainer.group.call("load_sft", done)
    else:
        runtime = trainer.tool_runtime
        truncate = runtime.truncate if runtime is not None else None
        try:
            demos, dropped = DemoSet.from_messages(load_demo_chats(cfg.sft.files), trainer.renderer, cfg.sft.max_length,
                                                   truncate, seed=cfg.trainer.seed)
        except DemoError as e:
            raise ConfigError(f"sft.files: {e}") from None
        echo(f"warm-start: {cfg.sft.steps} steps x {cfg.sft.batch_size} of {len(demos)} demonstrations "
             f"({dropped} longer than sft.max_length={cfg.sft.max_length} dropped)")
        trainer.group.call("sft_begin")
        path = os.path.join(cfg.trainer.output_dir, "sft_metrics.jsonl")
        first = last = None
        with open(path, "w", encoding="utf-8") as log:
            for i in range(1, cfg.sft.steps + 1):
                batch = demos.next_batch(cfg.sft.batch_size, trainer.pad_id)
                results = trainer.group.call_each("sft_step", [(s,) for s in shard_batch(batch, trainer.world_size)])
                m = dict(results[0])
                m["sft/epoch"] = float(demos.epochs)
                log.write(json.dumps({"sft_step": i, **m}) + "\n")
                first = m["sft/loss"] if first is None else first
                last = m["sft/loss"]
                if i % 10 == 0 or i == cfg.sft.steps:
                    log.flush()
                    echo(f"warm-start step {i}/{cfg.sft.steps}: loss {m['sft/loss']:.4f} grad-norm {m['sft/grad_norm']:.3f}")
        extra = {"sft_steps": cfg.sft.steps, "demonstrations": len(demos), "loss_first": first, "loss_last": last}
        trainer.group.call("sft_end", sft_root(cfg), extra)
        out.update({"sft/loss_first": first, "sft/loss_last": last, "sft/demonstrations": float(len(demos)),
                    "sft/dropped_long": float(dropped)})
    out["timing/sft_s"] = time.perf_counter() - t0
    if cfg.sft.validate and trainer.data.val_rows:
        t1 = time.perf_counter()
        out.update({f"sft/{k}": v for k, v in trainer.validate().items()})
        out["timing/sft_val_s"] = time.perf_counter() - t1
    return out


def reference_from_warm_start(trainer) -> None:
    """After resuming RL: the reference is the warm-started model again (`sft.update_ref`)."""
    cfg = trainer.cfg
    if cfg.sft.steps <= 0 or not cfg.sft.update_ref or not cfg.actor.use_kl_loss:
        return
    done = finished_warm_start(cfg)
    if done is None:
        trainer.echo(f"warning: no finished warm-start under {sft_root(cfg)}: the KL reference is the base model")
        return
    trainer.group.call("load_sft", done, False)
