"""`agent-rl` command line. Each subcommand lives in its own module under agent_rl/cli/ exposing
`HELP`, `add_arguments(parser)` and `run(args) -> int`; modules are imported only when needed.

Exit status 2 is a usage or config error (one line on stderr naming the key or file): a `ConfigError` that reaches
`main` is printed that way too."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "train": "agent_rl.cli.train",
    "rollout": "agent_rl.cli.rollout",
    "eval": "agent_rl.cli.eval",
    "serve": "agent_rl.cli.serve",
    "data": "agent_rl.cli.data",
    "model": "agent_rl.cli.model",
    "kg-server": "agent_rl.cli.kg_server",
    "tools": "agent_rl.cli.tools",
    "bench": "agent_rl.cli.bench",
    "view": "agent_rl.cli.view",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-rl", description="Multi-turn tool-use RL (GRPO) with SGLang rollouts.")
    from agent_rl import __version__

    parser.add_argument("--version", action="version", version=f"agent-rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod_name in COMMANDS.items():
        mod = importlib.import_module(mod_name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args._extra = extra
    args._argv = list(argv)   # the command as given (recorded by `agent-rl eval`)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:    # a config error a command did not report itself: still one line, exit 2
        from agent_rl.config.load import ConfigError

        if not isinstance(e, ConfigError):
            raise
        print(f"agent-rl {args.command}: config error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
