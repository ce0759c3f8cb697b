"""Row files -> rows -> prompt batches.

`load_rows(files)` reads parquet files of our row schema (mixed tasks across files are fine) and checks
every row (`schema.row_problem`, with the tasks' rules when given: `agent_rl.tasks.rows.rules_for`): a bad row is a one-line ValueError naming the file, the row and the
field, or, with `skip_invalid=True`, is dropped and counted.
`PromptLoader` yields batches epoch after epoch, reshuffled per epoch with `Random(seed + epoch)`,
and resumes exactly from `state_dict()` (mid-epoch included); `last_indices` are the positions (in `rows`) of the
batch it yielded last (the per-row prompt-hint decision keys on them, `hints.py`).
"""
from __future__ import annotations

import random
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from agent_rl.data.parquet_io import read_table
from agent_rl.data.schema import REQUIRED_COLUMNS, Rules, row_problem


def _drop_nulls(tools_kwargs: Any) -> Any:
    """Struct unification fills absent keys with None; remove them so no tool gets None kwargs."""
    if not isinstance(tools_kwargs, dict):
        return tools_kwargs
    out = {}
    for name, kw in tools_kwargs.items():
        if kw is None:
            continue
        if isinstance(kw, dict):
            kw = {k: ({a: b for a, b in v.items() if b is not None} if isinstance(v, dict) else v)
                  for k, v in kw.items() if v is not None}
        out[name] = kw
    return out


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_rows(files: Union[str, Sequence[str]], *, skip_invalid: bool = False,
              check: Optional[Callable[[Dict[str, Any]], Any]] = None, rules: Optional[Rules] = None,
              log: Optional[Callable[[str], None]] = None,
              stats: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """All valid rows of `files` (parquet, our schema) as dicts, in file order.

    Every row is checked with `schema.row_problem` (`rules`: data_source -> what its task requires of its rows,
    `agent_rl.tasks.rows.rules_for`; without it, what every row needs) and then `check(row)` (optional, e.g. the trainer's
    reward-function look-up; it raises ValueError for a row it cannot serve). The first bad row raises
    `ValueError("<file> row <i>: <field>: <problem>")` (the trainer reports it as a config error, exit 2),
    unless `skip_invalid`: then bad rows are dropped, `log` (default: stderr) gets one line per file with the
    count and the first problem, and `stats` (when given) receives {"rows", "skipped", "skipped_by_file"}.
    A file (or file list) left with no valid rows is still an error.
    """
    if isinstance(files, str):
        files = [files]
    files = list(files or [])
    if not files:
        raise ValueError("no data files given")
    log = log or _stderr
    rows: List[Dict[str, Any]] = []
    skipped_by_file: Dict[str, int] = {}
    for path in files:
        table = read_table(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: missing required column {missing[0]!r} (has {table.column_names})")
        if table.num_rows == 0:
            raise ValueError(f"{path}: file has no rows")
        skipped, first = 0, None
        for i, row in enumerate(table.to_pylist()):
            problem = row_problem(row, rules)
            if problem is None:
                extra = row.get("extra_info")
                if isinstance(extra, dict) and "tools_kwargs" in extra:
                    extra["tools_kwargs"] = _drop_nulls(extra["tools_kwargs"]) or {}
                if check is not None:
                    try:
                        check(row)
                    except ValueError as e:
                        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
            if problem is not None:
                if not skip_invalid:
                    raise ValueError(f"{path} row {i}: {problem} "
                                     "(fix the row, or drop invalid rows with data.skip_invalid_rows=true)")
                skipped += 1
                first = first or f"row {i}: {problem}"
                continue
            rows.append(row)
        if skipped:
            skipped_by_file[path] = skipped
            log(f"{path}: skipped {skipped} invalid row(s) of {table.num_rows} (data.skip_invalid_rows); first: {first}")
            if skipped == table.num_rows:
                raise ValueError(f"{path}: every row is invalid; first: {first}")
    if stats is not None:
        stats.update({"rows": len(rows), "skipped": sum(skipped_by_file.values()), "skipped_by_file": skipped_by_file})
    return rows


def batched(rows: Sequence[Any], batch_size: int) -> Iterator[List[Any]]:
    """One ordered pass in batches (the last may be short): for validation."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(rows), batch_size):
        yield list(rows[i:i + batch_size])


class PromptLoader:
    """Endless iterator over batches of rows; `epoch` counts completed passes."""

    def __init__(self, rows: Sequence[Dict[str, Any]], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not rows:
            raise ValueError("PromptLoader: no rows")
        if drop_last and batch_size > len(rows):
            raise ValueError(f"PromptLoader: batch_size {batch_size} > {len(rows)} rows with drop_last=True")
        self.rows = list(rows)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self._epoch = 0
        self._pos = 0  # next batch index within the epoch
        self._order_epoch: Optional[int] = None
        self._order: List[int] = []
        self.last_indices: List[int] = []

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def position(self) -> int:
        return self._pos

    def _order_for(self, epoch: int) -> List[int]:
        if self._order_epoch != epoch:
            order = list(range(len(self.rows)))
            if self.shuffle:
                random.Random(self.seed + epoch).shuffle(order)
            self._order, self._order_epoch = order, epoch
        return self._order

    def __iter__(self) -> "PromptLoader":
        return self

    def __next__(self) -> List[Dict[str, Any]]:
        order = self._order_for(self._epoch)
        start = self._pos * self.batch_size
        self.last_indices = list(order[start:start + self.batch_size])
        batch = [self.rows[i] for i in self.last_indices]
        self._pos += 1
        if self._pos >= len(self):
            self._epoch, self._pos = self._epoch + 1, 0
        return batch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self._epoch, "position": self._pos, "seed": self.seed, "num_rows": len(self.rows),
                "batch_size": self.batch_size}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        for key, mine in (("num_rows", len(self.rows)), ("batch_size", self.batch_size), ("seed", self.seed)):
            if key in state and int(state[key]) != mine:
                raise ValueError(f"PromptLoader state has {key}={state[key]}, this loader has {mine}: data or config changed")
        pos = int(state["position"])
        if not 0 <= pos < len(self):
            raise ValueError(f"PromptLoader state position {pos} out of range [0, {len(self)})")
        self._epoch, self._pos = int(state["epoch"]), pos
