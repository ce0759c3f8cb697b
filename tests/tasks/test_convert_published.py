"""The converters read the data sets exactly as published (issue 17 item 4).

Fixtures follow the published schemas (sources in docs/data.md, "Published formats"):
- RoG-webqsp / RoG-cwq (huggingface.co/datasets/rmanluo/RoG-webqsp, .../RoG-cwq, README dataset_info): parquet shards
  data/<split>-0000K-of-0000N-<hash>.parquet with id: string, question: string, answer / q_entity / a_entity:
  sequence<string>, graph: sequence<sequence<string>>, choices: sequence<null>.
- GSM8K (huggingface.co/datasets/openai/gsm8k, config main: main/{train,test}-00000-of-00001.parquet; and
  github.com/openai/grade-school-math grade_school_math/data/{train,test}.jsonl): question: string, answer: string
  ending in '#### <number>'. The GSM8K rows below are the first rows of the published test split.
"""
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_rl.data.loader import load_rows
from agent_rl.tasks.rows import validate_row
from agent_rl.tasks.convert import convert_dataset
from agent_rl.tasks.kg.convert_rog import rog_rows
from tools.kg_index import KGIndex
from tools.kg_store import read_kg_store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---- RoG ---------------------------------------------------------------------------------------------------------

ROG_FEATURES = {"id": {"dtype": "string", "_type": "Value"}, "question": {"dtype": "string", "_type": "Value"},
                "answer": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
                "q_entity": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
                "a_entity": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
                "graph": {"feature": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
                          "_type": "Sequence"},
                "choices": {"feature": {"dtype": "null", "_type": "Value"}, "_type": "Sequence"}}
# what the `datasets` library writes for those features (list items named "item", like the published shards)
ROG_SCHEMA = pa.schema([("id", pa.string()), ("question", pa.string()), ("answer", pa.list_(pa.string())),
                        ("q_entity", pa.list_(pa.string())), ("a_entity", pa.list_(pa.string())),
                        ("graph", pa.list_(pa.list_(pa.string()))), ("choices", pa.list_(pa.null()))],
                       metadata={b"huggingface": json.dumps({"info": {"features": ROG_FEATURES}}).encode()})

WEBQSP = [
    {"id": "WebQTrn-0", "question": "what is the name of justin bieber brother", "answer": ["Jaxon Bieber"],
     "q_entity": ["Justin Bieber"], "a_entity": ["Jaxon Bieber"], "choices": [],
     "graph": [["Justin Bieber", "people.person.sibling_s", "m.0gxnnwc"],
               ["m.0gxnnwc", "people.sibling_relationship.sibling", "Jaxon Bieber"],
               ["Justin Bieber", "people.person.parents", "Jeremy Bieber"],
               ["Jeremy Bieber", "people.person.children", "Jaxon Bieber"],
               ["Justin Bieber", "people.person.nationality", "Canada"],
               ["Jaxon Bieber", "people.person.gender", "Male"]]},
    {"id": "WebQTrn-1", "question": "what character did natalie portman play in star wars",
     "answer": ["Padmé Amidala"], "q_entity": ["Natalie Portman", "Star Wars"], "a_entity": ["Padmé Amidala"],
     "choices": [],
     "graph": [["Natalie Portman", "film.actor.film", "m.0k3qy8"],
               ["m.0k3qy8", "film.performance.character", "Padmé Amidala"],
               ["m.0k3qy8", "film.performance.film", "Star Wars Episode I: The Phantom Menace"],
               ["Star Wars Episode I: The Phantom Menace", "film.film.series", "Star Wars"]]},
    # published rows exist whose answer list is empty: skipped, counted
    {"id": "WebQTrn-2", "question": "what country is the grand bahama island in", "answer": [],
     "q_entity": ["Grand Bahama"], "a_entity": [], "choices": [],
     "graph": [["Grand Bahama", "location.location.containedby", "Bahamas"]]},
]
WEBQSP_TEST = [
    {"id": "WebQTest-0", "question": "what does jamaican people speak", "answer": ["Jamaican English", "Jamaican Creole English Language"],
     "q_entity": ["Jamaica"], "a_entity": ["Jamaican English", "Jamaican Creole English Language"], "choices": [],
     "graph": [["Jamaica", "location.country.languages_spoken", "Jamaican English"],
               ["Jamaica", "location.country.languages_spoken", "Jamaican Creole English Language"],
               ["Jamaica", "location.country.official_language", "Jamaican English"]]},
]
CWQ = [
    {"id": "WebQTrn-832_c334509bb5e02cacae1ba2e80c176499",
     "question": "What is the mascot of the team that has Nicholas S. Zeppos as its leader?",
     "answer": ["Mr. Commodore"], "q_entity": ["Nicholas S. Zeppos"], "a_entity": ["Mr. Commodore"], "choices": [],
     "graph": [["m.0k0x3_y", "organization.leadership.person", "Nicholas S. Zeppos"],
               ["m.0k0x3_y", "organization.leadership.organization", "Vanderbilt University"],
               ["Vanderbilt University", "education.educational_institution.mascot", "Mr. Commodore"],
               ["Vanderbilt University", "location.location.containedby", "Nashville"]]},
]


