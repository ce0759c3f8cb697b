"""In-memory index of a KG store and the four KG-R1 look-ups, restricted to one sample's subgraph.

Built once at load: per sample, entity -> {relation -> sorted tails} (out) and entity ->
{relation -> sorted heads} (in), plus a lower-case name map, so every look-up is a few dict reads.
`query(...)` never raises: every answer is a `KGResult` with an error type.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Union

KG_SUCCESS = "KG_SUCCESS"
KG_FORMAT_ERROR = "KG_FORMAT_ERROR"
KG_SAMPLE_NOT_FOUND = "KG_SAMPLE_NOT_FOUND"
KG_ENTITY_NOT_FOUND = "KG_ENTITY_NOT_FOUND"
KG_RELATION_NOT_FOUND = "KG_RELATION_NOT_FOUND"
KG_NO_RESULTS = "KG_NO_RESULTS"
KG_SERVER_ERROR = "KG_SERVER_ERROR"
ERROR_TYPES = (KG_SUCCESS, KG_FORMAT_ERROR, KG_SAMPLE_NOT_FOUND, KG_ENTITY_NOT_FOUND, KG_RELATION_NOT_FOUND,
               KG_NO_RESULTS, KG_SERVER_ERROR)

ACTIONS = ("get_relations_out", "get_relations_in", "get_entities_out", "get_entities_in")
ALIASES = {
    "get_tail_relations": "get_relations_out",
    "get_head_relations": "get_relations_in",
    "get_tail_entities": "get_entities_out",
    "get_head_entities": "get_entities_in",
}
MAX_LISTED = 200          # items written into `result` (all of them are in `data`)
MAX_HINT_RELATIONS = 30   # relations listed in a KG_RELATION_NOT_FOUND message

Adjacency = Dict[str, Dict[str, List[str]]]


@dataclass
class KGResult:
    success: bool
    error_type: str
    result: str
    data: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def canonical_action(action: Any) -> Optional[str]:
    if not isinstance(action, str):
        return None
    a = action.strip()
    return a if a in ACTIONS else ALIASES.get(a)


def _listing(items: List[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


class _Sample:
    __slots__ = ("out", "inn", "lower", "lower_rel")

    def __init__(self, triples: List[List[str]], sample_id: str):
        out: Dict[str, Dict[str, set]] = {}
        inn: Dict[str, Dict[str, set]] = {}
        for i, t in enumerate(triples):
            if not isinstance(t, (list, tuple)) or len(t) != 3 or not all(isinstance(x, str) for x in t):
                raise ValueError(f"sample {sample_id!r}: triple {i} is not [head, relation, tail] strings: {t!r}")
            h, r, tl = t
            out.setdefault(h, {}).setdefault(r, set()).add(tl)
            inn.setdefault(tl, {}).setdefault(r, set()).add(h)
        self.out: Adjacency = {e: {r: sorted(v) for r, v in rels.items()} for e, rels in out.items()}
        self.inn: Adjacency = {e: {r: sorted(v) for r, v in rels.items()} for e, rels in inn.items()}
        self.lower: Dict[str, str] = {}
        for e in sorted(set(self.out) | set(self.inn)):
            self.lower.setdefault(e.lower(), e)
        self.lower_rel: Dict[str, str] = {}
        for rels in list(self.out.values()) + list(self.inn.values()):
            for r in rels:
                self.lower_rel.setdefault(r.lower(), r)

    def entity(self, name: str) -> Optional[str]:
        if name in self.out or name in self.inn:
            return name
        return self.lower.get(name.strip().lower())


def check_lookup(action: Any, entity: Any, relation: Any = None) -> Union[str, "KGResult"]:
    """The canonical action of a well-formed look-up, else its KG_FORMAT_ERROR result (every backend's one rule)."""
    act = canonical_action(action)
    if act is None:
        return KGResult(False, KG_FORMAT_ERROR, f"Unknown action {action!r}. Valid actions: {', '.join(ACTIONS)}.")
    if not isinstance(entity, str) or not entity.strip():
        return KGResult(False, KG_FORMAT_ERROR, f"{act} needs a non-empty entity name.")
    needs_relation = act.startswith("get_entities")
    if needs_relation and (not isinstance(relation, str) or not relation.strip()):
        return KGResult(False, KG_FORMAT_ERROR, f"{act} needs a relation (get its relations first with "
                        f"{'get_relations_out' if act.endswith('out') else 'get_relations_in'}).")
    if not needs_relation and relation is not None:
        return KGResult(False, KG_FORMAT_ERROR, f"{act} takes no relation: it lists the relations of an entity "
                        f"(use {'get_entities_out' if act.endswith('out') else 'get_entities_in'} to follow one).")
    return act


class KGIndex:
    def __init__(self, samples: Dict[str, List[List[str]]], dataset: str = ""):
        if not isinstance(samples, dict):
            raise ValueError("KG store samples must be a mapping sample_id -> triples")
        self.dataset = dataset
        self._samples = {str(k): _Sample(v, str(k)) for k, v in samples.items()}
        self.num_triples = sum(len(v) for v in samples.values())

    def __len__(self) -> int:
        return len(self._samples)

    @classmethod
    def from_path(cls, path: str) -> "KGIndex":
        from tools.kg_store import load_kg_store

        return cls(load_kg_store(path))

    def query(self, sample_id: Any, action: Any, entity: Any, relation: Any = None) -> KGResult:
        act = check_lookup(action, entity, relation)
        if isinstance(act, KGResult):
            return act
        sample = self._samples.get(str(sample_id)) if isinstance(sample_id, (str, int)) and not isinstance(sample_id, bool) else None
        if sample is None:
            return KGResult(False, KG_SAMPLE_NOT_FOUND, f"Sample {sample_id!r} is not in the knowledge graph store.")
        name = sample.entity(entity)
        if name is None:
            return KGResult(False, KG_ENTITY_NOT_FOUND,
                            f'Entity "{entity}" is not in the knowledge graph of this question. '
                            "Use an entity name exactly as given in the question or in earlier results.")
        outgoing = act.endswith("_out")
        adj = (sample.out if outgoing else sample.inn).get(name, {})
        direction = "outgoing" if outgoing else "incoming"
        if not act.startswith("get_entities"):
            rels = sorted(adj)
            if not rels:
                return KGResult(False, KG_NO_RESULTS, f'Entity "{name}" has no {direction} relations.')
            return KGResult(True, KG_SUCCESS, f'{direction.capitalize()} relations of "{name}": {_listing(rels)}', rels)
        rel = relation.strip()
        if rel not in adj:
            rel = sample.lower_rel.get(rel.lower(), rel)
        if rel not in adj:
            rels = sorted(adj)
            other = (sample.inn if outgoing else sample.out).get(name, {})
            msg = f'Relation "{relation}" is not an {direction} relation of "{name}".'
            if rel in other:
                msg += f" It is an {'incoming' if outgoing else 'outgoing'} relation: try {'get_entities_in' if outgoing else 'get_entities_out'}."
            if rels:
                msg += f" Its {direction} relations: {_listing(rels, MAX_HINT_RELATIONS)}"
            else:
                msg += f" It has no {direction} relations."
            return KGResult(False, KG_RELATION_NOT_FOUND, msg, [])
        ents = adj[rel]
        if not ents:
            return KGResult(False, KG_NO_RESULTS, f'No entities for "{name}" via {rel}.')
        label = "Tail" if outgoing else "Head"
        return KGResult(True, KG_SUCCESS, f'{label} entities of "{name}" via {rel}: {_listing(ents)}', list(ents))
