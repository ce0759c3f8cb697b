"""Human-readable console block for one step's metrics: one line per prefix group, not a dict dump.

    step 12  (4.1 s)
      reward    mean 0.412  std 0.120  answer 0.300  format 0.098
      actor     pg_loss -0.0123  kl_loss 4.1e-4  entropy 1.92  grad_norm 0.83
      timing    rollout_s 2.31  update_s 1.02  step_s 4.10

Groups come in a fixed, familiar order (reward, val, actor, rollout, tools, the tasks' groups, mismatch, perf,
timing); unknown prefixes follow alphabetically. A task's group is what its `metrics` hook writes (`<task>/...`;
`metrics/tasks.py` reads them from the task registry). Long groups wrap onto continuation lines.

Validation (`val/<data_source>/*`, and `sft/val/*` as its own `sft/val` group) prints one line per data
source, headline first: reward, the answer metric (`f1`, else `answer`, else `correct`), answer_rate, that
metric by hop (`f1@hop 1:0.62 2:0.31`) and the sample count; the data source's other flat metrics follow.
Per-hop details (`hop<k>/*`) and success by tool (`tool/<name>/*`) stay out of the console (JSONL, wandb).

      val       kg_synth  reward 0.412  f1 0.380  answer_rate 0.910  f1@hop 1:0.620 2:0.310  n 32
                kg_synth  answer 0.380  em 0.300  format 0.880  ...
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, List, Mapping

GROUP_ORDER = ["reward", "val", "actor", "critic", "rollout", "tools", "mismatch", "data", "perf", "timing"]
TASK_GROUPS_AFTER = "tools"    # the tasks' metric groups come right after this group
ANSWER_METRICS = ("f1", "answer", "correct")   # the first a data source has is its headline answer metric
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


def group_order() -> List[str]:
    """GROUP_ORDER with the tasks' metric groups after TASK_GROUPS_AFTER."""
    from agent_rl.metrics.tasks import task_groups

    i = GROUP_ORDER.index(TASK_GROUPS_AFTER) + 1
    extra = [g for g in task_groups() if g not in GROUP_ORDER]
    return GROUP_ORDER[:i] + extra + GROUP_ORDER[i:]


def group_metrics(metrics: Mapping[str, Any]) -> "OrderedDict[str, List[tuple]]":
    groups: Dict[str, List[tuple]] = {}
    for key in sorted(metrics):
        prefix, _, rest = key.partition("/")
        if not rest:
            prefix, rest = "misc", key
        groups.setdefault(prefix, []).append((rest, metrics[key]))
    known = group_order()
    order = [g for g in known if g in groups] + sorted(g for g in groups if g not in known)
    out: "OrderedDict[str, List[tuple]]" = OrderedDict()
    for g in order:
        items = groups[g]
        # "mean" first within a group: the number people look for.
        items.sort(key=lambda kv: (kv[0] != "mean", kv[0]))
        out[g] = items
    return out


def _wrap(label: str, width: int, pieces: List[str]) -> List[str]:
    """`label` padded to `width`, then the pieces two spaces apart, wrapped at LINE_WIDTH."""
    lines: List[str] = []
    line = "  " + label.ljust(width)
    indent = "  " + " " * width
    first = True
    for piece in pieces:
        if not first and len(line) + 2 + len(piece) > LINE_WIDTH:
            lines.append(line.rstrip())
            line = indent
            first = True
        line += ("" if first else "  ") + piece
        first = False
    lines.append(line.rstrip())
    return lines


def _hop_sort(hop: str):
    return (0, int(hop)) if hop.isdigit() else (1, hop)


def val_lines(items: List[tuple], label: str) -> List[str]:
    """Lines of a validation group: items are (`<data_source>/<name>`, value)."""
    by_ds: Dict[str, Dict[str, Any]] = {}
    for rest, v in items:
        ds, _, name = rest.partition("/")
        by_ds.setdefault(ds, {})[name] = v
    width = max(LABEL_WIDTH, len(label) + 2)
    lines: List[str] = []
    for ds, m in sorted(by_ds.items(), key=lambda kv: kv[0] == "all"):   # val/all (several sources) last
        metric = next((a for a in ANSWER_METRICS if a in m), None)
        head = [k for k in ("reward", metric, "answer_rate") if k in m]
        pieces = [f"{k} {format_value(m[k])}" for k in head]
        by_hop = {k[3:-len(f"/{metric}")]: v for k, v in m.items()
                  if metric and k.startswith("hop") and k.endswith(f"/{metric}") and k.count("/") == 1}
        if by_hop:
            hops = [f"{'unreach' if h == '_unreachable' else h}:{format_value(by_hop[h])}"
                    for h in sorted(by_hop, key=_hop_sort)]
            pieces.append(f"{metric}@hop " + " ".join(hops))
        if "num_samples" in m:
            pieces.append(f"n {format_value(m['num_samples'])}")
        shown = set(head) | {"num_samples"}
        rest = [f"{k} {format_value(v)}" for k, v in sorted(m.items()) if k not in shown and "/" not in k]
        for row in (pieces, rest):
            if row:
                lines += _wrap("" if lines else label, width, [f"{ds}  {row[0]}"] + row[1:])
    return lines


def format_block(metrics: Mapping[str, Any], step: int) -> str:
    """The console block of one step."""
    head = f"step {step}"
    step_s = metrics.get("timing/step_s")
    if isinstance(step_s, (int, float)):
        head += f"  ({step_s:.1f} s)"
    lines = [head]
    for group, items in group_metrics(metrics).items():
        if group == "val":
            lines += val_lines(items, group)
            continue
        sft_val = [(k[len("val/"):], v) for k, v in items if group == "sft" and k.startswith("val/")]
        items = [(k, v) for k, v in items if not (group == "sft" and k.startswith("val/"))]
        if items:
            width = max(LABEL_WIDTH, len(group) + 2)
            lines += _wrap(group, width, [f"{name} {format_value(value)}" for name, value in items])
        if sft_val:
            lines += val_lines(sorted(sft_val), "sft/val")
    return "\n".join(lines)
