import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_rl.data.loader import PromptLoader, batched, load_rows
from agent_rl.data.parquet_io import write_rows
from agent_rl.data.schema import row_problem
from agent_rl.tasks.arith.rows import math_prompt, math_tools_kwargs
from agent_rl.tasks.kg.rows import kg_prompt, kg_tools_kwargs
from agent_rl.tasks.rows import make_row, rules_for, validate_row

# the rows of the shipped tasks are checked with their rules (`rules=rules_for`: what the trainer, `agent-rl rollout`
# and `agent-rl eval` pass); without rules the data layer checks what every row needs and names no task


def math_row(i, split="train"):
    return make_row(prompt=math_prompt(f"What is {i} + 1?"), data_source="arith_synth", ability="math",
                    ground_truth=str(i + 1), split=split, index=i, sample_id=f"a-{i}",
                    tools_kwargs=math_tools_kwargs(str(i + 1)), question=f"What is {i} + 1?", answer=i + 1)


def kg_row(i):
    return make_row(prompt=kg_prompt("Who?", ["X"]), data_source="kg_synth", ability="kgqa", ground_truth=["Y", "Z"],
                    split="train", index=i, sample_id=f"k-{i}", tools_kwargs=kg_tools_kwargs(f"k-{i}", "kg_synth"),
                    question="Who?", topic_entities=["X"], hops=1)


def test_load_rows_mixed_files(tmp_path):
    a = write_rows(str(tmp_path / "a.parquet"), [math_row(i) for i in range(3)])
    b = write_rows(str(tmp_path / "b.parquet"), [kg_row(i) for i in range(2)])
    rows = load_rows([a, b])
    assert [r["data_source"] for r in rows] == ["arith_synth"] * 3 + ["kg_synth"] * 2
    assert rows[0]["reward_model"]["ground_truth"] == "1"
    assert rows[3]["reward_model"]["ground_truth"] == ["Y", "Z"]
    assert rows[3]["extra_info"]["tools_kwargs"] == {"kg_query": {"create_kwargs": {"sample_id": "k-0", "dataset": "kg_synth"}}}
    assert rows[0]["prompt"][0]["role"] == "user"
    for r in rows:
        validate_row(r)
    assert len(load_rows(a)) == 3


def test_load_rows_drops_null_tool_kwargs(tmp_path):
    rows = [math_row(0), math_row(1)]
    rows[1]["extra_info"]["tools_kwargs"] = {"calculator": {"create_kwargs": {"precision": 3}}}
    path = write_rows(str(tmp_path / "m.parquet"), rows)
    loaded = load_rows(path)
    assert loaded[0]["extra_info"]["tools_kwargs"] == {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": "1"}}}
    assert loaded[1]["extra_info"]["tools_kwargs"] == {"calculator": {"create_kwargs": {"precision": 3}}}


def test_load_rows_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_rows([str(tmp_path / "nope.parquet")])
    with pytest.raises(ValueError, match="no data files"):
        load_rows([])
    t = pa.Table.from_pylist([{k: v for k, v in math_row(0).items() if k != "ability"}])
    pq.write_table(t, tmp_path / "noab.parquet")
    with pytest.raises(ValueError, match=r"noab.parquet: missing required column 'ability'"):
        load_rows([str(tmp_path / "noab.parquet")])
    good = pa.Table.from_pylist([math_row(0)])
    pq.write_table(good.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="empty.parquet: file has no rows"):
        load_rows([str(tmp_path / "empty.parquet")])
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="junk.parquet: cannot read"):
        load_rows([str(tmp_path / "junk.parquet")])


def test_write_rows_rejects_bad_rows(tmp_path):
    bad = math_row(0)
    bad["extra_info"]["tools_kwargs"] = {"calculator": {}}
    with pytest.raises(ValueError, match="empty dict"):
        write_rows(str(tmp_path / "x.parquet"), [bad])
    bad = kg_row(0)
    bad["reward_model"]["ground_truth"] = "Y"
    with pytest.raises(ValueError, match="KG ground truth"):
        write_rows(str(tmp_path / "x.parquet"), [bad], rules=rules_for)
    del bad["extra_info"]["split"]
    bad["reward_model"]["ground_truth"] = ["Y"]
    with pytest.raises(ValueError, match=r"extra_info.split missing"):      # what a task's generator writes
        write_rows(str(tmp_path / "x.parquet"), [bad], rules=rules_for)
    with pytest.raises(ValueError, match="empty row file"):
        write_rows(str(tmp_path / "x.parquet"), [])
    assert not (tmp_path / "x.parquet").exists()


