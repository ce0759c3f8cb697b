"""Deterministic, atomic parquet writing and checked reading of row files.

Same rows -> byte-identical file: one row group, fixed compression, no pandas metadata, and the
file is written to `<path>.tmp` and renamed into place.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from agent_rl.data.schema import Rules, validate_row


def write_rows(path: str, rows: Sequence[Dict[str, Any]], rules: Optional[Rules] = None) -> str:
    """Validate (`schema.validate_row`, with the tasks' `rules` when given) and write `rows` to `path` (parquet);
    returns the path."""
    if not rows:
        raise ValueError(f"{path}: refusing to write an empty row file")
    for i, row in enumerate(rows):
        validate_row(row, where=f"{path} row {i}", rules=rules)
    table = pa.Table.from_pylist(list(rows))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp, compression="zstd", row_group_size=max(len(rows), 1), write_statistics=False,
                   store_schema=True)
    os.replace(tmp, path)
    return path


def read_table(path: str) -> pa.Table:
    """Read a parquet file with a one-line error naming it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: cannot read as parquet ({str(e).splitlines()[0]})") from None


def iter_inputs(paths: Sequence[str], stream_parquet: Optional[Callable[[str], Iterator[Tuple[str, int, Dict[str, Any]]]]] = None
                ) -> Iterator[Tuple[str, int, Dict[str, Any]]]:
    """(path, row number, record) of every row of every input file, in order; each file must have rows.
    `stream_parquet(path)`, when given, yields a parquet file's rows itself (a converter that checks the schema
    first and reads in batches) instead of reading the file whole."""
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise ValueError("no input files given")
    for path in paths:
        if stream_parquet is not None and path.endswith(".parquet"):
            if not os.path.exists(path):
                raise FileNotFoundError(f"input file not found: {path}")
            yield from stream_parquet(path)
            continue
        records = read_records(path)
        if not records:
            raise ValueError(f"{path}: no rows")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"{path} row {i}: not an object")
            yield path, i, rec


def read_inputs(paths: Sequence[str]) -> List[Tuple[str, int, Dict[str, Any]]]:
    """`iter_inputs` as a list."""
    return list(iter_inputs(paths))


def read_records(path: str) -> List[Dict[str, Any]]:
    """Rows of a .parquet, .jsonl or .json (list of objects) file as dicts (for converters)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if path.endswith(".parquet"):
        return read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
            if not isinstance(data, list):
                raise ValueError(f"{path}: expected a JSON list of objects")
            return data
    return read_jsonl(path)


def read_jsonl(path: str) -> List[Any]:
    """One JSON value per non-blank line; a bad line is an error naming the file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON line ({e.msg})") from None
    return out
