"""Append-only JSONL metrics file: one line per step, `{"step": N, "time": unix_s, <metric>: value, ...}`.

Durable: every record is flushed and fsync'ed before `write` returns (one small fsync per step, well under a
millisecond to a few ms against steps of seconds), so the trainer can write a step's record before that step's
checkpoint becomes resumable and a killed run never resumes past a step whose metrics are not on disk. A torn
last line left by a killed run is cut off when the file is opened again, so the next record starts on a line
of its own."""
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
        created = not os.path.exists(path)
        _cut_torn_tail(path)
        self._f = open(path, "a", encoding="utf-8")
        if created:  # the new file's directory entry is durable too
            try:
                fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass

    def write(self, metrics: Mapping[str, Any], step: int) -> None:
        rec: Dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        for k, v in metrics.items():
            rec[k] = to_jsonable(v)
        self._f.write(json.dumps(rec, sort_keys=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())  # durable before the caller goes on (e.g. to make the step's checkpoint)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _cut_torn_tail(path: str) -> None:
    """Truncate a last line without its newline (a run killed inside a write): appending to it would glue the
    next record onto it and lose both."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        keep, pos, chunk = 0, size, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


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
