"""`agent-rl train [overrides...]`: GRPO training from the Hydra config (docs/training.md).

Exit status: 0 done, 1 the run failed, 2 config error, 128 + N stopped by signal N (130 SIGINT / Ctrl-C, 143 SIGTERM:
the run is closed cleanly and a summary says what was saved; a second signal exits at once)."""
from __future__ import annotations

import sys

HELP = "GRPO training: Ray workers (FSDP actor + reference + engine per GPU), multi-turn tool rollouts"


def add_arguments(parser):
    parser.add_argument("--config-dir", default=None, help="folder with the Hydra config (default: the repository's configs/)")
    parser.add_argument("--config-name", default="trainer", help="config file name without .yaml (default: trainer)")
    parser.add_argument("--print-config", action="store_true", help="print the composed config as YAML and exit")
    parser.usage = "agent-rl train [--config-dir DIR] [--config-name NAME] [--print-config] [key=value ...]"
    parser.epilog = ("Overrides are Hydra key=value pairs, e.g. `agent-rl train rollout.n=8 actor.optim.lr=1e-6`; "
                     "every key is in docs/config.md.")
    parser.set_defaults(_accepts_extra=True)


def run(args) -> int:
    from agent_rl.config.load import ConfigError, compose, parse_overrides, to_yaml

    try:
        overrides = parse_overrides(list(getattr(args, "_extra", []) or []))
        cfg = compose(overrides, config_dir=args.config_dir, config_name=args.config_name,
                      check_paths=not args.print_config)
    except ConfigError as e:
        print(f"agent-rl train: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from agent_rl.orchestration.stop import TrainInterrupted
    from agent_rl.orchestration.trainer import TrainError, train

    try:
        train(cfg, overrides=overrides)
    except ConfigError as e:
        print(f"agent-rl train: config error: {e}", file=sys.stderr)
        return 2
    except TrainError as e:
        print(f"agent-rl train: {e}", file=sys.stderr)
        return 1
    except TrainInterrupted as e:
        print(f"agent-rl train: {e}", file=sys.stderr)
        return e.exit_code
    return 0
