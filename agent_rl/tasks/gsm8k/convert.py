"""GSM8K (jsonl / json / parquet with `question` and `answer` ending in `#### n`) -> our rows.

The ground truth is the number after the last `####`, with thousands commas removed ("1,200" ->
"1200"). The full reference solution is kept as `extra_info.solution`.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Union

from agent_rl.data.parquet_io import read_inputs
from agent_rl.data.prompts import math_prompt
from agent_rl.data.schema import make_row, math_tools_kwargs

DATA_SOURCE = "gsm8k"
REQUIRED = ("question", "answer")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")


def final_number(answer: str, where: str) -> str:
    """The normalised number after the last '####' of a GSM8K answer."""
    if "####" not in answer:
        raise ValueError(f"{where}: answer has no '#### <number>' line")
    raw = answer.rsplit("####", 1)[1].strip()
    value = raw.replace(",", "").replace("$", "").strip().rstrip(".")
    if not _NUMBER.match(value):
        raise ValueError(f"{where}: final answer {raw!r} is not a number")
    if value.startswith("+"):
        value = value[1:]
    if "." in value:
        value = value.rstrip("0").rstrip(".") or "0"
    return value


def convert_gsm8k(paths: Union[str, Sequence[str]], split: str) -> List[Dict[str, Any]]:
    """Rows of split `split` from one or more GSM8K files (sample ids gsm8k-<split>-<n>)."""
    rows = []
    for path, i, rec in read_inputs(paths):
        for col in REQUIRED:
            if rec.get(col) is None:
                raise ValueError(f"{path}: row {i} is missing column {col!r} (GSM8K needs {', '.join(REQUIRED)})")
        question, answer = str(rec["question"]), str(rec["answer"])
        gt = final_number(answer, f"{path} row {i}")
        idx = len(rows)
        sid = f"{DATA_SOURCE}-{split}-{idx:06d}"
        rows.append(make_row(prompt=math_prompt(question), data_source=DATA_SOURCE, ground_truth=gt, split=split,
                             index=idx, sample_id=sid, tools_kwargs=math_tools_kwargs(gt), question=question,
                             answer=gt, solution=answer))
    return rows
