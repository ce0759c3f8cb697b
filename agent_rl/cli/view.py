"""`agent-rl view FILE.jsonl -o page.html [--tokenizer PATH]`: trajectories JSONL -> readable HTML."""
from __future__ import annotations

import os
import sys

HELP = "Render trajectories JSONL as a readable HTML page"


def add_arguments(parser):
    parser.add_argument("file", help="trajectory JSONL written by a rollout / training step")
    parser.add_argument("-o", "--out", default=None, help="HTML file to write (default: FILE with .html)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder: colour each token by loss mask (default: use the text fields)")
    parser.add_argument("--limit", type=int, default=None, help="render the first N trajectories only")
    parser.add_argument("--title", default=None, help="page title (default: the file name)")


def run(args) -> int:
    from agent_rl.rollout.output import read_trajectories
    from agent_rl.rollout.view import render_html

    if not os.path.exists(args.file):
        print(f"agent-rl view: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        records = read_trajectories(args.file)
    except ValueError as e:
        print(f"agent-rl view: {e}", file=sys.stderr)
        return 2
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    out = args.out or os.path.splitext(args.file)[0] + ".html"
    page = render_html(records, tokenizer=tokenizer, title=args.title or os.path.basename(args.file), limit=args.limit)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {out} ({min(len(records), args.limit or len(records))} trajectories)")
    return 0
