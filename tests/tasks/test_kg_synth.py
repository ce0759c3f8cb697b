import json
import os
from collections import Counter, defaultdict

import pytest

from agent_rl.tasks.generate import generate_dataset
from agent_rl.tasks.kg.schema import RELATIONS
from tools.kg_store import load_kg_store, read_kg_store
from agent_rl.tasks.kg.synth import parse_hops
from agent_rl.data.loader import load_rows
from agent_rl.tasks.rows import validate_row

SIZES = {"train": 150, "val": 30, "test": 30}


@pytest.fixture(scope="module")
def kg(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("kg"))
    summary = generate_dataset("kg", out, seed=5, sizes=SIZES)
    rows = load_rows([summary["files"][s] for s in ("train", "val", "test")])
    return out, summary, rows, load_kg_store(summary["kg_store"])


def files_bytes(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_same_seed_identical_bytes_other_seed_differs(kg, tmp_path):
    out, _, _, _ = kg
    generate_dataset("kg", str(tmp_path / "again"), seed=5, sizes=SIZES)
    first, again = files_bytes(out), files_bytes(tmp_path / "again")
    assert sorted(first) == ["kg_store.json", "test.parquet", "train.parquet", "val.parquet"]
    assert first == again
    generate_dataset("kg", str(tmp_path / "other"), seed=6, sizes=SIZES)
    other = files_bytes(tmp_path / "other")
    assert all(other[name] != first[name] for name in first)


def test_rows_follow_schema(kg):
    _, summary, rows, store = kg
    assert summary["rows"] == SIZES
    ids = [r["extra_info"]["sample_id"] for r in rows]
    assert len(set(ids)) == len(ids) == sum(SIZES.values())  # unique across splits
    assert set(store) == set(ids)
    assert read_kg_store(summary["kg_store"])[0] == "kg_synth"
    for r in rows:
        validate_row(r)
        e = r["extra_info"]
        assert r["data_source"] == "kg_synth" and r["ability"] == "kgqa"
        assert e["tools_kwargs"] == {"kg_query": {"create_kwargs": {"sample_id": e["sample_id"], "dataset": "kg_synth"}}}
        assert e["split"] == e["sample_id"].split("-")[1]
        assert isinstance(e["hops"], int) and e["hops"] in (1, 2, 3)
        text = r["prompt"][-1]["content"]
        assert e["question"] in text and "<answer>" in text
        for t in e["topic_entities"]:
            assert t in e["question"] and t in text
    assert [r["extra_info"]["index"] for r in rows if r["extra_info"]["split"] == "val"] == list(range(SIZES["val"]))


def traverse(triples, query):
    """Independent re-implementation of the gold rule: follow each branch, never revisit a topic, intersect.
    Returns (answers, names visited in the middle of the paths)."""
    out, inn = defaultdict(set), defaultdict(set)
    for h, r, t in triples:
        out[(h, r)].add(t)
        inn[(t, r)].add(h)
    topics = {b["topic"] for b in query}
    result, middle = None, set()
    for b in query:
        cur = {b["topic"]}
        for k, step in enumerate(b["path"]):
            direction, rel = step.split(":", 1)
            index = out if direction == "out" else inn
            cur = set().union(*[index[(n, rel)] for n in cur]) - topics if cur else set()
            if k < len(b["path"]) - 1:
                middle |= cur
        result = cur if result is None else result & cur
    return sorted(result), middle


def test_gold_answers_by_independent_traversal_and_sizes(kg):
    _, _, rows, store = kg
    for r in rows:
        e = r["extra_info"]
        triples = store[e["sample_id"]]
        assert 20 <= len(triples) <= 200 and len(triples) == e["num_triples"]
        assert len({tuple(t) for t in triples}) == len(triples)
        assert all(t[1] in RELATIONS for t in triples)
        gold, _ = traverse(triples, e["query"])
        assert gold and sorted(r["reward_model"]["ground_truth"]) == gold, e["question"]
        assert [b["topic"] for b in e["query"]] == e["topic_entities"]
        assert max(len(b["path"]) for b in e["query"]) == e["hops"]
        names = {n for t in triples for n in (t[0], t[2])}
        assert set(e["topic_entities"]) <= names


def test_coverage_hops_cvt_same_name_multi_answer(kg):
    _, summary, rows, store = kg
    assert set(Counter(r["extra_info"]["hops"] for r in rows)) == {1, 2, 3}
    assert sum(len(r["reward_model"]["ground_truth"]) > 1 for r in rows) >= 10
    assert any(len(r["extra_info"]["topic_entities"]) == 2 for r in rows)
    through_cvt = [r for r in rows if any(n.startswith("m.0") for n in
                                          traverse(store[r["extra_info"]["sample_id"]], r["extra_info"]["query"])[1])]
    assert len(through_cvt) >= 10 and all(r["extra_info"]["cvt"] for r in through_cvt)
    # same-name: the name is used by entities of two types (e.g. a person and a film named after them)
    typed = 0
    for r in rows:
        for name in r["extra_info"]["same_name_entities"]:
            types = set()
            for h, rel, t in store[r["extra_info"]["sample_id"]]:
                if h == name:
                    types.add(RELATIONS[rel][0])
                if t == name:
                    types.add(RELATIONS[rel][1])
            assert types, name
            typed += len(types) > 1
    assert typed >= 5
    assert summary["histograms"]["train"]["same_name"] == sum(bool(r["extra_info"]["same_name_entities"])
                                                              for r in rows if r["extra_info"]["split"] == "train")


def test_hop_mix_option(tmp_path):
    s = generate_dataset("kg", str(tmp_path), seed=1, sizes={"train": 40, "val": 0, "test": 0}, hops="3:1")
    rows = load_rows(s["files"]["train"])
    assert {r["extra_info"]["hops"] for r in rows} == {3}
    assert sorted(os.listdir(tmp_path)) == ["kg_store.json", "train.parquet"]
    assert parse_hops("1:1,2:3") == {1: 0.25, 2: 0.75}
    for bad in ("4:1", "1", "1:x", "1:0"):
        with pytest.raises(ValueError, match="hops"):
            parse_hops(bad)


def test_store_file_format(kg):
    _, summary, _, _ = kg
    doc = json.load(open(summary["kg_store"]))
    assert doc["format"] == "agent-rl-kg-store" and doc["version"] == 1 and doc["dataset"] == "kg_synth"
    sid, triples = next(iter(doc["samples"].items()))
    assert all(isinstance(t, list) and len(t) == 3 for t in triples)