def ids(batch):
    return [r["i"] for r in batch]


def test_prompt_loader_epochs_and_shuffle():
    rows = [{"i": i} for i in range(10)]
    loader = PromptLoader(rows, batch_size=3, shuffle=True, seed=7)
    assert len(loader) == 3
    e0 = [ids(next(loader)) for _ in range(3)]
    assert loader.epoch == 1 and loader.position == 0
    e1 = [ids(next(loader)) for _ in range(3)]
    assert all(len(b) == 3 for b in e0 + e1)
    assert len(set(sum(e0, []))) == 9 and len(set(sum(e1, []))) == 9
    assert e0 != e1  # reshuffled per epoch
    again = PromptLoader(rows, batch_size=3, shuffle=True, seed=7)
    assert [ids(next(again)) for _ in range(3)] == e0  # seeded
    plain = PromptLoader(rows, batch_size=4, shuffle=False, drop_last=False)
    assert len(plain) == 3 and [ids(next(plain)) for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plain.epoch == 1


@pytest.mark.parametrize("consumed", [0, 1, 2, 3, 5, 7])
def test_prompt_loader_resume_exact(consumed):
    rows = [{"i": i} for i in range(11)]
    ref = PromptLoader(rows, batch_size=4, shuffle=True, seed=3)  # 2 batches per epoch
    expected = [ids(next(ref)) for _ in range(consumed + 6)]
    first = PromptLoader(rows, batch_size=4, shuffle=True, seed=3)
    for _ in range(consumed):
        next(first)
    state = dict(first.state_dict())
    resumed = PromptLoader(rows, batch_size=4, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    assert resumed.epoch == consumed // 2
    assert [ids(next(resumed)) for _ in range(6)] == expected[consumed:]


def test_prompt_loader_errors():
    rows = [{"i": i} for i in range(5)]
    with pytest.raises(ValueError, match="batch_size 6 > 5 rows"):
        PromptLoader(rows, batch_size=6)
    with pytest.raises(ValueError, match="no rows"):
        PromptLoader([], batch_size=1)
    loader = PromptLoader(rows, batch_size=2)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="num_rows"):
        PromptLoader(rows[:4], batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="position"):
        loader.load_state_dict({**state, "position": 9})
    assert [len(b) for b in batched(list(range(5)), 2)] == [2, 2, 1]


# -- every row is checked at load time (issue 19, item 7) ------------------------------------------------------

def write_table(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def test_null_content_row_is_refused_at_load_naming_file_row_and_field(tmp_path):
    rows = [math_row(i) for i in range(5)]
    rows[3]["prompt"] = [{"role": "user", "content": None}]   # trained step 1, killed step 2 with jinja2 before
    path = write_table(tmp_path / "bad.parquet", rows)
    with pytest.raises(ValueError) as e:
        load_rows([path])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path} row 3: prompt[0].content: must be a string, got null")
    assert "data.skip_invalid_rows=true" in msg


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(prompt="What is 1 + 1?"), "row 0: prompt: must be a list of {role, content} messages, got str"),
    (lambda r: r.update(data_source=7), "row 0: data_source: must be a non-empty string, got 7"),
    (lambda r: r.update(prompt=[]), "row 0: prompt: must not be empty"),
    (lambda r: r.update(prompt=[{"role": "human", "content": "hi"}]), "row 0: prompt[0].role: must be one of"),
    (lambda r: r.update(ability="kgqa"), "row 0: ability: 'kgqa' does not match data_source 'arith_synth'"),
    (lambda r: r["reward_model"].update(ground_truth=None), "row 0: reward_model.ground_truth: math ground truth"),
    (lambda r: r.update(reward_model="42"), "row 0: reward_model: must be a struct"),
    (lambda r: r.update(extra_info="x"), "row 0: extra_info: must be a struct, got str"),
    (lambda r: r["extra_info"].update(tools_kwargs={"calc_gsm8k_reward": {"create_kwargs": "x"}}),
     "row 0: extra_info.tools_kwargs.calc_gsm8k_reward.create_kwargs: must be a struct, got str"),
])
def test_whole_column_of_wrong_type_is_refused_at_load(tmp_path, change, expected):
    rows = [math_row(i) for i in range(3)]
    for r in rows:
        change(r)
    path = write_table(tmp_path / "wrong.parquet", rows)
    with pytest.raises(ValueError, match="^" + __import__("re").escape(f"{path} {expected}")):
        load_rows(path, rules=rules_for)


