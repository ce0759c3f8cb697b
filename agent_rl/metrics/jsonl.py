"""Append-only JSONL metrics file: one line per step, `{"step": N, "time": unix_s, <metric>: value, ...}`."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Iterator, List, Mapping


def to_jsonable(v: Any) -> Any:
    """Plain JSON values: numbers (NaN/inf as null), strings, bools; tensors / numpy scalars via .item()."""
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, RuntimeError):
            return str(v)
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


class JsonlWriter:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, metrics: Mapping[str, Any], step: int) -> None:
        rec: Dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        for k, v in metrics.items():
            rec[k] = to_jsonable(v)
        self._f.write(json.dumps(rec, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    """Records of a metrics file; a torn last line (killed run) is skipped. A resumed run appends steps it
    may already have logged: the later record of a step wins."""
    by_step: Dict[int, Dict[str, Any]] = {}
    order: List[int] = []
    for rec in _iter(path):
        step = int(rec.get("step", len(order)))
        if step not in by_step:
            order.append(step)
        by_step[step] = rec
    return [by_step[s] for s in sorted(order)]


def _iter(path: str) -> Iterator[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
