"""`agent-rl bench table DIR...`: `bench rollout` runs side by side, one row per run and mode.

A setting fixed at the engine's start (a scheduler patch, an attention backend) is compared run against run, with
the runs alternated and repeated (scripts/gpu/pipeline.sh, stage `ab`): this puts each run's own flags (those not
common to every run), the raw engine's rounds, each mode's step seconds per round, and sglang's scheduler per
generated token with its share waiting for the GPU (`--sample-engine-stacks`) in one table.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence

from agent_rl.bench.engine_stacks import gpu_wait, us_per_token

_IGNORED = {"--out"}   # flags whose value names the run, not a setting


def _flags(argv: Sequence[str]) -> List[str]:
    """`--flag value` / `--switch` items of a recorded command line (after `bench rollout`)."""
    items, i = [], 0
    args = list(argv)
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
            if a not in _IGNORED:
                items.append(f"{a} {args[i + 1]}" if has_value else a)
            i += 2 if has_value else 1
        else:
            i += 1
    return items


def load(path: str) -> Dict[str, Any]:
    """A run's `rollout_bench.json` (`path`: the file or its folder); ValueError naming what is wrong."""
    f = os.path.join(path, "rollout_bench.json") if os.path.isdir(path) else path
    try:
        with open(f) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise ValueError(f"bench table: cannot read {f}: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != "rollout" or not isinstance(data.get("modes"), list):
        raise ValueError(f"bench table: {f} is not the result of `agent-rl bench rollout`")
    return data


def _us(st: Dict[str, Any], tokens: Any) -> str:
    us = us_per_token(st, tokens)
    if us is None:
        return "–"
    wait = f" ({100 * gpu_wait(st):.0f}% GPU wait)" if "stage_leaves" in st else ""
    return f"{us:.1f}{wait}"


def table(paths: Sequence[str]) -> str:
    """Markdown: one row per run and mode, in the order given."""
    runs = [(p.rstrip("/"), load(p)) for p in paths]
    flags = [_flags(d.get("argv") or []) for _, d in runs]
    common = set.intersection(*(set(f) for f in flags)) if flags else set()
    lines = ["| run | its own flags | raw tokens/s (rounds) | mode | step s (rounds) | scheduler us a token |",
             "|---|---|---|---|---|---|"]
    for (path, d), f in zip(runs, flags):
        own = " ".join(f"`{x}`" for x in f if x not in common) or "–"
        c = d.get("ceiling") or {}
        raw = ", ".join(f"{v:.0f}" for v in c.get("tokens_per_s_rounds") or [c.get("tokens_per_s") or 0]) if c else "–"
        name = os.path.basename(path[:-len("/rollout_bench.json")] if path.endswith(".json") else path)
        rows = [("raw engine", "–", _us(c["engine_stacks"], c.get("output_tokens")))] \
            if c.get("engine_stacks") else []
        for m in d["modes"]:
            per = ", ".join(f"{r['step_wall_s_mean']:.3f}" for r in m.get("rounds") or [] if r.get("step_wall_s_mean"))
            step = f"{m['step_wall_s_mean']:.3f}" + (f" ({per})" if per else "") if m.get("step_wall_s_mean") else "–"
            # JSON from before the samples carried their tokens: round 0's window over one round's share of them
            tokens = (m.get("gen_tokens") or 0) / max(1, len(m.get("rounds") or ()))
            rows.append((m["mode"], step, _us(m["engine_stacks"], tokens) if m.get("engine_stacks") else "–"))
        for k, (mode, step, us) in enumerate(rows):
            lines.append(f"| {name if k == 0 else ''} | {own if k == 0 else ''} | {raw if k == 0 else ''} | {mode} | "
                         f"{step} | {us} |")
    return "\n".join(lines)
