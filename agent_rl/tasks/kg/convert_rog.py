"""RoG-WebQSP / RoG-CWQ parquet -> our rows + KG store (one sample per row).

Input: the parquet shards exactly as published on the Hugging Face hub (`rmanluo/RoG-webqsp`,
`rmanluo/RoG-cwq`, `data/{train,validation,test}-0000K-of-0000N-<hash>.parquet`). Their card declares
(dataset_info.features) `id: string, question: string, answer: sequence<string>, q_entity: sequence<string>,
a_entity: sequence<string>, graph: sequence<sequence<string>>, choices: sequence<null>`, i.e. in Arrow
`string`, `list<string>` and `list<list<string>>`; `graph` holds [head, relation, tail] name triples (RoG's own
`build_graph` unpacks each as `h, r, t` and strips the relation). Extra columns (`choices`, ...) are ignored and
not read. A `.jsonl` / `.json` dump of the same records is accepted too; lists may be lists, tuples or numpy
arrays (what pandas gives for these columns).

The subgraph of a sample is its `graph`; gold answers are `answer` (deduplicated, order kept); topic entities are
`q_entity`; `hops` is the shortest undirected distance in the graph from a topic entity to an answer entity (-1
when no answer entity is reachable). Rows without any answer are skipped (they cannot be scored), and so are rows
without a topic entity (nothing to name in the prompt); both are counted.

A file whose schema differs (missing column, `graph` not a list of lists of strings, `answer` a plain string, ...)
is a one-line ValueError naming the file and the column.
"""
from __future__ import annotations

import sys
from collections import defaultdict, deque
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.parquet as pq

from agent_rl.data.parquet_io import iter_inputs
from agent_rl.data.schema import answer_strings
from agent_rl.tasks.kg.rows import ABILITY, kg_prompt, kg_tools_kwargs
from agent_rl.tasks.rows import make_row

REQUIRED = ("id", "question", "answer", "q_entity", "a_entity", "graph")
DATASETS = ("webqsp", "cwq")
# column -> nesting depth of strings (0: string, 1: list<string>, 2: list<list<string>>), as published
SCHEMA = {"id": 0, "question": 0, "answer": 1, "q_entity": 1, "a_entity": 1, "graph": 2}
_TYPE_NAMES = {0: "string", 1: "list<string>", 2: "list<list<string>>"}
SCHEMA_TEXT = ", ".join(f"{c}: {_TYPE_NAMES[d]}" for c, d in SCHEMA.items())
BATCH_ROWS = 64   # rows per parquet batch: real subgraphs hold thousands of triples each


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
        for nxt in adj[node]:     # the distance does not depend on the visiting order
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, dist + 1))
    return -1


# ---- schema checks -------------------------------------------------------------------------------------------

def _string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)


