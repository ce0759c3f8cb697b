"""The KG store file: one JSON document holding each question's subgraph.

    {"format": "agent-rl-kg-store", "version": 1, "dataset": "<name>",
     "samples": {"<sample_id>": [["head name", "relation.dotted.name", "tail name"], ...], ...}}

Entity names are strings; nameless (CVT-like) nodes have ids such as "m.0cvt12" and no other name.
Written by `agent-rl data generate kg` and the RoG converters; loaded by the KG server.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

Triple = List[str]
FORMAT = "agent-rl-kg-store"
DEFAULT_FILENAME = "kg_store.json"  # the store next to the parquet files of a data folder


def save_kg_store(path: str, samples: Dict[str, List[Triple]], dataset: str) -> None:
    tmp = f"{path}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "version": 1, "dataset": dataset,
                   "samples": {k: [list(t) for t in v] for k, v in sorted(samples.items())}},
                  f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    os.replace(tmp, path)


def load_kg_store(path: str) -> Dict[str, List[Triple]]:
    return read_kg_store(path)[1]


def read_kg_store(path: str) -> Tuple[str, Dict[str, List[Triple]]]:
    """(dataset name, samples) of a KG store file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"KG store not found: {path} (make one with `agent-rl data generate kg`)")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not an agent-rl KG store (missing format={FORMAT!r})")
    return str(doc.get("dataset", "")), doc["samples"]
