"""Human-readable console block for one step's metrics: one line per prefix group, not a dict dump.

    step 12  (4.1 s)
      reward    mean 0.412  std 0.120  answer 0.300  format 0.098
      actor     pg_loss -0.0123  kl_loss 4.1e-4  entropy 1.92  grad_norm 0.83
      timing    rollout_s 2.31  update_s 1.02  step_s 4.10

Groups come in a fixed, familiar order (reward, val, actor, rollout, tools, kg, mismatch, perf, timing);
unknown prefixes follow alphabetically. Long groups wrap onto continuation lines.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, List, Mapping

GROUP_ORDER = ["reward", "val", "actor", "critic", "rollout", "tools", "kg", "mismatch", "data", "perf", "timing"]
LABEL_WIDTH = 10
LINE_WIDTH = 110


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.2e}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.3f}"
        return f"{v:.4g}"
    return str(v)


def group_metrics(metrics: Mapping[str, Any]) -> "OrderedDict[str, List[tuple]]":
    groups: Dict[str, List[tuple]] = {}
    for key in sorted(metrics):
        prefix, _, rest = key.partition("/")
        if not rest:
            prefix, rest = "misc", key
        groups.setdefault(prefix, []).append((rest, metrics[key]))
    order = [g for g in GROUP_ORDER if g in groups] + sorted(g for g in groups if g not in GROUP_ORDER)
    out: "OrderedDict[str, List[tuple]]" = OrderedDict()
    for g in order:
        items = groups[g]
        # "mean" first within a group: the number people look for.
        items.sort(key=lambda kv: (kv[0] != "mean", kv[0]))
        out[g] = items
    return out


def format_block(metrics: Mapping[str, Any], step: int) -> str:
    """The console block of one step."""
    head = f"step {step}"
    step_s = metrics.get("timing/step_s")
    if isinstance(step_s, (int, float)):
        head += f"  ({step_s:.1f} s)"
    lines = [head]
    for group, items in group_metrics(metrics).items():
        width = max(LABEL_WIDTH, len(group) + 2)
        label = group.ljust(width)
        line = "  " + label
        indent = "  " + " " * width
        first = True
        for name, value in items:
            piece = f"{name} {format_value(value)}"
            if not first and len(line) + 2 + len(piece) > LINE_WIDTH:
                lines.append(line.rstrip())
                line = indent
                first = True
            line += ("" if first else "  ") + piece
            first = False
        lines.append(line.rstrip())
    return "\n".join(lines)
