"""GSM8K -> our rows.

Input, exactly as published: the Hugging Face parquet files of `openai/gsm8k` (config `main`:
`main/train-00000-of-00001.parquet`, `main/test-00000-of-00001.parquet`; `socratic` has the same columns) or the
original jsonl of github.com/openai/grade-school-math (`grade_school_math/data/{train,test}.jsonl`); a `.json`
list of the same records works too. Columns: `question: string`, `answer: string`; the answer is a worked
solution with `<<a*b=c>>` calculator annotations whose last line is `#### <number>` (numbers may carry thousands
commas, "#### 1,000"). Extra columns are ignored.

The ground truth is the number after the last `####`, with thousands commas (and a `$`) removed ("1,200" ->
"1200"). The full reference solution is kept as `extra_info.solution`. A missing column, a non-string value or an
answer without its `#### <number>` line is a one-line ValueError naming the file, row and column.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq

from agent_rl.data.parquet_io import read_inputs
from agent_rl.tasks.arith.rows import ABILITY, math_prompt, math_tools_kwargs
from agent_rl.tasks.rows import make_row

DATA_SOURCE = "gsm8k"
REQUIRED = ("question", "answer")
SCHEMA_TEXT = "question: string, answer: string ending in '#### <number>'"
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")


def final_number(answer: str, where: str) -> str:
    """The normalised number after the last '####' of a GSM8K answer."""
    if "####" not in answer:
        raise ValueError(f"{where}: column 'answer' has no '#### <number>' line (GSM8K answers end with it)")
    raw = answer.rsplit("####", 1)[1].strip()
    value = raw.replace(",", "").replace("$", "").strip().rstrip(".")
    if not _NUMBER.match(value):
        raise ValueError(f"{where}: column 'answer': final answer {raw!r} is not a number")
    if value.startswith("+"):
        value = value[1:]
    if "." in value:
        value = value.rstrip("0").rstrip(".") or "0"
    return value


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)


def check_parquet_schema(path: str) -> None:
    """One-line ValueError naming the first missing or non-string GSM8K column of a parquet file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: cannot read as parquet ({str(e).splitlines()[0]})") from None
    for col in REQUIRED:
        idx = schema.get_field_index(col)
        if idx < 0:
            raise ValueError(f"{path}: missing column {col!r} (GSM8K schema: {SCHEMA_TEXT})")
        t = schema.field(idx).type
        if not _is_string(t):
            raise ValueError(f"{path}: column {col!r} has type {t}, expected string (GSM8K schema: {SCHEMA_TEXT})")


def convert_gsm8k(paths: Union[str, Sequence[str]], split: str) -> List[Dict[str, Any]]:
    """Rows of split `split` from one or more GSM8K files (sample ids gsm8k-<split>-<n>)."""
    for path in [paths] if isinstance(paths, str) else paths:
        if path.endswith(".parquet"):
            check_parquet_schema(path)
    rows = []
    for path, i, rec in read_inputs(paths):
        where = f"{path} row {i}"
        for col in REQUIRED:
            if rec.get(col) is None:
                raise ValueError(f"{path}: row {i} is missing column {col!r} (GSM8K needs {', '.join(REQUIRED)})")
            if not isinstance(rec[col], str):
                raise ValueError(f"{where}: column {col!r} must be a string, got {type(rec[col]).__name__}")
        question, answer = rec["question"], rec["answer"]
        gt = final_number(answer, where)
        idx = len(rows)
        sid = f"{DATA_SOURCE}-{split}-{idx:06d}"
        rows.append(make_row(prompt=math_prompt(question), data_source=DATA_SOURCE, ability=ABILITY, ground_truth=gt,
                             split=split, index=idx, sample_id=sid, tools_kwargs=math_tools_kwargs(gt), question=question,
                             answer=gt, solution=answer))
    return rows
