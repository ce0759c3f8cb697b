"""Placeholder until its feature lands: says so and exits non-zero (never fake output)."""
import sys

HELP = "Serve a KG store over HTTP for the kg_query tool (issue 3)"


def add_arguments(parser):
    parser.set_defaults(_accepts_extra=True)


def run(args) -> int:
    print("agent-rl: this command is not implemented yet (issue 3)", file=sys.stderr)
    return 2
