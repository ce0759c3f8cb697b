"""Question answering by traversal of a name-level subgraph (the gold answers of KG rows).

A query is a list of branches `{"topic": name, "path": ["out:rel", "in:rel", ...]}`. Each branch
starts at its topic name and follows its steps (`out`: head -> tail, `in`: tail -> head); the
frontier never contains a topic entity of the query. The answers are the names every branch reaches
(intersection), sorted.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Sequence, Set, Tuple

Step = Tuple[str, str]  # (direction, relation)


def parse_step(step: str) -> Step:
    direction, sep, relation = step.partition(":")
    if not sep or direction not in ("out", "in") or not relation:
        raise ValueError(f"bad path step {step!r} (expected 'out:<relation>' or 'in:<relation>')")
    return direction, relation


class NameGraph:
    def __init__(self, triples: Iterable[Sequence[str]]):
        self.out: Dict[Tuple[str, str], Set[str]] = defaultdict(set)
        self.inn: Dict[Tuple[str, str], Set[str]] = defaultdict(set)
        for h, r, t in triples:
            self.out[(h, r)].add(t)
            self.inn[(t, r)].add(h)

    def follow(self, frontier: Iterable[str], step: str, exclude: Set[str]) -> Set[str]:
        direction, relation = parse_step(step)
        index = self.out if direction == "out" else self.inn
        nxt: Set[str] = set()
        for name in frontier:
            nxt |= index.get((name, relation), set())
        return nxt - exclude


def answer_query(triples: Iterable[Sequence[str]], query: List[Dict]) -> List[str]:
    graph = NameGraph(triples)
    topics = {b["topic"] for b in query}
    result = None
    for branch in query:
        frontier = {branch["topic"]}
        for step in branch["path"]:
            frontier = graph.follow(frontier, step, topics)
        result = frontier if result is None else result & frontier
    return sorted(result or ())
