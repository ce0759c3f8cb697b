"""Gold demonstrations of arithmetic rows: one calculator call on the row's expression, then the answer (for `sft.*`).

A demonstration is the solution the prompt's example shows, in two assistant turns:

    <tool_call>{"name": "calculator", "arguments": {"expression": <extra_info.expression>}}</tool_call>
    tool: the calculator's reply
    <answer>that reply</answer>

The reply is the real tool's: the `calculator` class the tool YAML names, built by the tool loader and called
through the tool runtime (argument validation, normalisation) as in a rollout. A row without an expression,
whose call fails (`Error: ...`), or whose result is not the gold answer gets no demonstration (counted in the
summary). File format: `demos.py` (the TRL / verl multi-turn SFT shape, shared with `kg_demos`).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent_rl.data.demos import DEMOS_FILENAME, answer_text, demo_rows, tool_call_text, tool_message, write_demos
from agent_rl.tasks.arith.rows import CALCULATOR_TOOL as CALCULATOR
DEFAULT_TOOL_CONFIG = "configs/tool_config/arith_tool_config.yaml"


def tool_config_path(path: Optional[str] = None) -> str:
    """`path` (None: the default); a relative one missing here is looked up in the checkout (so the default works
    from any folder)."""
    path = path or DEFAULT_TOOL_CONFIG
    if os.path.isabs(path) or os.path.exists(path):
        return path
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    in_checkout = os.path.join(root, path)
    return in_checkout if os.path.exists(in_checkout) else path


def _same_number(text: str, gold: Any) -> bool:
    try:
        return float(text) == float(str(gold))
    except ValueError:
        return False


async def arith_demonstration(row: Dict[str, Any], runtime) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    """(messages after the prompt, "") or (None, why not). `runtime`: a `ToolRuntime` with the calculator."""
    extra = row.get("extra_info") or {}
    expression = extra.get("expression")
    gold = (row.get("reward_model") or {}).get("ground_truth")
    if not isinstance(expression, str) or not expression.strip() or gold in (None, ""):
        return None, "no_expression"
    args = {"expression": expression}
    async with runtime.session(str(extra.get("sample_id", "")), extra.get("tools_kwargs")) as session:
        rec = await session.call(CALCULATOR, args)
    if not rec.succeeded or rec.observation.startswith("Error:"):
        return None, "tool_error"
    if not _same_number(rec.observation, gold):
        return None, "answer_mismatch"
    return [{"role": "assistant", "content": tool_call_text(CALCULATOR, args)},
            tool_message(CALCULATOR, rec.observation),
            {"role": "assistant", "content": answer_text([rec.observation])}], ""


def build_arith_demos(rows: Sequence[Dict[str, Any]], tool_config: Optional[str] = None
                      ) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """Demonstration rows of `rows` and a count of the rows without one, by reason. The calculator is the one
    `tool_config` declares (default DEFAULT_TOOL_CONFIG); observations are not cut here (the SFT encoder cuts
    them like live ones)."""
    from agent_rl.tool_runtime.runtime import ToolRuntime

    runtime = ToolRuntime.from_yaml(tool_config_path(tool_config), max_tool_response_tokens=None, only=[CALCULATOR])

    async def run_all():
        try:
            return [await arith_demonstration(row, runtime) for row in rows]
        finally:
            await runtime.close()

    return demo_rows(rows, asyncio.run(run_all()))


def write_arith_demos(data_dir: str, out: Optional[str] = None, split: str = "train",
                      tool_config: Optional[str] = None) -> Dict[str, Any]:
    """Demonstrations of `<data_dir>/<split>.parquet` -> `out` (default `<data_dir>/sft.parquet`).
    Returns {file, demos, rows, skipped}."""
    from agent_rl.data.loader import load_rows
    from agent_rl.tasks.rows import rules_for

    rows = load_rows(os.path.join(data_dir, f"{split}.parquet"), rules=rules_for)
    demos, skipped = build_arith_demos(rows, tool_config)
    if not demos:
        raise ValueError(f"{data_dir}: no {split} row has a demonstration ({skipped})")
    out = write_demos(demos, out or os.path.join(data_dir, DEMOS_FILENAME))
    return {"file": out, "demos": len(demos), "rows": len(rows), "skipped": dict(sorted(skipped.items()))}


def demo_plan(cfg, folder: str, out: str):
    """The registry's demos hook: the run's calculator when its tool YAML declares one, else the default arith YAML."""
    import os
    from functools import partial

    from agent_rl.config.tool_yaml import tool_names

    tc = cfg.tools.config_path
    tc = tc if tc and os.path.isfile(tc) and CALCULATOR in tool_names(tc) else None
    cmd = f"arith-demos --data {folder} --out {out}" + (f" --tool-config {tc}" if tc else "")
    return "arithmetic", cmd, partial(write_arith_demos, folder, out=out, tool_config=tc)
