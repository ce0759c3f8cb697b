import ast
import operator
import os

import pytest

from agent_rl.tasks.generate import generate_dataset
from agent_rl.data.loader import load_rows
from agent_rl.tasks.rows import validate_row

SIZES = {"train": 300, "val": 40, "test": 40}
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(expr):
    """Exact integer evaluation; division must be exact."""
    def ev(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Div):
                assert a % b == 0, expr
                return a // b
            return OPS[type(node.op)](a, b)
        raise AssertionError(f"unexpected node in {expr}")
    return ev(ast.parse(expr, mode="eval").body)


@pytest.fixture(scope="module")
def arith(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("arith"))
    s = generate_dataset("arith", out, seed=3, sizes=SIZES)
    return out, s, load_rows([s["files"][k] for k in ("train", "val", "test")])


def test_determinism(arith, tmp_path):
    out, _, _ = arith
    generate_dataset("arith", str(tmp_path / "a"), seed=3, sizes=SIZES)
    generate_dataset("arith", str(tmp_path / "b"), seed=4, sizes=SIZES)
    for name in ("train.parquet", "val.parquet", "test.parquet"):
        ref = open(os.path.join(out, name), "rb").read()
        assert open(tmp_path / "a" / name, "rb").read() == ref
        assert open(tmp_path / "b" / name, "rb").read() != ref
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path / "a"))


def test_rows_and_answers(arith):
    _, s, rows = arith
    assert s["rows"] == SIZES
    questions = [r["extra_info"]["question"] for r in rows]
    assert len(set(questions)) == len(questions)
    ids = [r["extra_info"]["sample_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    steps = set()
    themes = set()
    for r in rows:
        validate_row(r)
        e = r["extra_info"]
        assert r["data_source"] == "arith_synth" and r["ability"] == "math"
        assert isinstance(e["answer"], int) and e["answer"] > 0
        assert r["reward_model"]["ground_truth"] == str(e["answer"])
        assert e["tools_kwargs"] == {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": str(e["answer"])}}}
        assert evaluate(e["expression"]) == e["answer"]
        ops = sum(e["expression"].count(c) for c in "+-*/")
        assert ops == e["steps"] and 2 <= e["steps"] <= 4
        # every number of the expression appears in the question text
        for tok in e["expression"].replace("(", " ").replace(")", " ").split():
            if tok.isdigit():
                assert tok in e["question"], (tok, e["question"])
        assert e["question"] in r["prompt"][0]["content"]
        steps.add(e["steps"])
        themes.add(e["theme"])
    assert steps == {2, 3, 4} and len(themes) >= 6
    assert any("/" in r["extra_info"]["expression"] for r in rows)
    assert any("*" in r["extra_info"]["expression"] for r in rows)