def write_rog(path, rows, schema=ROG_SCHEMA):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)


def test_rog_fixture_has_the_published_arrow_types(tmp_path):
    path = write_rog(tmp_path / "data" / "train-00000-of-00001-0a1b2c3d4e5f6071.parquet", WEBQSP)
    schema = pq.read_schema(path)   # list items come back named "item" or "element" depending on the writer
    graph, answer, choices = (schema.field(c).type for c in ("graph", "answer", "choices"))
    assert pa.types.is_list(graph) and pa.types.is_list(graph.value_type)
    assert pa.types.is_string(graph.value_type.value_type)
    assert pa.types.is_list(answer) and pa.types.is_string(answer.value_type)
    assert pa.types.is_list(choices) and pa.types.is_null(choices.value_type)


def test_rog_webqsp_published_shards_convert_and_serve(tmp_path):
    data = tmp_path / "RoG-webqsp" / "data"
    shards = [write_rog(data / "train-00000-of-00002-d810a36ed97bc2cc.parquet", WEBQSP[:1]),
              write_rog(data / "train-00001-of-00002-e53244e71082a392.parquet", WEBQSP[1:])]
    out = str(tmp_path / "webqsp")
    s = convert_dataset("webqsp", shards, out, split="train")
    assert (s["rows"], s["skipped_no_answer"], s["skipped_no_topic"], s["empty_graph"]) == (2, 1, 0, 0)
    rows = load_rows(s["file"])
    for r in rows:
        validate_row(r)
        assert r["data_source"] == "webqsp"
    r0, r1 = rows
    assert r0["reward_model"]["ground_truth"] == ["Jaxon Bieber"] and r0["extra_info"]["hops"] == 2
    assert r1["extra_info"]["topic_entities"] == ["Natalie Portman", "Star Wars"]
    assert r1["reward_model"]["ground_truth"] == ["Padmé Amidala"] and r1["extra_info"]["hops"] == 2
    write_rog(data / "test-00000-of-00001-9ee8d68f7d951e1f.parquet", WEBQSP_TEST)
    s2 = convert_dataset("webqsp", str(data / "test-00000-of-00001-9ee8d68f7d951e1f.parquet"), out, split="test")
    assert s2["rows"] == 1 and s2["store_samples"] == 3
    # the KG store written for the converted rows serves the look-ups a policy makes for these questions
    dataset, samples = read_kg_store(s["kg_store"])
    assert dataset == "webqsp" and samples["WebQTrn-0"] == WEBQSP[0]["graph"]
    index = KGIndex(samples, dataset)
    sid = r0["extra_info"]["tools_kwargs"]["kg_query"]["create_kwargs"]["sample_id"]
    rels = index.query(sid, "get_relations_out", r0["extra_info"]["topic_entities"][0])
    assert rels.success and "people.person.sibling_s" in rels.data
    cvt = index.query(sid, "get_entities_out", "Justin Bieber", "people.person.sibling_s")
    assert cvt.success and cvt.data == ["m.0gxnnwc"]
    gold = index.query(sid, "get_entities_out", "m.0gxnnwc", "people.sibling_relationship.sibling")
    assert gold.success and gold.data == r0["reward_model"]["ground_truth"]
    test_row = load_rows(s2["file"])[0]
    langs = index.query("WebQTest-0", "get_entities_out", "Jamaica", "location.country.languages_spoken")
    assert sorted(langs.data) == sorted(test_row["reward_model"]["ground_truth"])


