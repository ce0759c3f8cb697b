import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_rl.tasks.convert import convert_dataset
from agent_rl.tasks.gsm8k.convert import final_number
from tools.kg_store import read_kg_store
from agent_rl.data.loader import load_rows
from agent_rl.tasks.rows import validate_row

GSM = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
    {"question": "A car costs $12,500 and a bike $1,000. Total?", "answer": "12500+1000=13500\n#### 13,500"},
    {"question": "Half of 5?", "answer": "5/2 = 2.5\n#### 2.50"},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_gsm8k_jsonl_and_parquet(tmp_path):
    src = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    s = convert_dataset("gsm8k", [src], str(tmp_path / "out"), split="test")
    rows = load_rows(s["file"])
    assert s["rows"] == 3 and s["file"].endswith("test.parquet")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["7", "13500", "2.5"]
    for r in rows:
        validate_row(r)
        assert r["data_source"] == "gsm8k" and r["ability"] == "math"
        assert r["extra_info"]["split"] == "test"
        assert r["extra_info"]["tools_kwargs"]["calc_gsm8k_reward"]["create_kwargs"]["ground_truth"] == r["reward_model"]["ground_truth"]
    assert rows[1]["extra_info"]["solution"].endswith("#### 13,500")
    pq.write_table(pa.Table.from_pylist(GSM), tmp_path / "gsm.parquet")
    s2 = convert_dataset("gsm8k", str(tmp_path / "gsm.parquet"), str(tmp_path / "out2"))
    assert [r["reward_model"]["ground_truth"] for r in load_rows(s2["file"])] == ["7", "13500", "2.5"]


def test_gsm8k_errors(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}])
    with pytest.raises(ValueError, match=r"bad.jsonl: row 0 is missing column 'answer'"):
        convert_dataset("gsm8k", src, str(tmp_path / "o"))
    src = write_jsonl(tmp_path / "nohash.jsonl", [{"question": "q", "answer": "7"}])
    with pytest.raises(ValueError, match="no '#### <number>'"):
        convert_dataset("gsm8k", src, str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        convert_dataset("gsm8k", str(tmp_path / "missing.jsonl"), str(tmp_path / "o"))
    assert final_number("x\n#### -1,234", "t") == "-1234"
    with pytest.raises(ValueError, match="not a number"):
        final_number("#### seven", "t")


def rog_table(rows):
    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("answer", pa.list_(pa.string())),
                        ("q_entity", pa.list_(pa.string())), ("a_entity", pa.list_(pa.string())),
                        ("graph", pa.list_(pa.list_(pa.string())))])
    return pa.Table.from_pylist(rows, schema=schema)


ROG = [
    {"id": "WebQTrn-0", "question": "what is the name of justin bieber brother",
     "answer": ["Jaxon Bieber"], "q_entity": ["Justin Bieber"], "a_entity": ["Jaxon Bieber"],
     "graph": [["Justin Bieber", "people.person.sibling_s", "m.0gxnnwc"],
               ["m.0gxnnwc", "people.sibling_relationship.sibling", "Jaxon Bieber"],
               ["Justin Bieber", "people.person.place_of_birth", "London"]]},
    {"id": "WebQTrn-1", "question": "what country is london in?", "answer": ["England", "United Kingdom", "England"],
     "q_entity": ["London"], "a_entity": ["England", "United Kingdom"],
     "graph": [["London", "location.location.containedby", "England"],
               ["London", "location.location.containedby", "United Kingdom"]]},
    {"id": "WebQTrn-2", "question": "who knows?", "answer": [], "q_entity": ["X"], "a_entity": [], "graph": []},
    {"id": "WebQTrn-3", "question": "where is nowhere", "answer": ["Somewhere"], "q_entity": ["Nowhere"],
     "a_entity": ["Somewhere"], "graph": []},
]


def test_rog_webqsp(tmp_path):
    pq.write_table(rog_table(ROG), tmp_path / "train.parquet")
    out = str(tmp_path / "webqsp")
    s = convert_dataset("webqsp", str(tmp_path / "train.parquet"), out, split="train")
    assert s["rows"] == 3 and s["skipped_no_answer"] == 1 and s["empty_graph"] == 1
    rows = load_rows(s["file"])
    for r in rows:
        validate_row(r)
        assert r["data_source"] == "webqsp" and r["ability"] == "kgqa"
    r0, r1, r3 = rows
    assert r0["reward_model"]["ground_truth"] == ["Jaxon Bieber"]
    assert r0["extra_info"]["topic_entities"] == ["Justin Bieber"] and r0["extra_info"]["hops"] == 2
    assert r0["extra_info"]["question"] == "what is the name of justin bieber brother?"
    assert "Justin Bieber" in r0["prompt"][0]["content"]
    assert r0["extra_info"]["tools_kwargs"] == {"kg_query": {"create_kwargs": {"sample_id": "WebQTrn-0", "dataset": "webqsp"}}}
    assert r1["reward_model"]["ground_truth"] == ["England", "United Kingdom"] and r1["extra_info"]["hops"] == 1
    assert r3["extra_info"]["hops"] == -1
    dataset, store = read_kg_store(s["kg_store"])
    assert dataset == "webqsp" and set(store) == {"WebQTrn-0", "WebQTrn-1", "WebQTrn-3"}
    assert store["WebQTrn-0"] == ROG[0]["graph"]
    # a second split merges into the same store
    pq.write_table(rog_table([{**ROG[1], "id": "WebQTest-0"}]), tmp_path / "test.parquet")
    s2 = convert_dataset("webqsp", str(tmp_path / "test.parquet"), out, split="test")
    assert s2["store_samples"] == 4 and set(read_kg_store(s2["kg_store"])[1]) >= {"WebQTrn-0", "WebQTest-0"}
    # another dataset in the same folder is refused
    with pytest.raises(ValueError, match="holds dataset 'webqsp', not 'cwq'"):
        convert_dataset("cwq", str(tmp_path / "test.parquet"), out, split="test")


def test_rog_errors(tmp_path):
    rows = [{k: v for k, v in ROG[0].items() if k != "graph"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "nograph.parquet")
    with pytest.raises(ValueError, match="nograph.parquet: missing column 'graph'"):
        convert_dataset("cwq", str(tmp_path / "nograph.parquet"), str(tmp_path / "o"))
    pq.write_table(rog_table([ROG[0], ROG[0]]), tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match="duplicate id 'WebQTrn-0'"):
        convert_dataset("cwq", str(tmp_path / "dup.parquet"), str(tmp_path / "o"))
    bad = dict(ROG[0], graph=[["a", "b"]])
    pq.write_table(rog_table([bad]), tmp_path / "badtriple.parquet")
    with pytest.raises(ValueError, match=r"column 'graph'\[0\] is not a \[head, relation, tail\] triple"):
        convert_dataset("cwq", str(tmp_path / "badtriple.parquet"), str(tmp_path / "o"))
