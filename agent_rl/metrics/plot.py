"""Training-curve PNG from a metrics JSONL (matplotlib, Agg backend: no display needed).

`plot_metrics(jsonl, png, keys=None)`: one panel per curve group; with `keys=None` the default panels
(rewards incl. validation and the post-warm-start validation, validation components, validation answer rate, KL
loss, policy loss, entropy, response length, tool-call rate, timing, and the panels and curves the tasks add:
`Task.panels` of the task registry, read through `metrics/tasks.py`) are drawn for whichever of their metrics are
present. In the default panels a `*` stands for one part of a metric name between slashes (`val/*/f1` is not
`val/<source>/hop1/f1`); `keys` are plain fnmatch globs.

A task's panels come in its order: one whose title is a default panel's adds its patterns to that panel, each
right after the pattern listed before it (the first at the front); a new one goes right after the panel listed
before it (the first at the end).

Short runs read well too: every panel spans the steps drawn in any panel (a lone validation point at step 2 sits
on the 1..2 axis of the other panels, not on an axis of 1.9..2.1), series of few points get markers and, with 3 points or fewer,
their values written beside them, and a panel whose values never change gets a y axis that includes 0 (a flat 0 on
0..1, a flat 2 on 0..2) instead of matplotlib's value +- 0.1; reward and rate panels start at 0.
"""
from __future__ import annotations

import fnmatch
import math
import re
from typing import List, Optional, Sequence, Tuple

from agent_rl.metrics.jsonl import read_jsonl
from agent_rl.metrics.tasks import Panel, task_panels

# (panel title, metric patterns). Patterns are fnmatch globs over metric names.
DEFAULT_PANELS: List[Tuple[str, List[str]]] = [
    ("reward", ["reward/mean", "val/*/reward", "sft/val/*/reward"]),
    ("validation", ["val/*/format", "val/*/tool_call_rate"]),
    ("validation answer rate", ["val/*/answer_rate"]),
    ("KL loss", ["actor/kl_loss"]),
    ("policy loss", ["actor/pg_loss"]),
    ("entropy", ["actor/entropy"]),
    ("response length (tokens)", ["rollout/response_len_mean", "rollout/sampled_len_mean"]),
    ("tool calls", ["rollout/tool_calls_mean", "rollout/tool_call_rate"]),
    ("timing (s)", ["timing/step_s", "timing/rollout_s", "timing/update_s", "timing/old_logprob_s", "timing/ref_s", "timing/sync_s"]),
]


# panels of rewards and rates: the y axis starts at 0 (a reward going 0.05 -> 0.18 is not drawn as a climb from the floor)
FROM_ZERO = {"reward", "validation", "validation answer rate", "tool calls"}


def _insert_after(items: list, prev, item, key=lambda x: x) -> None:
    """Insert `item` right after the entry whose key is `prev` (at the front when `prev` is None)."""
    i = next(i for i, x in enumerate(items) if key(x) == prev) + 1 if prev is not None else 0
    items.insert(i, item)


def default_panels(extra: Sequence[Sequence[Panel]] = None) -> Tuple[List[Tuple[str, List[str]]], set]:
    """(DEFAULT_PANELS with the tasks' panels merged in, the titles whose y axis starts at 0); `extra` defaults to
    the tasks' (`Task.panels`)."""
    panels = [(t, list(ps)) for t, ps in DEFAULT_PANELS]
    from_zero = set(FROM_ZERO)
    for group in task_panels() if extra is None else extra:
        prev_title = None
        for title, patterns, zero in group:
            panel = next((p for t, p in panels if t == title), None)
            if panel is None:
                panel = []
                if prev_title is None:
                    panels.append((title, panel))
                else:
                    _insert_after(panels, prev_title, (title, panel), key=lambda x: x[0])
            prev = None
            for p in patterns:
                if p not in panel:
                    _insert_after(panel, prev, p)
                prev = p
            if zero:
                from_zero.add(title)
            prev_title = title
    return panels, from_zero


