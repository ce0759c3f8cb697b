"""Gold arithmetic demonstrations: one calculator call on the row's expression whose observation is the real
calculator's reply (through the tool YAML and the tool runtime), then that number as the answer; rows whose call
fails or whose result is not the gold answer are skipped and counted; the file encodes in the rollout token
stream with loss on the assistant turns only; the CLI and the driver's `prepare_demos` write it."""
import asyncio
import os
import pathlib
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from agent_rl.config.load import ConfigError, compose
from agent_rl.tasks.arith.demos import build_arith_demos, write_arith_demos
from agent_rl.tasks.generate import generate_dataset
from agent_rl.data.loader import load_rows
from agent_rl.tasks.arith.rows import ABILITY, math_prompt, math_tools_kwargs
from agent_rl.tasks.rows import make_row
from agent_rl.orchestration import prepare
from agent_rl.orchestration.warm_start import load_demo_chats
from agent_rl.rewards.text import final_answer, numbers_match, parse_number
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.rollout.parser import parse_tool_calls
from agent_rl.tool_runtime.loader import load_tools
from agent_rl.tool_runtime.runtime import ToolRuntime
from agent_rl.training.sft import DemoSet, encode_demo

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARITH_YAML = str(ROOT / "configs" / "tool_config" / "arith_tool_config.yaml")


def _row(expression, answer, i=0):
    gt = str(answer)
    return make_row(prompt=math_prompt(f"Problem {i}?"), data_source="arith_synth", ability=ABILITY, ground_truth=gt, split="train",
                    index=i, sample_id=f"arith_synth-train-{i:06d}", tools_kwargs=math_tools_kwargs(gt),
                    question=f"Problem {i}?", answer=answer, steps=2, expression=expression, theme="shop")


def _calculator_text(expression):
    """The reply of the calculator class the YAML names, called directly."""
    calc = next(t for t in load_tools(ARITH_YAML) if t.name == "calculator")
    return asyncio.run(calc.execute("x", {"expression": expression}))[0].text


@pytest.fixture(scope="module")
def arith_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("arith")
    generate_dataset("arith", str(d), sizes={"train": 40, "val": 4, "test": 0})
    return d


def test_demonstration_of_a_known_row():
    row, div = _row("8 * 12 - 44 + 7 * 13", 143), _row("(8 * 12 + 4) / 4", 25, 1)
    demos, skipped = build_arith_demos([row, div], ARITH_YAML)
    assert skipped == {} and len(demos) == 2
    assert demos[0] == {
        "messages": row["prompt"] + [
            {"role": "assistant",
             "content": '<tool_call>\n{"name": "calculator", "arguments": {"expression": "8 * 12 - 44 + 7 * 13"}}\n</tool_call>'},
            {"role": "tool", "name": "calculator", "content": "143"},
            {"role": "assistant", "content": "<answer>143</answer>"}],
        "data_source": "arith_synth", "extra_info": {"sample_id": "arith_synth-train-000000", "turns": 2}}
    # the observation is the calculator's own text (a true division prints as "25", not "25.0")
    assert _calculator_text("(8 * 12 + 4) / 4") == "25" == demos[1]["messages"][-2]["content"]
    assert demos[1]["messages"][-1]["content"] == "<answer>25</answer>"


def test_rows_without_a_demonstration_are_counted():
    rows = [_row("8 * 12 - 44 + 7 * 13", 143, 0),
            _row("8 * 12 - 44 +", 143, 1),           # corrupted: the calculator answers "Error: invalid syntax ..."
            _row("5 / 0", 1, 2),                     # the calculator refuses
            _row("8 * 12 - 44 + 7 * 13", 144, 3),    # the gold answer disagrees with the calculator
            _row("", 5, 4)]                          # no expression
    assert _calculator_text("8 * 12 - 44 +").startswith("Error:")
    demos, skipped = build_arith_demos(rows, ARITH_YAML)
    assert [d["extra_info"]["sample_id"] for d in demos] == ["arith_synth-train-000000"]
    assert skipped == {"tool_error": 2, "answer_mismatch": 1, "no_expression": 1}


def test_generated_rows_replay_to_the_gold_answer(arith_dir):
    rows = load_rows(str(arith_dir / "train.parquet"))
    demos, skipped = build_arith_demos(rows)                 # the default tool YAML
    assert len(demos) == len(rows) and skipped == {}
    for row, demo in zip(rows, demos):
        msgs = demo["messages"]
        assert msgs[:len(row["prompt"])] == row["prompt"]
        call, obs, answer = msgs[len(row["prompt"]):]
        parsed = parse_tool_calls(call["content"])
        assert len(parsed.calls) == 1 and parsed.calls[0].ok and parsed.calls[0].name == "calculator"
        assert parsed.calls[0].arguments == {"expression": row["extra_info"]["expression"]}
        assert obs == {"role": "tool", "name": "calculator", "content": _calculator_text(row["extra_info"]["expression"])}
        pred = parse_number(final_answer([answer["content"]]))
        assert numbers_match(pred, parse_number(row["reward_model"]["ground_truth"]))


