import json

import pytest

from agent_rl.cli.main import main
from agent_rl.data.loader import load_rows
from agent_rl.tasks.arith.rows import MATH_INSTRUCTIONS, math_prompt
from agent_rl.tasks.kg.rows import KG_INSTRUCTIONS, kg_prompt


def test_generate_cli(tmp_path, capsys):
    out = str(tmp_path / "kg")
    assert main(["data", "generate", "kg", "--out", out, "--seed", "2", "--train", "30", "--val", "5", "--test", "5",
                 "--hops", "1:0.5,2:0.5"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}/train.parquet: 30 rows | hops" in text and "answers 1:" in text
    assert f"wrote {out}/kg_store.json: 40 subgraphs" in text
    assert {r["extra_info"]["hops"] for r in load_rows(f"{out}/train.parquet")} <= {1, 2}
    assert main(["data", "generate", "arith", "--out", str(tmp_path / "ar"), "--train", "12", "--val", "0",
                 "--test", "3"]) == 0
    text = capsys.readouterr().out
    assert "train.parquet: 12 rows | steps" in text and "test.parquet: 3 rows" in text and "val.parquet" not in text


def test_convert_cli_and_errors(tmp_path, capsys):
    src = tmp_path / "g.jsonl"
    src.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    assert main(["data", "convert", "gsm8k", "--input", str(src), "--split", "val", "--out", str(tmp_path / "o")]) == 0
    assert "val.parquet: 1 rows" in capsys.readouterr().out
    assert main(["data", "convert", "webqsp", "--input", str(tmp_path / "none.parquet"), "--out", str(tmp_path)]) == 2
    assert "none.parquet" in capsys.readouterr().err
    assert main(["data", "generate", "kg", "--out", str(tmp_path / "x"), "--hops", "9:1"]) == 2
    assert "bad --hops item" in capsys.readouterr().err
    assert main(["data", "generate", "arith", "--out", str(tmp_path / "y"), "--hops", "1:1", "--train", "2"]) == 2


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "generate", "--help"], ["data", "convert", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_prompts_short_and_complete(tokenizer):
    msgs = kg_prompt("Where was the director of The Silent Orchard born?", ["The Silent Orchard"])
    text = msgs[0]["content"]
    assert msgs[0]["role"] == "user" and "Topic entities: The Silent Orchard" in text
    for action in ("get_relations_out", "get_relations_in", "get_entities_out", "get_entities_in"):
        assert action in KG_INSTRUCTIONS
    assert "<answer>" in text and '" | "' in text and "<tool_call>" in text and '"parameters"' not in text
    assert len(tokenizer(text)["input_ids"]) < 250
    m = math_prompt("What is 2 + 3?")[0]["content"]
    assert "calculator" in MATH_INSTRUCTIONS and "calc_gsm8k_reward" in m and "<answer>" in m
    assert len(tokenizer(m)["input_ids"]) < 200
    with pytest.raises(ValueError, match="topic entities"):
        kg_prompt("Who?", [])