def _series(records: Sequence[dict], key: str) -> Tuple[List[int], List[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
            continue
        xs.append(int(r["step"]))
        ys.append(float(v))
    return xs, ys


def _natural(name: str) -> list:
    """Sort key that puts hop2 before hop10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _match_parts(name: str, pattern: str) -> bool:
    """fnmatch part by part between slashes: `*` never spans a `/`."""
    names, pats = name.split("/"), pattern.split("/")
    return len(names) == len(pats) and all(fnmatch.fnmatchcase(n, p) for n, p in zip(names, pats))


def _panels(records: Sequence[dict], keys: Optional[Sequence[str]]) -> List[Tuple[str, List[str]]]:
    names = sorted({k for r in records for k in r if k not in ("step", "time")}, key=_natural)
    if keys:
        return [(k, [m for m in names if fnmatch.fnmatch(m, k)]) for k in keys]
    out = []
    for title, patterns in default_panels()[0]:
        found: List[str] = []
        for p in patterns:
            found += [m for m in names if _match_parts(m, p) and m not in found]
        out.append((title, found))
    return out


def _x_limits(steps: Sequence[int]) -> Tuple[float, float]:
    """The step range of what is drawn, padded: a single step gets one step either side."""
    lo, hi = (min(steps), max(steps)) if steps else (0, 1)
    if lo == hi:
        return lo - 1, hi + 1
    pad = max(0.3, 0.03 * (hi - lo))
    return lo - pad, hi + pad


def _flat_y_limits(values: Sequence[float]) -> Optional[Tuple[float, float]]:
    """Y limits for a panel whose values are all equal (None otherwise): from 0 to the value (0..1 for a flat 0)."""
    if not values:
        return None
    v0 = values[0]
    if any(abs(v - v0) > 1e-12 * max(1.0, abs(v0)) for v in values):
        return None
    lo, hi = min(0.0, v0), max(0.0, v0)
    if hi == lo:
        hi = 1.0
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def plot_metrics(jsonl: str, png: str, keys: Optional[Sequence[str]] = None, title: Optional[str] = None) -> Optional[str]:
    """Write `png` with the curves of `jsonl`; returns the path, or None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = read_jsonl(jsonl)
    from_zero = default_panels()[1]
    panels = [(t, [m for m in ms if _series(records, m)[0]]) for t, ms in _panels(records, keys)]
    panels = [(t, ms) for t, ms in panels if ms]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    xlim = _x_limits([x for _, ms in panels for m in ms for x in _series(records, m)[0]])
    for ax, (ptitle, metrics) in zip(axes.flat, panels):
        values: List[float] = []
        for m in metrics:
            xs, ys = _series(records, m)
            values += ys
            size = 6 if len(xs) <= 5 else 3
            line, = ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=size, label=m)
            if len(xs) <= 3 and len(metrics) <= 2:  # a few points: write their values
                for x, y in zip(xs, ys):
                    ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                color=line.get_color())
        flat = _flat_y_limits(values)
        if flat:
            ax.set_ylim(*flat)
        elif not keys and ptitle in from_zero and values and min(values) >= 0:
            ax.set_ylim(bottom=0)
        ax.set_xlim(*xlim)
        ax.set_title(ptitle, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(metrics) > 1 or keys:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m agent_rl.metrics.plot", description="Plot a metrics JSONL as PNG")
    p.add_argument("jsonl")
    p.add_argument("-o", "--out", default=None, help="PNG path (default: next to the JSONL)")
    p.add_argument("--keys", nargs="*", default=None, help="metric names or globs, one panel each")
    a = p.parse_args(argv)
    import os

    out = a.out or os.path.splitext(a.jsonl)[0] + ".png"
    res = plot_metrics(a.jsonl, out, a.keys)
    print(res or "nothing to plot")
    return 0 if res else 1


if __name__ == "__main__":
    raise SystemExit(main())
