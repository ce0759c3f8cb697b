"""`agent-rl eval --model DIR --data FILE.parquet --out DIR [options] [hydra overrides]`: evaluate a model with its tools.

Greedy by default (one sample per question at temperature 0); `--n K --temperature T` samples K per question and
reports pass@k (unbiased estimator, Chen et al. 2021) and mean@K. Scores per data source and per hop count come
from the project's reward functions (KG: F1 / EM / Hits@1; arithmetic: accuracy), plus answer rate, truncation
rate, turns per trajectory and tool-call success per tool (`orchestration/evaluate.py`, docs/eval.md).

Writes into --out: eval.json (every number, the questions' per-sample correctness, the command, the model, the
config and the environment), eval.md (the tables) and trajectories.jsonl (`agent-rl view` reads it).

The stack is `agent-rl rollout --val`'s: the same config (Hydra overrides after the options), engine, tools, KG
server autostart and one-line errors with exit status 2.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import sys
import time

HELP = "Evaluate a model on a parquet with its tools: greedy or pass@k, per data source and hop"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(parser):
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="HF model folder, a checkpoint (global_step_N or its hf/ folder) or `embedded` "
                             "(default: model.path of the config)")
    parser.add_argument("--data", action="append", default=None, metavar="FILE",
                        help="parquet to evaluate (repeatable; default: data.val_files of the config)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for eval.json, eval.md, trajectories.jsonl")
    parser.add_argument("--n", type=int, default=1, metavar="K", help="samples per question (default 1: greedy)")
    parser.add_argument("--temperature", type=float, default=None, metavar="T",
                        help="sampling temperature (default: 0 = greedy with --n 1, else 1.0)")
    parser.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling (default: rollout.val_sampling.top_p)")
    parser.add_argument("--k", default=None, metavar="LIST",
                        help="pass@k values, comma-separated, each <= --n (default: 1, 2, 4, ... and n)")
    parser.add_argument("--correct-metric", default=None, metavar="NAME",
                        help="reward component that marks a sample correct (default: `correct` for arithmetic, "
                             "`hits1` for KG)")
    parser.add_argument("--engine", choices=("auto", "hf", "sglang"), default=None,
                        help="generation engine (default: rollout.engine; sglang needs CUDA)")
    parser.add_argument("--max-samples", type=int, default=None, metavar="N", help="evaluate the first N questions only")
    parser.add_argument("--tools", default=None, metavar="YAML",
                        help="tool YAML (default: tools.config_path, or the default YAML of the data's task when the "
                             "configured tools are for another task)")
    parser.add_argument("--kg-store", default=None, metavar="FILE",
                        help="KG store for the KG server (default: kg_store.json next to the data, else tools.kg_store)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--config-dir", default=None, metavar="DIR", help="folder with the Hydra config (default: the repository's configs/)")
    parser.add_argument("--config-name", default="trainer", metavar="NAME", help="config file name without .yaml (default: trainer)")
    parser.usage = ("agent-rl eval [--model DIR] [--data FILE ...] --out DIR [--n K] [--temperature T] [--k LIST] "
                    "[--engine hf|sglang|auto] [--max-samples N] [--tools YAML] [--no-progress] [key=value ...]")
    parser.epilog = ("Overrides are Hydra key=value pairs of the trainer config (budgets: rollout.multi_turn.*, "
                     "rollout.max_model_len, ...; docs/config.md). Metrics: docs/eval.md.")
    parser.set_defaults(_accepts_extra=True)


def _overridden(overrides, key: str) -> bool:
    from agent_rl.config.load import override_keys

    return key in override_keys(overrides)


def _model_folder(path: str) -> str:
    """A checkpoint folder `global_step_N` stands for its `hf/` model."""
    if path != "embedded" and not os.path.exists(os.path.join(path, "config.json")) \
            and os.path.isfile(os.path.join(path, "hf", "config.json")):
        return os.path.join(path, "hf")
    return path


def _data_task(files):
    """The task every row's `ability` belongs to (`Task.abilities`, agent_rl/tasks/registry.py: the first task
    listing it), when that task has a default tool YAML (`Task.tool_config`); else None (mixed, unknown or
    unreadable)."""
    import pyarrow.parquet as pq

    from agent_rl.tasks.registry import task_of_ability

    tasks = set()
    for f in files:
        try:
            abilities = pq.read_table(f, columns=["ability"]).column("ability").to_pylist()
        except Exception:
            return None
        tasks.update(task_of_ability(a) for a in abilities)
    task = tasks.pop() if len(tasks) == 1 and None not in tasks else None
    return task if task is not None and task.tool_config else None


def _checkout_path(rel: str) -> str:
    return rel if os.path.exists(rel) else os.path.join(ROOT, rel)


def _pick_tools(cfg, args, overrides, log) -> None:
    """--tools / --kg-store, else what the data imply (docs/eval.md, "Tools")."""
    from agent_rl.orchestration.prepare import tools_task

    if args.tools:
        cfg.tools.config_path = args.tools
    existing = [f for f in cfg.data.val_files if os.path.isfile(f)]
    if not args.tools and not _overridden(overrides, "tools.config_path") and existing:
        task, current = _data_task(existing), cfg.tools.config_path
        other = tools_task(current)      # None: a user's own tools (kept), or a YAML not found from here (replaced)
        if task and task.name != other and (other is not None or (current and not os.path.isfile(current))):
            cfg.tools.config_path = _checkout_path(task.tool_config)
            log(f"tools: {cfg.tools.config_path} (the data are {task.name} rows; --tools YAML to choose)")
    if args.kg_store:
        cfg.tools.kg_store = args.kg_store
    elif existing:
        _files_next_to_data(cfg, overrides, os.path.dirname(existing[0]))


def _files_next_to_data(cfg, overrides, folder: str) -> None:
    """The files of the tools' task that lie next to the data (`Task.data_files`: the KG store, `tools.kg_store`),
    for the config keys the overrides do not set."""
    from agent_rl.orchestration.prepare import tools_task
    from agent_rl.tasks.registry import TASKS, set_config_value

    name = tools_task(cfg.tools.config_path)
    for key, filename in TASKS[name].data_files if name else ():
        nearby = os.path.join(folder, filename)
        if not _overridden(overrides, key) and os.path.isfile(nearby):
            set_config_value(cfg, key, nearby)


def _clean(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def run(args) -> int:
    from agent_rl.config.load import ConfigError, check_files, compose, parse_overrides
    from agent_rl.orchestration.prepare import prepare_data, prepare_model, resolve_device, start_services

    def fail(msg: str) -> int:
        print(f"agent-rl eval: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2

    from agent_rl.orchestration.evaluate import parse_ks

    if args.n < 1:
        return fail(f"--n: must be >= 1, got {args.n}")
    if args.max_samples is not None and args.max_samples < 1:
        return fail(f"--max-samples: must be >= 1, got {args.max_samples}")
    try:
        ks = parse_ks(args.k, args.n)
    except ValueError as e:
        return fail(str(e))
    model_arg = args.model
    if model_arg is not None and model_arg != "embedded" and not os.path.exists(model_arg):
        return fail(f"--model: not found: {model_arg} (an HF model folder, a checkpoint's global_step_N[/hf], or `embedded`)")
    for f in args.data or []:
        if not os.path.isfile(f):
            return fail(f"--data: {'not a file' if os.path.exists(f) else 'file not found'}: {f}")
    if args.tools and not os.path.isfile(args.tools):
        return fail(f"--tools: file not found: {args.tools}")
    if args.kg_store and not os.path.isfile(args.kg_store):
        return fail(f"--kg-store: file not found: {args.kg_store}")

    services = []
    try:
        overrides = parse_overrides(list(getattr(args, "_extra", []) or []))
        cfg = compose(overrides, config_dir=args.config_dir, config_name=args.config_name, check_paths=False)
        if model_arg is not None:
            cfg.model.path = _model_folder(model_arg)
        if args.data:
            cfg.data.val_files = list(args.data)
            cfg.data.generate_if_missing = None     # the user's files: never generate
        if args.engine:
            cfg.rollout.engine = args.engine
        if args.no_progress:
            cfg.rollout.progress_bar = False
        vs = cfg.rollout.val_sampling
        if args.temperature is not None:
            vs.temperature = args.temperature
        elif not _overridden(overrides, "rollout.val_sampling.temperature"):
            vs.temperature = 0.0 if args.n == 1 else 1.0
        if args.top_p is not None:
            vs.top_p = args.top_p
        _pick_tools(cfg, args, overrides, print)
        check_files(cfg, data_keys=("val_files",), sft=False)   # nothing written or started before this passes
        from agent_rl.engines import resolve_engine_kind

        try:
            engine_kind = resolve_engine_kind(cfg.rollout.engine)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if engine_kind in ("sglang", "sglang-server"):
            import importlib.util

            import torch

            if not torch.cuda.is_available() or importlib.util.find_spec("sglang") is None:
                raise ConfigError(f"engine {engine_kind} (--engine / rollout.engine={cfg.rollout.engine}) needs a CUDA device "
                                  "and the sglang package: --engine hf runs here")
        device = resolve_device(cfg)
        model_path = prepare_model(cfg)
        prepare_data(cfg, keys=("val_files",))
        rows = _load_rows(cfg)
        if args.max_samples:
            rows = rows[: args.max_samples]
        services = start_services(cfg)
    except ConfigError as e:
        return fail(f"config error: {e}")
    try:
        return _evaluate(cfg, args, model_path, device, engine_kind, rows, ks)
    except ConfigError as e:   # a tokenizer or tool problem found while building: one line naming it
        return fail(f"config error: {e}")
    finally:
        for service in services:
            service.stop()


def _load_rows(cfg):
    from agent_rl.config.load import ConfigError
    from agent_rl.data.loader import load_rows
    from agent_rl.tasks import check_row_reward
    from agent_rl.tasks.rows import rules_for

    try:   # an unscorable row (unknown data_source) is an error here, before anything runs
        return load_rows(cfg.data.val_files, skip_invalid=cfg.data.skip_invalid_rows, log=print, rules=rules_for,
                         check=lambda row: check_row_reward(row, cfg.reward))
    except (ValueError, OSError) as e:
        raise ConfigError(f"data: {e}") from None


def _evaluate(cfg, args, model_path, device, engine_kind, rows, ks) -> int:
    from omegaconf import OmegaConf

    from agent_rl.bench.env_info import environment
    from agent_rl.orchestration.evaluate import markdown, run_eval, summarize
    from agent_rl.rollout.output import write_trajectories

    os.makedirs(args.out, exist_ok=True)
    print(f"evaluating {model_path} on {len(rows)} questions x {args.n} "
          f"(temperature {cfg.rollout.val_sampling.temperature}, engine {engine_kind}, device {device})")
    t0 = time.perf_counter()
    trajs, tokenizer = asyncio.run(run_eval(cfg, model_path, device, rows, n=args.n))
    seconds = time.perf_counter() - t0
    report = summarize(trajs, ks, correct_metric=args.correct_metric)
    traj_file = os.path.join(args.out, "trajectories.jsonl")
    write_trajectories(traj_file, trajs, tokenizer=tokenizer, step=0)
    argv = getattr(args, "_argv", None)
    command = shlex.join(["agent-rl", *argv]) if argv is not None else shlex.join(["agent-rl", *sys.argv[1:]])
    vs = cfg.rollout.val_sampling
    doc = {
        "command": command,
        "cwd": os.getcwd(),
        "model": {"path": model_path, "arg": args.model if args.model is not None else cfg.model.path},
        "data": [os.path.abspath(f) for f in cfg.data.val_files],
        "tools": cfg.tools.config_path,
        "kg_store": os.path.abspath(cfg.tools.kg_store) if cfg.tools.kg_store and "kg_query" in _tool_names(cfg) else None,
        "engine": engine_kind,
        "device": device,
        "n": args.n,
        "ks": list(ks),
        "sampling": {"temperature": vs.temperature, "top_p": vs.top_p, "top_k": vs.top_k,
                     "greedy": vs.temperature == 0},
        "max_samples": args.max_samples,
        "num_questions": len(rows),
        "num_trajectories": len(trajs),
        "seconds": seconds,
        "correct_metric": report["correct_metric"],
        "overall": report["overall"],
        "by_source": report["by_source"],
        "questions": report["questions"],
        "trajectories": os.path.basename(traj_file),
        "environment": environment(device),
        "config": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write(os.path.join(args.out, "eval.json"), json.dumps(_clean(doc), indent=2, ensure_ascii=False) + "\n")
    header = {"model": model_path, "data": ", ".join(cfg.data.val_files),
              "questions": f"{len(rows)} x {args.n} sample(s), temperature {vs.temperature}"
                           + (" (greedy)" if vs.temperature == 0 else f", top_p {vs.top_p}"),
              "engine": f"{engine_kind} on {device}", "command": f"`{command}`"}
    md = markdown({**report, "ks": list(ks), "n": args.n}, header)
    _write(os.path.join(args.out, "eval.md"), md)
    print(md, end="")
    print(f"wrote {args.out}/eval.json, eval.md and {len(trajs)} trajectories to {traj_file} "
          f"(view: agent-rl view {traj_file}); {seconds:.1f} s")
    return 0


def _tool_names(cfg):
    from agent_rl.orchestration.prepare import tool_names

    try:
        return tool_names(cfg.tools.config_path)
    except Exception:
        return []
