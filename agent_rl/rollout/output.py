"""Trajectory JSONL: one JSON object per line per trajectory, with the decoded text of each turn.

    write_trajectories(path, trajs, tokenizer=None, step=None)   # creates folders, writes atomically
    read_trajectories(path) -> list[dict]
    step_path(folder, step) -> "<folder>/step_000012.jsonl"

Each object is `Trajectory.to_json()` (ids, loss mask, log-probs, turns with tool calls, rewards...)
plus `id`, `step`, `num_generated`, per turn `policy_version` (when recorded) and, with a tokenizer,
`prompt_text` and per turn `observation_text` (the decoded observation ids, exactly what the model saw).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Optional

from agent_rl.rollout.trajectory import Trajectory


def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf floats -> None (JSON has no NaN), tuples -> lists, unknown objects -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    return str(value)


def trajectory_record(traj: Trajectory, tokenizer=None, step: Optional[int] = None) -> Dict[str, Any]:
    rec = traj.to_json()
    rec["id"] = traj.id
    rec["num_generated"] = traj.num_generated
    if step is not None:
        rec["step"] = step
    for t, out in zip(traj.turns, rec["turns"]):
        v = getattr(t, "policy_version", None)
        if v is not None:
            out["policy_version"] = v
    if tokenizer is not None:
        rec["prompt_text"] = tokenizer.decode(traj.prompt_ids, skip_special_tokens=False)
        for t, out in zip(traj.turns, rec["turns"]):
            out["observation_text"] = tokenizer.decode(t.observation_ids, skip_special_tokens=False) if t.observation_ids else ""
    return _clean(rec)


def step_path(folder: str, step: int) -> str:
    return os.path.join(folder, f"step_{int(step):06d}.jsonl")


def write_trajectories(path: str, trajs: Iterable[Trajectory], tokenizer=None, step: Optional[int] = None) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for t in trajs:
            f.write(json.dumps(trajectory_record(t, tokenizer, step), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_trajectories(path: str) -> List[Dict[str, Any]]:
    from agent_rl.data.parquet_io import read_jsonl

    return read_jsonl(path)
