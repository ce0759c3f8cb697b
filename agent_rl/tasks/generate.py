"""Write the embedded data sets: `generate_dataset("kg" | "arith", out_dir, ...)`.

Files under `out_dir`: `train.parquet`, `val.parquet`, `test.parquet` (splits of size 0 are skipped)
and, for kg, `kg_store.json`. Same arguments -> byte-identical files.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, Optional

from agent_rl.data import arith, kg_synth
from agent_rl.data.kg_store import DEFAULT_FILENAME as KG_STORE_NAME, save_kg_store
from agent_rl.data.parquet_io import write_rows

SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"kg": {"train": 2000, "val": 200, "test": 200}, "arith": {"train": 2000, "val": 200, "test": 200}}


def generate_dataset(kind: str, out_dir: str, seed: int = 1, sizes: Optional[Dict[str, int]] = None,
                     hops: Optional[str] = None) -> Dict[str, Any]:
    """Generate and write; returns a summary {files: {split: path}, rows: {split: n}, kg_store, histograms}."""
    if kind not in DEFAULT_SIZES:
        raise ValueError(f"unknown data set kind {kind!r} (expected kg or arith)")
    sizes = {**DEFAULT_SIZES[kind], **(sizes or {})}
    bad = [s for s in sizes if s not in SPLITS]
    if bad or any(int(n) < 0 for n in sizes.values()):
        raise ValueError(f"split sizes must be non-negative for {SPLITS}, got {sizes}")
    if not any(sizes.values()):
        raise ValueError("all split sizes are 0: nothing to generate")
    if hops is not None and kind != "kg":
        raise ValueError("--hops applies to kg only")
    hop_mix = kg_synth.parse_hops(hops) if hops else kg_synth.DEFAULT_HOPS
    os.makedirs(out_dir, exist_ok=True)
    seen: set = set()
    summary: Dict[str, Any] = {"kind": kind, "files": {}, "rows": {}, "histograms": {}}
    graphs: Dict[str, Any] = {}
    for split in SPLITS:
        n = int(sizes.get(split, 0))
        if n == 0:
            continue
        if kind == "kg":
            rows, g = kg_synth.generate_split(seed, split, n, hop_mix, seen)
            graphs.update(g)
            summary["histograms"][split] = {
                "hops": dict(sorted(Counter(r["extra_info"]["hops"] for r in rows).items())),
                "answers": dict(sorted(Counter(len(r["reward_model"]["ground_truth"]) for r in rows).items())),
                "cvt": sum(bool(r["extra_info"]["cvt"]) for r in rows),
                "same_name": sum(bool(r["extra_info"]["same_name_entities"]) for r in rows),
            }
        else:
            rows = arith.generate_split(seed, split, n, seen)
            summary["histograms"][split] = {"steps": dict(sorted(Counter(r["extra_info"]["steps"] for r in rows).items()))}
        path = os.path.join(out_dir, f"{split}.parquet")
        summary["files"][split] = write_rows(path, rows)
        summary["rows"][split] = len(rows)
    if kind == "kg":
        store = os.path.join(out_dir, KG_STORE_NAME)
        save_kg_store(store, graphs, dataset=kg_synth.DATA_SOURCE)
        summary["kg_store"] = store
        summary["triples"] = {"samples": len(graphs), "min": min(map(len, graphs.values())),
                              "max": max(map(len, graphs.values())),
                              "mean": round(sum(map(len, graphs.values())) / len(graphs), 1)}
    return summary