def test_rog_cwq_published_shard(tmp_path):
    path = write_rog(tmp_path / "RoG-cwq" / "data" / "validation-00000-of-00001-6ee6adc5b154643a.parquet", CWQ)
    s = convert_dataset("cwq", path, str(tmp_path / "cwq"), split="val")
    (row,) = load_rows(s["file"])
    validate_row(row)
    assert row["data_source"] == "cwq" and row["extra_info"]["hops"] == 3
    assert row["extra_info"]["sample_id"] == CWQ[0]["id"]
    index = KGIndex(read_kg_store(s["kg_store"])[1], "cwq")
    res = index.query(CWQ[0]["id"], "get_entities_out", "Vanderbilt University", "education.educational_institution.mascot")
    assert res.success and res.data == ["Mr. Commodore"]


def test_rog_reads_numpy_nesting_and_ignores_extra_columns(tmp_path):
    """pandas / `Table.to_numpy` give object arrays of arrays for list columns: the conversion accepts them."""
    extra = pa.schema(list(ROG_SCHEMA) + [pa.field("note", pa.int64())])
    path = write_rog(tmp_path / "x.parquet", [dict(r, note=7) for r in WEBQSP], schema=extra)
    table = pq.read_table(path)
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    assert type(cols["graph"][0]).__name__ == "ndarray" and type(cols["graph"][0][0]).__name__ == "ndarray"
    records = [(path, i, {k: v[i] for k, v in cols.items()}) for i in range(table.num_rows)]
    rows, graphs, counts = rog_rows(records, "webqsp", "train")
    assert [r["reward_model"]["ground_truth"] for r in rows] == [["Jaxon Bieber"], ["Padmé Amidala"]]
    assert graphs["WebQTrn-0"] == WEBQSP[0]["graph"] and counts["skipped_no_answer"] == 1
    # the file itself, extra column and all, converts the same
    s = convert_dataset("webqsp", path, str(tmp_path / "o"))
    assert [r["reward_model"]["ground_truth"] for r in load_rows(s["file"])] == [["Jaxon Bieber"], ["Padmé Amidala"]]


def test_rog_jsonl_dump_of_the_same_records(tmp_path):
    src = tmp_path / "cwq.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in CWQ))
    s = convert_dataset("cwq", str(src), str(tmp_path / "o"))
    assert s["rows"] == 1 and load_rows(s["file"])[0]["reward_model"]["ground_truth"] == ["Mr. Commodore"]


def test_rog_row_without_topic_entity_is_skipped_and_counted(tmp_path):
    rows = [WEBQSP[0], dict(WEBQSP[1], q_entity=[])]
    s = convert_dataset("webqsp", write_rog(tmp_path / "t.parquet", rows), str(tmp_path / "o"))
    assert s["rows"] == 1 and s["skipped_no_topic"] == 1


def _schema_with(col, typ):
    return pa.schema([pa.field(f.name, typ) if f.name == col else f for f in ROG_SCHEMA])


