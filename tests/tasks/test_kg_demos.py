"""Gold KG demonstrations: every call is a valid kg_query call, every observation is the KG index's own
answer, a get_entities_* look-up returns a gold answer (what the KG reward's retrieval pays for), the chain
ends at the gold answers, and the turn limit is kept."""
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from agent_rl.tasks.generate import generate_dataset
from agent_rl.tasks.kg.demos import build_kg_demos, write_kg_demos
from agent_rl.data.loader import load_rows
from agent_rl.tasks.kg.reward import gold_names, returns_gold
from agent_rl.rewards.text import final_answer, split_answers
from agent_rl.rollout.parser import parse_tool_calls
from tools.kg_index import KGIndex, canonical_action


@pytest.fixture(scope="module")
def kg_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("kg")
    generate_dataset("kg", str(d), sizes={"train": 60, "val": 0, "test": 0})
    return d


def test_demonstrations_replay_to_the_gold_answers(kg_dir):
    rows = load_rows(str(kg_dir / "train.parquet"))
    index = KGIndex.from_path(str(kg_dir / "kg_store.json"))
    demos, skipped = build_kg_demos(rows, index, max_turns=7)
    assert len(demos) + sum(skipped.values()) == len(rows)
    assert len(demos) >= 0.7 * len(rows) and set(skipped) <= {"too_long"}
    by_id = {r["extra_info"]["sample_id"]: r for r in rows}
    for demo in demos:
        row = by_id[demo["extra_info"]["sample_id"]]
        msgs = demo["messages"]
        assert msgs[:len(row["prompt"])] == row["prompt"]
        turns = msgs[len(row["prompt"]):]
        assert [m["role"] for m in turns] == ["assistant", "tool"] * (len(turns) // 2) + ["assistant"]
        assert len(turns) // 2 + 1 == demo["extra_info"]["turns"] <= 7
        golds = set(gold_names(row["reward_model"]["ground_truth"]))
        retrieved = False
        for call_msg, obs_msg in zip(turns[0::2], turns[1::2]):
            parsed = parse_tool_calls(call_msg["content"])
            assert len(parsed.calls) == 1 and parsed.calls[0].ok and parsed.calls[0].name == "kg_query"
            a = parsed.calls[0].arguments
            res = index.query(row["extra_info"]["sample_id"], a["action"], a["entity"], a.get("relation"))
            assert res.success and obs_msg["content"] == res.result and obs_msg["name"] == "kg_query"
            # the reward's structural check: the entities a get_entities_* look-up returned (kg_query's
            # `entities` metric is the index's `data`), never names in a relation listing
            entities = res.data if canonical_action(a["action"]).startswith("get_entities") else []
            retrieved |= returns_gold(entities, res.result, golds)
        assert retrieved
        answer = split_answers(final_answer([turns[-1]["content"]]))
        assert sorted(answer) == sorted(row["reward_model"]["ground_truth"])


def test_turn_limit_skips_long_chains(kg_dir):
    rows = load_rows(str(kg_dir / "train.parquet"))
    index = KGIndex.from_path(str(kg_dir / "kg_store.json"))
    demos, skipped = build_kg_demos(rows, index, max_turns=3)
    assert demos and skipped["too_long"] > 0
    assert all(d["extra_info"]["turns"] == 3 for d in demos)  # one hop, one entity: relations, entities, answer


def test_cli_writes_messages_parquet(kg_dir, tmp_path):
    out = tmp_path / "demos.parquet"
    r = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "data", "kg-demos", "--data", str(kg_dir),
                        "--out", str(out), "--max-turns", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "demonstrations of 60 rows" in r.stdout
    table = pq.read_table(out)
    assert "messages" in table.column_names and table.num_rows > 0
    assert max(d["turns"] for d in table.column("extra_info").to_pylist()) <= 5
    bad = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "data", "kg-demos", "--data", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_write_refuses_too_few_turns(kg_dir):
    with pytest.raises(ValueError, match="at least 3 turns"):
        write_kg_demos(str(kg_dir), max_turns=2)
