"""Write a task's generated data set: `generate_dataset(task, out_dir, ...)` for the tasks with a `generate` hook
(`agent_rl.tasks.registry`: kg, arith).

Files under `out_dir`: `train.parquet`, `val.parquet`, `test.parquet` (splits of size 0 are skipped) and what
the task adds (kg: `kg_store.json`). Same arguments -> byte-identical files.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from agent_rl.tasks.rows import write_rows

SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 200}


def generate_dataset(kind: str, out_dir: str, seed: int = 1, sizes: Optional[Dict[str, int]] = None,
                     hops: Optional[str] = None) -> Dict[str, Any]:
    """Generate and write; returns a summary {files: {split: path}, rows: {split: n}, histograms: {split: {name:
    count or {value: count}}}, + what the task's `finish` adds (`notes`: lines `agent-rl data generate` prints)}."""
    from agent_rl.tasks.registry import GENERATABLE, TASKS, hook

    if kind not in GENERATABLE:
        raise ValueError(f"unknown data set kind {kind!r} (expected {' or '.join(GENERATABLE)})")
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    bad = [s for s in sizes if s not in SPLITS]
    if bad or any(int(n) < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be non-negative for {SPLITS}, got {sizes}")
    if not any(sizes.values()):
        raise ValueError("all split sizes are 0: nothing to generate")
    gen = hook(TASKS[kind], "generate")(seed, hops)
    os.makedirs(out_dir, exist_ok=True)
    seen: set = set()
    summary: Dict[str, Any] = {"kind": kind, "files": {}, "rows": {}, "histograms": {}}
    for split in SPLITS:
        n = int(sizes.get(split, 0))
        if n == 0:
            continue
        rows, summary["histograms"][split] = gen.split(split, n, seen)
        summary["files"][split] = write_rows(os.path.join(out_dir, f"{split}.parquet"), rows)
        summary["rows"][split] = len(rows)
    summary.update(gen.finish(out_dir))
    return summary