ROG_BAD = [
    ("missing a_entity", pa.schema([f for f in ROG_SCHEMA if f.name != "a_entity"]),
     lambda r: {k: v for k, v in r.items() if k != "a_entity"}, r"missing column 'a_entity'"),
    ("graph as a string", _schema_with("graph", pa.string()), lambda r: dict(r, graph=json.dumps(r["graph"])),
     r"column 'graph' has type string, expected list<list<string>>"),
    ("graph flattened", _schema_with("graph", pa.list_(pa.string())),
     lambda r: dict(r, graph=[x for t in r["graph"] for x in t]),
     r"column 'graph' has type list<\w+: string>, expected list<list<string>>"),
    ("answer as a string", _schema_with("answer", pa.string()), lambda r: dict(r, answer=r["answer"][0]),
     r"column 'answer' has type string, expected list<string>"),
    ("id as an integer", _schema_with("id", pa.int64()), lambda r: dict(r, id=0),
     r"column 'id' has type int64, expected string"),
]


@pytest.mark.parametrize("name,schema,change,message", ROG_BAD, ids=[b[0] for b in ROG_BAD])
def test_rog_schema_mismatch_is_one_line_naming_the_column(tmp_path, name, schema, change, message):
    path = write_rog(tmp_path / "bad.parquet", [change(WEBQSP[0])], schema=schema)
    with pytest.raises(ValueError, match=message) as e:
        convert_dataset("webqsp", path, str(tmp_path / "o"))
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


@pytest.mark.parametrize("change,message", [
    (lambda r: dict(r, answer="Jaxon Bieber"), r"row 0: column 'answer' must be a list of strings, got str"),
    (lambda r: dict(r, graph="[[a, b, c]]"), r"row 0: column 'graph' must be a list of \[head, relation, tail\] triples"),
    (lambda r: dict(r, graph=[["a", "r", 3]]), r"row 0: column 'graph'\[0\] must hold 3 strings, got \[str, str, int\]"),
    (lambda r: dict(r, q_entity=[1]), r"row 0: column 'q_entity'\[0\] must be a string, got int"),
    (lambda r: {k: v for k, v in r.items() if k != "question"}, r"row 0: missing column 'question'"),
])
def test_rog_jsonl_value_mismatch_names_the_column(tmp_path, change, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(change(WEBQSP[0])) + "\n")
    with pytest.raises(ValueError, match=message):
        convert_dataset("webqsp", str(src), str(tmp_path / "o"))


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "data", "convert", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_rog_schema_error_is_one_line_exit_2(tmp_path):
    path = write_rog(tmp_path / "train.parquet", [dict(WEBQSP[0], graph=json.dumps(WEBQSP[0]["graph"]))],
                     schema=_schema_with("graph", pa.string()))
    p = _cli("cwq", "--input", path, "--out", str(tmp_path / "o"))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.parquet" in lines[0] and "column 'graph' has type string" in lines[0]
    assert not (tmp_path / "o").exists()


# ---- GSM8K -------------------------------------------------------------------------------------------------------

# the first rows of grade_school_math/data/test.jsonl (= openai/gsm8k main/test), as published
GSM8K_TEST = [
    {"question": "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
                 "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
                 "fresh duck egg. How much in dollars does she make every day at the farmers' market?",
     "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at "
               "the farmer\u2019s market.\n#### 18"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?",
     "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is 2+1=<<2+1=3>>3 bolts of "
               "fabric\n#### 3"},
    {"question": "Josh decides to try flipping a house.  He buys a house for $80,000 and then puts in $50,000 in repairs."
                 "  This increased the value of the house by 150%.  How much profit did he make?",
     "answer": "The cost of the house and repairs came out to 80,000+50,000=$<<80000+50000=130000>>130,000\nHe increased "
               "the value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\nSo the new value of the house is "
               "120,000+80,000=$<<120000+80000=200000>>200,000\nSo he made a profit of 200,000-130,000="
               "$<<200000-130000=70000>>70,000\n#### 70000"},
    # a final answer written with a thousands comma
    {"question": "A school buys 25 boxes of 50 pencils. How many pencils is that?",
     "answer": "25 * 50 = <<25*50=1250>>1,250 pencils\n#### 1,250"},
]
GSM8K_GOLD = ["18", "3", "70000", "1250"]
GSM8K_FEATURES = {"question": {"dtype": "string", "_type": "Value"}, "answer": {"dtype": "string", "_type": "Value"}}
GSM8K_SCHEMA = pa.schema([("question", pa.string()), ("answer", pa.string())],
                         metadata={b"huggingface": json.dumps({"info": {"features": GSM8K_FEATURES}}).encode()})