def _list_type(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or \
        getattr(pa.types, "is_list_view", lambda _: False)(t) or getattr(pa.types, "is_large_list_view", lambda _: False)(t)


def _arrow_matches(t: pa.DataType, depth: int) -> bool:
    if depth == 0:
        return _string_type(t)
    # an all-empty list column may be typed list<null>: it holds no strings, so it is accepted
    return _list_type(t) and (pa.types.is_null(t.value_type) or _arrow_matches(t.value_type, depth - 1))


def check_arrow_schema(path: str, schema: pa.Schema) -> None:
    """One-line ValueError naming the first missing or mistyped RoG column of a parquet file's schema."""
    for col, depth in SCHEMA.items():
        idx = schema.get_field_index(col)
        if idx < 0:
            raise ValueError(f"{path}: missing column {col!r} (RoG schema: {SCHEMA_TEXT})")
        t = schema.field(idx).type
        if not _arrow_matches(t, depth):
            raise ValueError(f"{path}: column {col!r} has type {t}, expected {_TYPE_NAMES[depth]} "
                             f"(RoG schema: {SCHEMA_TEXT})")


def _is_seq(v: Any) -> bool:
    """A list-like value: list, tuple, or numpy array (pandas reads list columns as object arrays of arrays)."""
    return isinstance(v, (list, tuple)) or (type(v).__module__ == "numpy" and hasattr(v, "ndim") and v.ndim == 1)


def _kind(v: Any) -> str:
    return type(v).__name__


def _str_list(value: Any, col: str, where: str) -> List[str]:
    """A list<string> cell as a list (null -> [], null items dropped)."""
    if value is None:
        return []
    if not _is_seq(value):
        raise ValueError(f"{where}: column {col!r} must be a list of strings, got {_kind(value)}")
    out = []
    for j, x in enumerate(value):
        if x is None:
            continue
        if not isinstance(x, str):
            raise ValueError(f"{where}: column {col!r}[{j}] must be a string, got {_kind(x)}")
        out.append(x)
    return out


def _triples(graph: Any, where: str) -> List[List[str]]:
    """The `graph` cell (list of [head, relation, tail] strings) as lists of interned strings."""
    if graph is None:
        return []
    if not _is_seq(graph):
        raise ValueError(f"{where}: column 'graph' must be a list of [head, relation, tail] triples, got {_kind(graph)}")
    # entity names repeat across triples and samples: interning keeps a large split in memory once
    intern = sys.intern
    if not any(isinstance(tr, str) for tr in graph):     # fast path (a real subgraph has thousands of triples)
        try:
            return [[intern(h), intern(r.strip()), intern(t)] for h, r, t in graph]
        except (ValueError, TypeError, AttributeError):
            pass                                          # the loop below names the bad triple
    out = []
    for j, tr in enumerate(graph):
        if not _is_seq(tr) or len(tr) != 3:
            raise ValueError(f"{where}: column 'graph'[{j}] is not a [head, relation, tail] triple "
                             f"(got {_kind(tr)}{'' if not _is_seq(tr) else f' of length {len(tr)}'})")
        h, r, t = tr
        if not (isinstance(h, str) and isinstance(r, str) and isinstance(t, str)):
            raise ValueError(f"{where}: column 'graph'[{j}] must hold 3 strings, got "
                             f"[{_kind(h)}, {_kind(r)}, {_kind(t)}]")
        out.append([intern(str(h)), intern(str(r).strip()), intern(str(t))])
    return out


def _string(value: Any, col: str, where: str) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{where}: column {col!r} must be a string, got {_kind(value)}")


# ---- reading ---------------------------------------------------------------------------------------------------

def _parquet_records(path: str) -> Iterator[Tuple[str, int, Dict[str, Any]]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: cannot read as parquet ({str(e).splitlines()[0]})") from None
    check_arrow_schema(path, pf.schema_arrow)
    if pf.metadata.num_rows == 0:
        raise ValueError(f"{path}: no rows")
    i = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=list(REQUIRED)):
            for rec in batch.to_pylist():
                yield path, i, rec
                i += 1
    except pa.ArrowException as e:
        raise ValueError(f"{path}: cannot read as parquet ({str(e).splitlines()[0]})") from None


def iter_rog_records(paths: Union[str, Sequence[str]]) -> Iterator[Tuple[str, int, Dict[str, Any]]]:
    """(path, row number, record) of every row of every input file; parquet is streamed in batches."""
    for path, i, rec in iter_inputs(paths, stream_parquet=_parquet_records):
        missing = [c for c in REQUIRED if c not in rec]
        if missing:
            raise ValueError(f"{path} row {i}: missing column {missing[0]!r} (RoG schema: {SCHEMA_TEXT})")
        yield path, i, rec


# ---- conversion ------------------------------------------------------------------------------------------------

def rog_rows(records: Iterable[Tuple[str, int, Dict[str, Any]]], dataset: str, split: str, source: str = "input"
             ) -> Tuple[List[Dict[str, Any]], Dict[str, List[List[str]]], Dict[str, int]]:
    """Convert (path, row number, record) triples; see `convert_rog`."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown RoG dataset {dataset!r} (expected one of {DATASETS})")
    rows: List[Dict[str, Any]] = []
    graphs: Dict[str, List[List[str]]] = {}
    seen = set()
    counts = {"skipped_no_answer": 0, "skipped_no_topic": 0, "empty_graph": 0}
    for path, i, rec in records:
        where = f"{path} row {i}"
        missing = [c for c in REQUIRED if c not in rec]
        if missing:
            raise ValueError(f"{where}: missing column {missing[0]!r} (RoG schema: {SCHEMA_TEXT})")
        sid = rec["id"]
        if sid is None:
            raise ValueError(f"{where}: column 'id' is null")
        sid = _string(sid, "id", where)
        if sid in seen:
            raise ValueError(f"{where}: duplicate id {sid!r}")
        seen.add(sid)
        question = rec["question"]
        if question is None:
            raise ValueError(f"{where}: column 'question' is null")
        question = _string(question, "question", where).strip()
        gold = answer_strings(_str_list(rec["answer"], "answer", where))
        topics = answer_strings(_str_list(rec["q_entity"], "q_entity", where))
        a_entity = answer_strings(_str_list(rec["a_entity"], "a_entity", where))
        triples = _triples(rec["graph"], where)
        if not gold:
            counts["skipped_no_answer"] += 1
            continue
        if not topics:    # nothing to name in the prompt, nowhere to start a look-up
            counts["skipped_no_topic"] += 1
            continue
        counts["empty_graph"] += not triples
        graphs[sid] = triples
        if question and question[-1] not in "?.!":
            question += "?"
        rows.append(make_row(prompt=kg_prompt(question, topics), data_source=dataset, ability=ABILITY, ground_truth=gold, split=split,
                             index=len(rows), sample_id=sid, tools_kwargs=kg_tools_kwargs(sid, dataset),
                             question=question, topic_entities=topics,
                             hops=shortest_hops(triples, topics, a_entity or gold), answer_entities=a_entity,
                             num_triples=len(triples)))
    if not rows:
        raise ValueError(f"{source}: no row has an answer")
    return rows, graphs, counts


def convert_rog(paths: Union[str, Sequence[str]], dataset: str, split: str) -> Tuple[List[Dict[str, Any]], Dict[str, List[List[str]]], Dict[str, int]]:
    """Returns (rows, subgraphs by sample id, counts {skipped_no_answer, skipped_no_topic, empty_graph})."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown RoG dataset {dataset!r} (expected one of {DATASETS})")
    source = ", ".join([paths] if isinstance(paths, str) else paths)
    return rog_rows(iter_rog_records(paths), dataset, split, source=source)
