"""`agent-rl data generate kg`: the synthetic KG QA splits (`synth`) and their KG store (`kg_store.json`)."""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from agent_rl.tasks.kg import synth
from tools.kg_store import DEFAULT_FILENAME as KG_STORE_NAME, save_kg_store


class KGGenerator:
    def __init__(self, seed: int, hops: Optional[str] = None):
        self.seed = seed
        self.hop_mix = synth.parse_hops(hops) if hops else synth.DEFAULT_HOPS
        self.graphs: Dict[str, Any] = {}

    def split(self, split: str, n: int, seen: set) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        rows, g = synth.generate_split(self.seed, split, n, self.hop_mix, seen)
        self.graphs.update(g)
        return rows, {
            "hops": dict(sorted(Counter(r["extra_info"]["hops"] for r in rows).items())),
            "answers": dict(sorted(Counter(len(r["reward_model"]["ground_truth"]) for r in rows).items())),
            "cvt": sum(bool(r["extra_info"]["cvt"]) for r in rows),
            "same_name": sum(bool(r["extra_info"]["same_name_entities"]) for r in rows),
        }

    def finish(self, out_dir: str) -> Dict[str, Any]:
        store = os.path.join(out_dir, KG_STORE_NAME)
        save_kg_store(store, self.graphs, dataset=synth.DATA_SOURCE)
        sizes = list(map(len, self.graphs.values()))
        t = {"samples": len(sizes), "min": min(sizes), "max": max(sizes), "mean": round(sum(sizes) / len(sizes), 1)}
        return {"kg_store": store, "triples": t,
                "notes": [f"wrote {store}: {t['samples']} subgraphs, triples min {t['min']} mean {t['mean']} max {t['max']}"]}
