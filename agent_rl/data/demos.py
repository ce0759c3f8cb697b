"""What the tasks' demonstration writers (`agent_rl/tasks/<task>/demos.py`) share: the message texts, the row shape, the file.

File format (TRL / verl multi-turn SFT): one row per demonstration, `messages` = the row's prompt messages
followed by assistant / tool messages, plus `data_source` and `extra_info` (`sample_id`, `turns`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent_rl.data.prompts import ANSWER_SEPARATOR

DEMOS_FILENAME = "sft.parquet"  # next to train.parquet in a generated data folder

Messages = List[Dict[str, Any]]


def tool_call_text(name: str, arguments: Dict[str, Any]) -> str:
    """An assistant turn with one tool call, in the prompts' Hermes format."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def tool_message(name: str, content: str) -> Dict[str, Any]:
    """A tool message as the agent loop appends it."""
    return {"role": "tool", "name": name, "content": content}


def answer_text(answers: Sequence[str]) -> str:
    return f"<answer>{ANSWER_SEPARATOR.join(answers)}</answer>"


def demo_rows(rows: Sequence[Dict[str, Any]], results: Sequence[Tuple[Optional[Messages], str]]
              ) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """Demonstration rows of `rows` from their `(messages after the prompt, "")` or `(None, why not)` results,
    and a count of the rows without one, by reason."""
    demos: List[Dict[str, Any]] = []
    skipped: Dict[str, int] = {}
    for row, (msgs, why) in zip(rows, results):
        if msgs is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        demos.append({"messages": [dict(m) for m in row["prompt"]] + msgs, "data_source": row.get("data_source", ""),
                      "extra_info": {"sample_id": str(row["extra_info"]["sample_id"]), "turns": len(msgs) // 2 + 1}})
    return demos, skipped


def write_demos(demos: Sequence[Dict[str, Any]], out: str) -> str:
    """Write demonstration rows to `out` (parquet, atomically); returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp"
    pq.write_table(pa.Table.from_pylist(list(demos)), tmp, compression="zstd", row_group_size=len(demos),
                   write_statistics=False)
    os.replace(tmp, out)
    return out