def test_kg_ground_truth_type_is_checked_at_load(tmp_path):
    rows = [kg_row(0), kg_row(1)]
    rows[1]["reward_model"]["ground_truth"] = ["Y", ""]
    path = write_table(tmp_path / "kg.parquet", rows)
    with pytest.raises(ValueError, match=r"kg.parquet row 1: reward_model.ground_truth: KG ground truth"):
        load_rows(path, rules=rules_for)


def test_the_data_layer_alone_checks_what_every_row_needs(tmp_path):
    """No task's rules without `rules`: a KG row with a string ground truth is a row like a user's task's (its task's
    rules refuse it, the schema does not)."""
    row = kg_row(0)
    row["reward_model"]["ground_truth"] = "Y"
    row["ability"] = "anything"
    assert row_problem(row) is None and "KG ground truth" in row_problem({**row, "ability": "kgqa"}, rules_for)
    assert "ability: 'anything' does not match data_source 'kg_synth'" in row_problem(row, rules_for)
    assert len(load_rows(write_table(tmp_path / "kg.parquet", [row]))) == 1
    row["reward_model"]["ground_truth"] = None
    assert row_problem(row) == "reward_model.ground_truth: missing (null)"


def test_rows_of_another_task_load(tmp_path):
    """The framework names no task: a registered data source with its own ability and extra_info loads."""
    rows = [{"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": f"n {i}"}],
             "data_source": "toy_in_set", "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"},
             "extra_info": {"index": i}} for i in range(3)]
    assert len(load_rows(write_table(tmp_path / "toy.parquet", rows))) == 3


def test_check_callback_refuses_rows_no_reward_serves(tmp_path):
    from agent_rl.tasks import reward_fn_for

    rows = [{"prompt": [{"role": "user", "content": "q"}], "data_source": "mine", "ability": "other",
             "reward_model": {"style": "rule", "ground_truth": {"a": 1}}, "extra_info": {"index": 0}}]
    path = write_table(tmp_path / "mine.parquet", rows)
    assert len(load_rows(path)) == 1
    with pytest.raises(ValueError, match=r"mine.parquet row 0: no reward function for data_source 'mine'"):
        load_rows(path, check=reward_fn_for)


def test_skip_invalid_drops_and_counts(tmp_path):
    rows = [math_row(i) for i in range(6)]
    rows[1]["prompt"] = [{"role": "user", "content": None}]
    rows[4]["data_source"] = ""
    a = write_table(tmp_path / "a.parquet", rows)
    b = write_rows(str(tmp_path / "b.parquet"), [kg_row(0)])
    lines, stats = [], {}
    loaded = load_rows([a, b], skip_invalid=True, log=lines.append, stats=stats)
    assert [r["extra_info"]["index"] for r in loaded] == [0, 2, 3, 5, 0]
    assert stats == {"rows": 5, "skipped": 2, "skipped_by_file": {a: 2}}
    assert lines == [f"{a}: skipped 2 invalid row(s) of 6 (data.skip_invalid_rows); "
                     "first: row 1: prompt[0].content: must be a string, got null"]
    all_bad = write_table(tmp_path / "c.parquet", [rows[1]])
    with pytest.raises(ValueError, match="c.parquet: every row is invalid; first: row 0: prompt"):
        load_rows([all_bad], skip_invalid=True, log=lines.append)


def test_row_check_is_fast_for_100k_rows():
    import time

    rows = [math_row(i) for i in range(200)] + [kg_row(i) for i in range(200)]
    rows = rows * 250   # 100k rows
    t0 = time.perf_counter()
    assert not any(row_problem(r, rules_for) for r in rows)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed   # ~0.2 s on a CI core
