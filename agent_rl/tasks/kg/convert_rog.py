"""RoG-WebQSP / RoG-CWQ parquet -> our rows + KG store (one sample per row).

Input columns: `id, question, answer (list[str]), q_entity (list[str]), a_entity (list[str]),
graph (list of [head, relation, tail] name triples)`. The subgraph of a sample is its `graph`;
gold answers are `answer` (deduplicated, order kept); topic entities are `q_entity`; `hops` is the
shortest undirected distance in the graph from a topic entity to an answer entity (-1 when no
answer entity is reachable). Rows without any answer are skipped (they cannot be scored).
"""
from __future__ import annotations

from collections import defaultdict, deque
from typing import Any, Dict, List, Sequence, Tuple, Union

from agent_rl.data.parquet_io import read_inputs
from agent_rl.data.prompts import kg_prompt
from agent_rl.data.schema import answer_strings, kg_tools_kwargs, make_row

REQUIRED = ("id", "question", "answer", "q_entity", "a_entity", "graph")
DATASETS = ("webqsp", "cwq")


def shortest_hops(triples: Sequence[Sequence[str]], sources: Sequence[str], targets: Sequence[str]) -> int:
    adj: Dict[str, set] = defaultdict(set)
    for h, _, t in triples:
        adj[h].add(t)
        adj[t].add(h)
    goal = set(targets)
    seen = {s for s in sources if s in adj or s in goal}
    queue = deque((s, 0) for s in seen)
    while queue:
        node, dist = queue.popleft()
        if node in goal:
            return dist
        for nxt in sorted(adj[node]):
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, dist + 1))
    return -1


def _triples(graph: Any, where: str) -> List[List[str]]:
    out = []
    for j, tr in enumerate(graph or []):
        tr = list(tr) if tr is not None else []
        if len(tr) != 3:
            raise ValueError(f"{where}: graph[{j}] is not a [head, relation, tail] triple")
        out.append([str(x) for x in tr])
    return out


def convert_rog(paths: Union[str, Sequence[str]], dataset: str, split: str) -> Tuple[List[Dict[str, Any]], Dict[str, List[List[str]]], Dict[str, int]]:
    """Returns (rows, subgraphs by sample id, counts {skipped_no_answer, empty_graph})."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown RoG dataset {dataset!r} (expected one of {DATASETS})")
    rows: List[Dict[str, Any]] = []
    graphs: Dict[str, List[List[str]]] = {}
    counts = {"skipped_no_answer": 0, "empty_graph": 0}
    for path, i, rec in read_inputs(paths):
        where = f"{path} row {i}"
        missing = [c for c in REQUIRED if c not in rec]
        if missing:
            raise ValueError(f"{path}: missing column {missing[0]!r} (RoG schema: {', '.join(REQUIRED)})")
        sid = str(rec["id"])
        if sid in graphs:
            raise ValueError(f"{where}: duplicate id {sid!r}")
        gold = answer_strings(rec["answer"] or [])
        if not gold:
            counts["skipped_no_answer"] += 1
            continue
        topics = answer_strings(rec["q_entity"] or [])
        if not topics:
            raise ValueError(f"{where}: empty q_entity (no topic entity)")
        triples = _triples(rec["graph"], where)
        counts["empty_graph"] += not triples
        graphs[sid] = triples
        question = str(rec["question"]).strip()
        if question and question[-1] not in "?.!":
            question += "?"
        a_entity = answer_strings(rec["a_entity"] or [])
        rows.append(make_row(prompt=kg_prompt(question, topics), data_source=dataset, ground_truth=gold, split=split,
                             index=len(rows), sample_id=sid, tools_kwargs=kg_tools_kwargs(sid, dataset),
                             question=question, topic_entities=topics,
                             hops=shortest_hops(triples, topics, a_entity or gold), answer_entities=a_entity,
                             num_triples=len(triples)))
    if not rows:
        raise ValueError(f"{', '.join([paths] if isinstance(paths, str) else paths)}: no row has an answer")
    return rows, graphs, counts
