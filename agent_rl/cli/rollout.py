"""`agent-rl rollout [options] [hydra overrides]`: one rollout step from the trainer config.

Builds the engine, tools (autostarting the KG server when the tool YAML has kg_query), renderer
and data exactly as training does, runs `RolloutScheduler.run_step` (or `validate` with --val),
prints the metrics and a few trajectories, and writes the step's trajectories as JSONL (view it
with `agent-rl view FILE`). The quickest way to try a new tool YAML:

    agent-rl rollout tools.config_path=my_tools.yaml data.train_files=[my.parquet] rollout.n=2

Config, data, model and tool problems are one line naming the key or file, exit status 2 (as `agent-rl train`).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys

HELP = "Run one rollout step from config; print metrics and trajectories, write them as JSONL"


def add_arguments(parser):
    parser.add_argument("--prompts", type=int, default=None, metavar="N",
                        help="prompt groups to keep (default: data.train_batch_size); launched: ceil(B*(1+over_sample_rate))")
    parser.add_argument("--no-cpu-sizes", dest="cpu_sized", action="store_false",
                        help="on CPU, keep the config's batch, samples and tokens per turn (default: "
                             + ", ".join(f"{k}={v}" for k, v in CPU_SIZES) + " unless set)")
    parser.add_argument("--val", action="store_true", help="validation mode: val files, val sampling, n=1, no over-sampling")
    parser.add_argument("--show", type=int, default=2, metavar="N", help="trajectories to print (default 2)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="JSONL to write (default: <rollout.trajectory_dir or trainer.output_dir/rollouts>/rollout_step_0.jsonl)")
    parser.add_argument("--config-dir", default=None, metavar="DIR", help="folder with the Hydra config (default: the repository's configs/)")
    parser.add_argument("--config-name", default="trainer", metavar="NAME", help="config file name without .yaml (default: trainer)")
    parser.add_argument("--print-config", action="store_true", help="print the composed config as YAML and exit")
    parser.usage = ("agent-rl rollout [--prompts N] [--val] [--show N] [--out FILE] [--config-dir DIR] [--config-name NAME] "
                    "[--print-config] [key=value ...]")
    parser.epilog = ("Overrides are Hydra key=value pairs of the trainer config, e.g. `agent-rl rollout "
                     "tools.config_path=my_tools.yaml data.train_files=[my.parquet] rollout.n=2`; every key is in "
                     "docs/config.md.")
    parser.set_defaults(_accepts_extra=True)


def _print_traj(traj, tokenizer) -> None:
    print(f"--- {traj.id}  status={traj.status} stop={traj.stop_reason} reward={traj.reward:.4g} "
          f"components={json.dumps(traj.reward_components)}")
    for m in traj.row.get("prompt", []):
        print(f"[{m.get('role')}] {m.get('content')}")
    for t in traj.turns:
        print(f"[assistant turn {t.index}, {len(t.output_ids)} tokens, {t.finish_reason}] {t.text}")
        for c in t.tool_calls:
            print(f"  -> {c.name}({json.dumps(c.arguments, ensure_ascii=False) if not isinstance(c.arguments, str) else c.arguments})"
                  f" [{c.status}, {c.latency_s:.3f} s]: {c.observation[:300]}")


async def _rollout(cfg, args, model_path, device, log) -> int:
    from agent_rl.data.loader import load_rows
    from agent_rl.engines import build_engine
    from agent_rl.orchestration.components import build_renderer, build_scheduler, build_tool_runtime, load_tokenizer
    from agent_rl.rollout.output import write_trajectories
    from agent_rl.tasks import check_row_reward
    from agent_rl.tasks.rows import rules_for

    tokenizer = load_tokenizer(cfg, model_path)           # ConfigError naming model.path when it has none
    runtime = build_tool_runtime(cfg, tokenizer)           # ConfigError naming tools.config_path and the entry
    renderer = build_renderer(cfg, tokenizer, runtime)
    files = cfg.data.val_files if args.val else cfg.data.train_files
    try:
        rows = load_rows(files, skip_invalid=cfg.data.skip_invalid_rows, log=log,   # an unscorable row: at load
                         rules=rules_for, check=lambda row: check_row_reward(row, cfg.reward))
    except (ValueError, OSError) as e:
        from agent_rl.config.load import ConfigError

        raise ConfigError(f"data.{'val_files' if args.val else 'train_files'}: {e}") from None
    engine = build_engine(cfg.rollout, model_path, device=device, seed=cfg.trainer.seed)
    sched = build_scheduler(cfg, engine, renderer, runtime, filter_groups=False)   # one step, every group shown
    try:
        if args.val:
            k = args.prompts or (cfg.data.max_val_samples if cfg.data.max_val_samples > 0 else len(rows))
            res = await sched.validate(rows[:k], step=0)
        else:
            B = args.prompts or cfg.data.train_batch_size
            res = await sched.run_step(rows[:sched.rows_needed(B)], step=0, batch_size=B)
    finally:
        await sched.close()
        await engine.shutdown()
        if runtime is not None:
            await runtime.close()
    out = args.out or os.path.join(cfg.rollout.trajectory_dir or os.path.join(cfg.trainer.output_dir, "rollouts"),
                                   "rollout_val_0.jsonl" if args.val else "rollout_step_0.jsonl")
    write_trajectories(out, res.trajectories, tokenizer=tokenizer, step=0)
    for traj in res.trajectories[: max(0, args.show)]:
        _print_traj(traj, tokenizer)
    print("--- metrics")
    for k in sorted(res.metrics):
        v = res.metrics[k]
        print(f"{k:48s} {v:.6g}" if isinstance(v, float) else f"{k:48s} {v}")
    print(f"wrote {len(res.trajectories)} trajectories to {out} (view: agent-rl view {out})")
    return 0


# on CPU, what the trainer's defaults would make an 8-minute step (8 prompts x 4 samples x 256 tokens a turn with
# the 135M model at ~2 tokens/s per row) becomes about a minute; a value the user set is kept
CPU_SIZES = (("data.train_batch_size", 2), ("rollout.n", 2), ("rollout.multi_turn.max_new_tokens_per_turn", 64))


def cpu_sized(cfg, overrides, args) -> str:
    """Set the CPU sizes of `CPU_SIZES` the user did not set (override keys, `--prompts`); the line saying so."""
    from agent_rl.config.load import override_keys
    from agent_rl.tasks.registry import config_value, set_config_value

    given = override_keys(overrides)
    changed = []
    for key, value in CPU_SIZES:
        if key in given or (key == "data.train_batch_size" and args.prompts):
            continue
        if config_value(cfg, key) > value:
            set_config_value(cfg, key, value)
            changed.append(f"{key}={value}")
    if not changed:
        return ""
    return (f"on CPU: {' '.join(changed)} (a step in about a minute; set them, or --prompts, to change; "
            "--no-cpu-sizes keeps the config's)")


def run(args) -> int:
    from agent_rl.config.load import ConfigError, check_files, compose, parse_overrides, to_yaml
    from agent_rl.orchestration.prepare import prepare_data, prepare_model, resolve_device, start_services

    services = []
    try:
        overrides = parse_overrides(list(getattr(args, "_extra", []) or []))
        cfg = compose(overrides, config_dir=args.config_dir, config_name=getattr(args, "config_name", "trainer"),
                      check_paths=False)
        if getattr(args, "print_config", False):
            print(to_yaml(cfg), end="")
            return 0
        # only the files this step reads: the val files with --val, else the train files (no sft)
        data_keys = ("val_files",) if args.val else ("train_files",)
        check_files(cfg, data_keys=data_keys, sft=False)     # nothing written or started before this passes
        device = resolve_device(cfg)
        if device == "cpu" and getattr(args, "cpu_sized", True):
            note = cpu_sized(cfg, overrides, args)
            if note:
                print(note)
        model_path = prepare_model(cfg)
        prepare_data(cfg, keys=data_keys)
        services = start_services(cfg)
    except ConfigError as e:
        print(f"agent-rl rollout: config error: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_rollout(cfg, args, model_path, device, print))
    except ConfigError as e:   # a tokenizer, tool or data file problem found while building: one line naming it
        print(f"agent-rl rollout: config error: {e}", file=sys.stderr)
        return 2
    finally:
        for service in services:
            service.stop()