def test_file_encodes_with_loss_on_assistant_turns_only(arith_dir, tmp_path, tokenizer):
    out = tmp_path / "sft.parquet"
    s = write_arith_demos(str(arith_dir), out=str(out))
    assert s == {"file": str(out), "demos": 40, "rows": 40, "skipped": {}}
    chats = load_demo_chats([str(out)])                      # what the warm-start reads
    rt = ToolRuntime.from_yaml(ARITH_YAML, tokenizer=tokenizer, max_tool_response_tokens=256)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    eot = tokenizer.decode(renderer.end_of_turn_ids)
    in_memory, _ = build_arith_demos(load_rows(str(arith_dir / "train.parquet")))
    for chat, mem in zip(chats, in_memory):
        ids, mask = encode_demo(renderer, chat, rt.truncate)
        assert (ids, mask) == encode_demo(renderer, mem["messages"], rt.truncate)   # the file round trip changes nothing
        assert renderer.drift(chat, ids) == 0                                     # = a full re-render of the chat
        n_prompt = len(renderer.prompt_ids(chat[:1]))
        assert ids[:n_prompt] == renderer.prompt_ids(chat[:1]) and not any(mask[:n_prompt])
        on = [i for i, m in zip(ids, mask) if m]
        call, answer = chat[1]["content"], chat[3]["content"]
        assert tokenizer.decode(on) == call + eot + answer + eot                  # assistant turns, nothing else
        assert chat[2]["content"] in tokenizer.decode([i for i, m in zip(ids[n_prompt:], mask[n_prompt:]) if not m])
    demos, dropped = DemoSet.from_messages(chats, renderer, max_length=2048, truncate=rt.truncate)
    assert len(demos) == 40 and dropped == 0
    batch = demos.next_batch(4, pad_id=0)
    assert (batch["loss_mask"] <= batch["attention_mask"]).all() and batch["loss_mask"].sum() > 0


def test_cli_writes_the_file(arith_dir, tmp_path):
    out = tmp_path / "demos.parquet"
    r = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "data", "arith-demos", "--data", str(arith_dir),
                        "--out", str(out), "--split", "val"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {out}: 4 demonstrations of 4 rows | skipped none"
    table = pq.read_table(out)
    assert table.num_rows == 4 and {"messages", "data_source", "extra_info"} <= set(table.column_names)
    bad = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "data", "arith-demos", "--data", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr
    no_calc = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "data", "arith-demos", "--data", str(arith_dir),
                              "--tool-config", str(ROOT / "configs" / "tool_config" / "kg_query_tool_config.yaml")],
                             capture_output=True, text=True)
    assert no_calc.returncode == 2 and "no tool named 'calculator'" in no_calc.stderr


def _cfg(tmp_path, gen, check_paths=True):
    data = tmp_path / "data" / "arith"      # the default folder of arith (generated only there)
    return compose(["model.path=embedded", f"data.train_files=[{data}/train.parquet]", f"data.val_files=[{data}/val.parquet]",
                    f"data.generate_if_missing={gen}", f"tools.config_path={ARITH_YAML}", "tools.kg_store=null",
                    "sft.steps=2", f"sft.files=[{data}/sft.parquet]"], check_paths=check_paths)


def test_prepare_demos_writes_arith_demonstrations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, "arith")          # a missing sft file is no config error when it will be generated
    lines = []
    prepare.prepare_data(cfg, log=lines.append)
    prepare.prepare_demos(cfg, log=lines.append)
    sft = tmp_path / "data" / "arith" / "sft.parquet"
    assert sft.exists() and pq.read_table(sft).num_rows == 2000
    assert f"agent-rl data arith-demos --data {tmp_path / 'data' / 'arith'} --out {sft} --tool-config {ARITH_YAML}" in lines[-2]
    assert lines[-1] == "  2000 demonstrations of 2000 rows (skipped: none)"
    mtime = os.path.getmtime(sft)
    prepare.prepare_demos(cfg, log=lines.append)               # present: kept
    assert os.path.getmtime(sft) == mtime


def test_prepare_demos_errors(tmp_path):
    msg = "sft.files: file not found: .*sft.parquet .*`agent-rl data arith-demos --data DIR`"
    with pytest.raises(ConfigError, match=msg):
        prepare.prepare_demos(_cfg(tmp_path, "null", check_paths=False), log=lambda s: None)
    (tmp_path / "data" / "arith").mkdir(parents=True)
    for split in ("train", "val"):
        (tmp_path / "data" / "arith" / f"{split}.parquet").write_bytes(b"")   # only existence is checked here
    with pytest.raises(ConfigError, match=msg):
        _cfg(tmp_path, "null")
    (tmp_path / "data" / "arith" / "train.parquet").unlink()          # nothing to demonstrate
    with pytest.raises(ConfigError, match="sft.files: cannot write arithmetic demonstrations to .*train.parquet"):
        prepare.prepare_demos(_cfg(tmp_path, "arith", check_paths=False), log=lambda s: None)