def test_gsm8k_published_parquet_and_jsonl(tmp_path):
    parquet = tmp_path / "gsm8k" / "main" / "test-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(GSM8K_TEST, schema=GSM8K_SCHEMA), parquet)
    s = convert_dataset("gsm8k", str(parquet), str(tmp_path / "a"), split="test")
    rows = load_rows(s["file"])
    assert [r["reward_model"]["ground_truth"] for r in rows] == GSM8K_GOLD
    for r, src in zip(rows, GSM8K_TEST):
        validate_row(r)
        assert r["extra_info"]["solution"] == src["answer"] and src["question"] in r["prompt"][-1]["content"]
    # the original jsonl, byte for byte in the published encoding (json.dumps escapes the curly quote as \u2019)
    jsonl = tmp_path / "grade_school_math" / "data" / "test.jsonl"
    jsonl.parent.mkdir(parents=True)
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_TEST))
    assert "\\u2019" in jsonl.read_text()
    s2 = convert_dataset("gsm8k", str(jsonl), str(tmp_path / "b"), split="test")
    assert load_rows(s2["file"]) == rows


def test_gsm8k_extra_columns_ignored(tmp_path):
    path = tmp_path / "socratic.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r, source="gsm8k", n=i) for i, r in enumerate(GSM8K_TEST)]), path)
    s = convert_dataset("gsm8k", str(path), str(tmp_path / "o"))
    assert [r["reward_model"]["ground_truth"] for r in load_rows(s["file"])] == GSM8K_GOLD


@pytest.mark.parametrize("table,message", [
    (pa.table({"question": ["q"]}), r"missing column 'answer'"),
    (pa.table({"question": ["q"], "answer": [7]}), r"column 'answer' has type int64, expected string"),
    (pa.table({"problem": ["q"], "answer": ["#### 7"]}), r"missing column 'question'"),
    (pa.table({"question": ["q"], "answer": ["the answer is 7"]}), r"row 0: column 'answer' has no '#### <number>' line"),
    (pa.table({"question": ["q"], "answer": ["#### seven"]}), r"row 0: column 'answer': final answer 'seven' is not a number"),
])
def test_gsm8k_parquet_mismatch_names_the_column(tmp_path, table, message):
    path = str(tmp_path / "bad.parquet")
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=message) as e:
        convert_dataset("gsm8k", path, str(tmp_path / "o"))
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_gsm8k_jsonl_value_mismatch_names_the_column(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"question": "q", "answer": 7}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: column 'answer' must be a string, got int"):
        convert_dataset("gsm8k", str(src), str(tmp_path / "o"))


def test_cli_gsm8k_answer_without_hashes_is_one_line_exit_2(tmp_path):
    src = tmp_path / "test.jsonl"
    src.write_text(json.dumps(GSM8K_TEST[0]) + "\n" + json.dumps({"question": "q", "answer": "It is 5."}) + "\n")
    p = _cli("gsm8k", "--input", str(src), "--split", "test", "--out", str(tmp_path / "o"))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "test.jsonl row 1: column 'answer' has no '#### <number>' line" in lines[0]
