"""Placeholder until its feature lands: says so and exits non-zero (never fake output)."""
import sys

HELP = "Run one rollout step from config and print its metrics (issue 4)"


def add_arguments(parser):
    parser.set_defaults(_accepts_extra=True)


def run(args) -> int:
    print("agent-rl: this command is not implemented yet (issue 4)", file=sys.stderr)
    return 2
