"""Write converted real data sets: `convert_dataset("gsm8k" | "webqsp" | "cwq", inputs, out_dir, split)`.

Writes `<out_dir>/<split>.parquet`; for webqsp / cwq the subgraphs go into `<out_dir>/kg_store.json`,
merged with the samples already there (so converting train, then val and test, fills one store);
a store of another dataset in the same folder is an error.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, Sequence, Union

from agent_rl.tasks.gsm8k.convert import convert_gsm8k
from agent_rl.tasks.kg.convert_rog import DATASETS, convert_rog
from tools.kg_store import DEFAULT_FILENAME as KG_STORE_NAME, read_kg_store, save_kg_store
from agent_rl.tasks.rows import write_rows

KINDS = ("gsm8k",) + DATASETS


def convert_dataset(kind: str, inputs: Union[str, Sequence[str]], out_dir: str, split: str = "train") -> Dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown data set {kind!r} (expected one of {KINDS})")
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"bad split name {split!r}")
    summary: Dict[str, Any] = {"kind": kind, "split": split}
    if kind == "gsm8k":
        rows = convert_gsm8k(inputs, split)
    else:
        rows, graphs, counts = convert_rog(inputs, kind, split)
        store = os.path.join(out_dir, KG_STORE_NAME)
        samples: Dict[str, Any] = {}
        if os.path.exists(store):
            dataset, samples = read_kg_store(store)
            if dataset != kind:
                raise ValueError(f"{store} holds dataset {dataset!r}, not {kind!r}: use another --out folder")
        samples.update(graphs)
        save_kg_store(store, samples, dataset=kind)
        hops = dict(sorted(Counter(r["extra_info"]["hops"] for r in rows).items()))
        answers = dict(sorted(Counter(min(len(r["reward_model"]["ground_truth"]), 10) for r in rows).items()))
        summary.update(kg_store=store, store_samples=len(samples), **counts, hops=hops, answers=answers)
        summary["notes"] = [f"wrote {store}: {len(samples)} subgraphs in store | hops {hist_text(hops)} | answers "
                            f"{hist_text(answers)} | skipped (no answer) {counts['skipped_no_answer']} | skipped (no topic "
                            f"entity) {counts['skipped_no_topic']} | empty graphs {counts['empty_graph']}"]
    notes = summary.pop("notes", [])
    summary["file"] = write_rows(os.path.join(out_dir, f"{split}.parquet"), rows)
    summary["rows"] = len(rows)
    summary["notes"] = notes      # what `agent-rl data convert` prints after the row count
    return summary


def hist_text(counts: Dict[Any, Any]) -> str:
    """{1: 3, 2: 1} -> `1:3 2:1`."""
    return " ".join(f"{k}:{v}" for k, v in counts.items())
