"""`agent-rl bench` end to end on the hf engine with the tiny model (CI smoke run)."""
import json
import os

import pytest

from agent_rl.cli.main import main

PNG = b"\x89PNG"


def _png(path):
    with open(path, "rb") as f:
        return f.read(4) == PNG


@pytest.mark.slow  # ~15 s of planned tool waits + model load; ~40 s on a busy 2-core box
def test_bench_rollout_smoke(tiny_model_path, tmp_path):
    out = tmp_path / "rollout"
    # seed 17: the planned tool latencies make turn-batched wait >= 8.0 s on tools, async >= 4.7 s
    rc = main(["bench", "rollout", "--engine", "hf", "--model", tiny_model_path, "--out", str(out),
               "--prompts", "4", "--n", "2", "--turns", "3", "--tokens-per-turn", "2",
               "--tool-latency", "lognormal:mean=1,sigma=1,max=4", "--seed", "17",
               "--modes", "turn-batched,async", "--steps", "1", "--no-progress"])
    assert rc == 0
    res = json.load(open(out / "rollout_bench.json"))
    assert res["command"].startswith("agent-rl bench rollout") and "--seed 17" in res["command"]
    env = res["environment"]
    assert env["python"] and env["torch"] and env["transformers"] and env["device"] and "commit" in env
    assert res["ceiling"]["tokens_per_s"] > 0 and res["ceiling"]["requests"] == 8
    tb, asy = res["modes"]
    assert (tb["mode"], asy["mode"]) == ("turn-batched", "async")
    for m in (tb, asy):
        assert m["trajectories_kept"] == 8 and m["gen_tokens"] == 8 * 3 * 2
        assert m["gen_tokens_per_s"] > 0 and m["ratio_to_ceiling"] > 0
        assert 0 < m["latency_p50_s"] <= m["latency_p99_s"] <= m["wall_s"]
        assert 0 <= m["engine_idle_s"] < m["wall_s"]
    assert tb["wall_s"] > 8.0
    assert asy["wall_s"] < tb["wall_s"]
    assert asy["engine_idle_frac"] < tb["engine_idle_frac"]
    for name in ("throughput.png", "completion_cdf.png", "engine_busy.png"):
        assert _png(out / name)
    summary = open(out / "summary.md").read()
    assert "| turn-batched |" in summary and "| async |" in summary and "Raw engine ceiling" in summary


def test_bench_engine_smoke(tiny_model_path, tmp_path):
    rc = main(["bench", "engine", "--engine", "hf", "--model", tiny_model_path, "--out", str(tmp_path),
               "--prompts", "4", "--prompt-len", "16", "--new-tokens", "4", "--no-progress"])
    assert rc == 0
    res = json.load(open(os.path.join(tmp_path, "engine_bench.json")))
    c = res["ceiling"]
    assert c["requests"] == 4 and c["output_tokens"] == 16 and c["tokens_per_s"] > 0 and c["requests_per_s"] > 0
    assert os.path.exists(os.path.join(tmp_path, "summary.md"))


def test_bench_rejects_bad_workload(tiny_model_path, tmp_path, capsys):
    rc = main(["bench", "rollout", "--model", tiny_model_path, "--out", str(tmp_path),
               "--tokens-per-turn", "pareto:alpha=1.2,scale=8", "--no-progress"])
    assert rc == 2 and "max= clip" in capsys.readouterr().err


def test_bench_engine_on_two_replicas(tiny_model_path, tmp_path):
    rc = main(["bench", "engine", "--engine", "hf", "--engine-replicas", "2", "--model", tiny_model_path,
               "--out", str(tmp_path), "--prompts", "4", "--prompt-len", "16", "--new-tokens", "4", "--no-progress"])
    assert rc == 0
    res = json.load(open(os.path.join(tmp_path, "engine_bench.json")))
    assert res["ceiling"]["requests"] == 4 and res["ceiling"]["output_tokens"] == 16
    assert res["command"].count("--engine-replicas 2") == 1


def test_bench_refuses_replicas_it_cannot_start(tiny_model_path, tmp_path, capsys):
    for extra, why in ((["--engine", "sim", "--sim-gpu-share", "1.5"], "needs a share between 0 and 1"),
                       (["--engine", "http", "--server-url", "http://127.0.0.1:9"], "not http"),
                       (["--engine", "hf", "--engine-replicas", "0"], "needs at least 1 engine"),
                       (["--engine", "hf", "--mem-fraction", "1"], "--mem-fraction 1: needs a share between 0 and 1")):
        args = ["bench", "rollout", "--model", tiny_model_path, "--out", str(tmp_path / "o"), "--no-progress"] + extra
        if "--engine-replicas" not in extra:
            args += ["--engine-replicas", "2"]
        assert main(args) == 2
        assert why in capsys.readouterr().err


def test_engine_kwarg_values():
    from agent_rl.cli.bench_args import _engine_kwargs

    got = _engine_kwargs(["enable_memory_saver=False", "disable_cuda_graph=True", "a=false", "b=NONE", "c=0.25",
                          "d=[1, 2]", "attention_backend=triton", "e=\"False\"", "f=x=y"])
    assert got["enable_memory_saver"] is False and got["disable_cuda_graph"] is True and got["a"] is False
    assert got["b"] is None and got["c"] == 0.25 and got["d"] == [1, 2] and got["attention_backend"] == "triton"
    assert got["e"] == "False" and got["f"] == "x=y"   # JSON's quotes keep a word text
