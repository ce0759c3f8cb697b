"""`agent-rl eval` (issue 17 item 3): greedy and pass@k evaluation of a model folder on a parquet with its tools.

The numbers in eval.json are checked against the trajectories it writes (recomputed here from the JSONL with
`math.comb`), the estimator against brute force over all k-subsets, and bad input against the one-line errors."""
import itertools
import json
import math
import os

import pytest

from agent_rl.cli.main import main
from agent_rl.orchestration.evaluate import TRUNCATION_REASONS, default_ks, parse_ks, pass_at_k, summarize
from agent_rl.rollout.output import read_trajectories
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.record import ToolCallRecord

FAST = ["--engine", "hf", "--no-progress", "rollout.multi_turn.max_new_tokens_per_turn=6",
        "rollout.multi_turn.max_assistant_turns=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agent_rl.tasks.generate import generate_dataset

    d = tmp_path_factory.mktemp("eval_data")
    generate_dataset("kg", str(d / "kg"), sizes={"train": 0, "val": 0, "test": 6}, hops="1:1,2:1")
    generate_dataset("arith", str(d / "arith"), sizes={"train": 0, "val": 0, "test": 5})
    table = pq.read_table(str(d / "arith" / "test.parquet"))   # the same rows under data sources of no shipped task
    i = table.schema.get_field_index("data_source")
    for name in ("parity_synth", "mystery_source"):
        pq.write_table(table.set_column(i, "data_source", pa.array([name] * table.num_rows)), str(d / f"{name}.parquet"))
    return d


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _load(out):
    with open(out / "eval.json", encoding="utf-8") as f:
        doc = json.load(f)
    return doc, (out / "eval.md").read_text(encoding="utf-8"), read_trajectories(str(out / "trajectories.jsonl"))


def _comb_pass_at_k(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# ---------------------------------------------------------------- the estimator

def test_pass_at_k_is_the_unbiased_estimator():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                flags = [1] * c + [0] * (n - c)     # brute force: the share of k-subsets holding a correct sample
                subsets = list(itertools.combinations(flags, k))
                brute = sum(1 for s in subsets if any(s)) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(_comb_pass_at_k(n, c, k), abs=1e-12)
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    assert default_ks(1) == [1] and default_ks(5) == [1, 2, 4, 5] and default_ks(8) == [1, 2, 4, 8]
    assert parse_ks("4,1,4", 4) == [1, 4]
    for bad in ("0", "5", "a,b"):
        with pytest.raises(ValueError):
            parse_ks(bad, 4)


def _traj(uid, k, source, comps, stop="answer", calls=(), hops=None, turns=1):
    row = {"data_source": source, "extra_info": {"hops": hops} if hops is not None else {}}
    ts = [TurnRecord(index=i, output_ids=[1], logprobs=[0.0], finish_reason="stop", text="",
                     tool_calls=list(calls) if i == 0 else []) for i in range(turns)]
    t = Trajectory(uid=uid, sample_index=k, row=row, prompt_ids=[1], response_ids=[1] * turns, loss_mask=[1] * turns,
                   turns=ts, status="finished", stop_reason=stop)
    t.reward_components = dict(comps)
    t.reward = float(comps.get("f1", comps.get("correct", 0.0)))
    return t


def test_summary_per_source_hop_tool_and_truncation():
    ok = ToolCallRecord("kg_query", {}, "x", "ok", metrics={"success": True})
    miss = ToolCallRecord("kg_query", {}, "x", "ok", metrics={"success": False})   # ran, but the look-up failed
    bad = ToolCallRecord("calculator", "{", "err", "parse_error")
    kg = lambda f1, em, h, a=1.0: {"f1": f1, "em": em, "hits1": h, "answered": a}     # noqa: E731
    trajs = [  # q0 (hop 1): 1 of 3 correct by hits1; q1 (hop 2): 2 of 3; q2 (arith): 3 of 3
        _traj("q0", 0, "kg_synth", kg(1.0, 1.0, 1.0), calls=[ok, miss], hops=1, turns=2),
        _traj("q0", 1, "kg_synth", kg(0.5, 0.0, 0.0), stop="max_assistant_turns", calls=[ok], hops=1, turns=2),
        _traj("q0", 2, "kg_synth", kg(0.0, 0.0, 0.0, 0.0), stop="max_response_tokens", hops=1),
        _traj("q1", 0, "kg_synth", kg(0.5, 0.0, 1.0), hops=2),
        _traj("q1", 1, "kg_synth", kg(1.0, 1.0, 1.0), hops=2),
        _traj("q1", 2, "kg_synth", kg(0.0, 0.0, 0.0), stop="max_new_tokens_per_turn", hops=2),
        *[_traj("q2", k, "arith_synth", {"correct": 1.0, "answered": 1.0}, calls=[bad]) for k in range(3)],
    ]
    rep = summarize(trajs, ks=[1, 2, 3])
    assert rep["correct_metric"] == {"arith_synth": "correct", "kg_synth": "hits1"}
    assert [(q["uid"], q["n"], q["c"], q["hop"]) for q in rep["questions"]] == \
        [("q0", 3, 1, "hop1"), ("q1", 3, 2, "hop2"), ("q2", 3, 3, None)]
    kg_s = rep["by_source"]["kg_synth"]
    assert kg_s["questions"] == 2 and kg_s["samples"] == 6
    assert kg_s["f1"] == pytest.approx(3.0 / 6) and kg_s["em"] == pytest.approx(2 / 6) and kg_s["hits1"] == pytest.approx(3 / 6)
    assert kg_s["pass@1"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert kg_s["pass@2"] == pytest.approx((_comb_pass_at_k(3, 1, 2) + _comb_pass_at_k(3, 2, 2)) / 2)
    assert kg_s["pass@3"] == 1.0 and kg_s["mean@3"] == pytest.approx(0.5)
    assert kg_s["truncation_rate"] == pytest.approx(3 / 6) and kg_s["answer_rate"] == pytest.approx(5 / 6)
    assert kg_s["turns_mean"] == pytest.approx(8 / 6)
    assert kg_s["tools"] == {"kg_query": {"success_rate": pytest.approx(2 / 3), "calls_per_trajectory": pytest.approx(3 / 6)}}
    assert set(kg_s["by_hop"]) == {"hop1", "hop2"}
    h1 = kg_s["by_hop"]["hop1"]
    assert h1["questions"] == 1 and h1["pass@1"] == pytest.approx(1 / 3) and h1["truncation_rate"] == pytest.approx(2 / 3)
    ar = rep["by_source"]["arith_synth"]
    assert ar["accuracy"] == 1.0 and ar["pass@1"] == 1.0 and "f1" not in ar and "by_hop" not in ar
    assert ar["tools"] == {"calculator": {"success_rate": 0.0, "calls_per_trajectory": 1.0}}
    assert rep["overall"]["questions"] == 3 and rep["overall"]["pass@1"] == pytest.approx((1 / 3 + 2 / 3 + 1) / 3)
    assert rep["overall"]["correct_metric"] == ["correct", "hits1"]
    # another correctness criterion: em (q0 1/3, q1 1/3); arith has no em: unscored, no pass@k
    rep = summarize(trajs, ks=[1], correct_metric="em")
    assert rep["by_source"]["kg_synth"]["pass@1"] == pytest.approx(1 / 3)
    assert rep["correct_metric"]["arith_synth"] is None and "pass@1" not in rep["by_source"]["arith_synth"]


# ---------------------------------------------------------------- the command, end to end on the tiny model

def test_eval_pass_at_k_consistent_with_trajectories(tmp_path, tiny_model_path, data, capsys, monkeypatch):
    """n=4 samples at temperature 1 on rows scored by a registered reward that marks a sample correct when its first
    sampled token id is even: correctness varies per sample, and every number must follow from the JSONL."""
    from agent_rl.tasks import rewards

    def parity(traj, cfg):
        ok = float(bool(traj.response_ids) and traj.response_ids[0] % 2 == 0)
        return ok, {"correct": ok, "answered": float(len(traj.turns) > 1)}

    monkeypatch.setitem(rewards.REWARD_FNS, "parity_synth", parity)
    out = tmp_path / "out"
    rc, stdout, err = _run(["eval", "--model", tiny_model_path, "--data", str(data / "parity_synth.parquet"), "--out", str(out),
                            "--n", "4", "--temperature", "1.0", "--max-samples", "4", *FAST], capsys)
    assert rc == 0, err
    doc, md, recs = _load(out)
    assert doc["n"] == 4 and doc["ks"] == [1, 2, 4] and doc["sampling"]["temperature"] == 1.0
    assert not doc["sampling"]["greedy"] and doc["num_questions"] == 4 and len(recs) == 16 == doc["num_trajectories"]
    assert doc["command"].startswith("agent-rl eval --model ") and "--n 4" in doc["command"]
    assert doc["model"]["path"] == os.path.abspath(tiny_model_path) and doc["engine"] == "hf"
    assert doc["tools"].endswith("arith_tool_config.yaml")            # implied by the rows' ability (math)
    assert "commit" in doc["environment"] and doc["environment"]["torch"]
    assert doc["config"]["rollout"]["multi_turn"]["max_new_tokens_per_turn"] == 6
    # per question, from the trajectories: c, pass@k, mean@4
    by_uid = {}
    for r in recs:
        by_uid.setdefault(r["uid"], []).append(r)
    assert len(by_uid) == 4 and all(len(v) == 4 for v in by_uid.values())
    qs = {q["uid"]: q for q in doc["questions"]}
    cs = []
    for uid, rs in by_uid.items():
        flags = [int(r["reward_components"]["correct"] == 1.0) for r in sorted(rs, key=lambda r: r["sample_index"])]
        assert flags == [int(r["response_ids"][0] % 2 == 0) for r in sorted(rs, key=lambda r: r["sample_index"])]
        assert qs[uid]["correct"] == flags and qs[uid]["c"] == sum(flags) and qs[uid]["n"] == 4
        assert qs[uid]["trajectories"] == [f"{uid}/{k}" for k in range(4)]
        cs.append(sum(flags))
    s = doc["by_source"]["parity_synth"]
    assert doc["correct_metric"] == {"parity_synth": "correct"}
    for k in (1, 2, 4):
        assert s[f"pass@{k}"] == pytest.approx(sum(_comb_pass_at_k(4, c, k) for c in cs) / 4)
    assert s["mean@4"] == pytest.approx(sum(cs) / 16) == pytest.approx(s["accuracy"]) == pytest.approx(s["pass@1"])
    assert s["pass@1"] <= s["pass@2"] <= s["pass@4"]
    truncated = sum(r["stop_reason"] in TRUNCATION_REASONS for r in recs)
    assert s["truncation_rate"] == pytest.approx(truncated / 16)
    assert s["turns_mean"] == pytest.approx(sum(len(r["turns"]) for r in recs) / 16)
    assert s["answer_rate"] == pytest.approx(sum(len(r["turns"]) > 1 for r in recs) / 16)
    assert doc["overall"]["pass@4"] == s["pass@4"]
    # the markdown table: one row for the source, pass@k columns, values in percent
    head = next(line for line in md.splitlines() if line.startswith("| data source"))
    assert "pass@1" in head and "pass@4" in head and "mean@4" in head and "F1" not in head
    row = next(line for line in md.splitlines() if line.startswith("| parity_synth"))
    assert f"{100 * s['pass@4']:.1f}" in row.split(" | ")
    # `agent-rl view` reads the trajectories
    rc, _, err = _run(["view", str(out / "trajectories.jsonl"), "-o", str(tmp_path / "page.html")], capsys)
    assert rc == 0, err
    assert (tmp_path / "page.html").stat().st_size > 0


def test_eval_kg_greedy_per_hop_from_a_checkpoint_folder(tmp_path, tiny_model_path, data, capsys):
    """Greedy (n=1) on KG rows: the KG server starts for the data's own store, the checkpoint folder stands for its
    hf/ model, F1 / EM / Hits@1 per hop are the means of the reward's components in the JSONL."""
    ckpt = tmp_path / "checkpoints" / "global_step_3"
    ckpt.mkdir(parents=True)
    os.symlink(tiny_model_path, ckpt / "hf")
    out = tmp_path / "out"
    rc, stdout, err = _run(["eval", "--model", str(ckpt), "--data", str(data / "kg" / "test.parquet"), "--out", str(out),
                            *FAST], capsys)
    assert rc == 0, err
    assert "KG server:" in stdout and str(data / "kg" / "kg_store.json") in stdout
    doc, md, recs = _load(out)
    assert doc["model"]["path"].endswith(os.path.join("global_step_3", "hf"))
    assert doc["n"] == 1 and doc["ks"] == [1] and doc["sampling"]["greedy"] and doc["sampling"]["temperature"] == 0.0
    assert len(recs) == 6 and {r["sample_index"] for r in recs} == {0}
    assert doc["kg_store"].endswith("kg_store.json") and doc["tools"].endswith("kg_query_tool_config.yaml")
    s = doc["by_source"]["kg_synth"]
    assert doc["correct_metric"] == {"kg_synth": "hits1"}
    hops = {}
    for r in recs:
        hops.setdefault(f"hop{r['row']['extra_info']['hops']}", []).append(r)
    assert set(s["by_hop"]) == set(hops) == {"hop1", "hop2"}
    for key, rs in [("all", recs)] + sorted(hops.items()):
        g = s if key == "all" else s["by_hop"][key]
        assert g["questions"] == g["samples"] == len(rs)
        for comp in ("f1", "em", "hits1"):
            assert g[comp] == pytest.approx(sum(r["reward_components"][comp] for r in rs) / len(rs))
        assert g["pass@1"] == pytest.approx(g["hits1"]) == pytest.approx(g["mean@1"])
        assert g["answer_rate"] == pytest.approx(sum(r["reward_components"]["answered"] for r in rs) / len(rs))
        assert g["truncation_rate"] == pytest.approx(sum(r["stop_reason"] in TRUNCATION_REASONS for r in rs) / len(rs))
    assert all(len(q["correct"]) == 1 for q in doc["questions"])
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| data source"))
    assert all(c in head for c in ("F1", "EM", "Hits@1", "pass@1", "truncated", "turns")) and "pass@2" not in head
    assert sum(line.startswith("| kg_synth |") for line in lines) == 3     # all, hop 1, hop 2


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

@pytest.mark.parametrize("case", ["model", "data", "source", "k", "engine"])
def test_eval_bad_input_is_one_line_exit_2(case, tmp_path, tiny_model_path, data, capsys, monkeypatch):
    out = tmp_path / "out"
    model, parquet, extra = tiny_model_path, str(data / "arith" / "test.parquet"), []
    if case == "model":
        model = str(tmp_path / "no_such_model")
    elif case == "data":
        parquet = str(tmp_path / "missing.parquet")
    elif case == "source":
        parquet = str(data / "mystery_source.parquet")
    elif case == "k":
        extra = ["--n", "2", "--k", "3"]
    else:
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        extra = ["--engine", "sglang"]
    argv = ["eval", "--model", model, "--data", parquet, "--out", str(out), "--no-progress", *extra]
    if case != "engine":
        argv += ["--engine", "hf"]
    rc, _, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    line = lines[0]
    assert line.startswith("agent-rl eval: ")
    expected = {"model": ["--model", "no_such_model"], "data": ["--data", "missing.parquet"],
                "source": ["mystery_source", "register_reward"], "k": ["--k", "--n"], "engine": ["sglang", "CUDA"]}
    assert all(word in line for word in expected[case]), line
    assert not out.exists()
