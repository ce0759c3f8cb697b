"""`agent-rl serve`: the real server (a subprocess on loopback, the tiny random model on the hf engine, conftest
`served_tiny_model`) answers OpenAI-shaped chat completions, batches concurrent requests, refuses bad ones with an
OpenAI error object, and stops cleanly on SIGINT / SIGTERM."""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest


def post(url, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url, path):
    try:
        with urllib.request.urlopen(url + path, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


HI = [{"role": "user", "content": "Say hello."}]


def test_models_and_health(served_tiny_model):
    url = served_tiny_model["url"]
    status, body = get(url, "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["tiny"] and body["data"][0]["object"] == "model"
    status, body = get(url, "/health")
    assert status == 200 and body["status"] == "ok" and body["engine"] == "hf"


def test_chat_completion_has_openai_shape_and_greedy_is_deterministic(served_tiny_model):
    url = served_tiny_model["url"]
    status, body = post(url, {"model": "tiny", "messages": HI, "max_tokens": 6, "temperature": 0})
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == "tiny"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
    u = body["usage"]
    assert 0 < u["completion_tokens"] <= 6 and u["prompt_tokens"] > 3
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    if u["completion_tokens"] < 6:
        assert choice["finish_reason"] == "stop"
    # model omitted, same greedy request: same text
    status, again = post(url, {"messages": HI, "max_tokens": 6, "temperature": 0})
    assert status == 200 and again["choices"][0]["message"]["content"] == choice["message"]["content"]


def test_n_samples_and_seed(served_tiny_model):
    url = served_tiny_model["url"]
    req = {"messages": HI, "max_tokens": 8, "temperature": 1.0, "top_p": 0.95, "n": 3, "seed": 123}
    status, a = post(url, req)
    assert status == 200, a
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    status, b = post(url, req)
    assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]
    assert a["usage"]["completion_tokens"] > 0 and a["usage"]["prompt_tokens"] == b["usage"]["prompt_tokens"]


def test_stop_string_cuts_the_completion(served_tiny_model):
    url = served_tiny_model["url"]
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Count: 1 2 3"}]
    sampled = {"messages": msgs, "max_tokens": 24, "temperature": 1.0, "seed": 7}   # seeded: reproducible
    status, body = post(url, sampled)
    text = body["choices"][0]["message"]["content"]
    visible = [i for i in range(1, len(text)) if not text[i].isspace()]
    if not visible:
        pytest.skip(f"the tiny model's text has no visible character after the first: {text!r}")
    i = visible[len(visible) // 2]
    stop = text[i]
    status, cut = post(url, dict(sampled, stop=[stop, "\x00never"]))
    assert status == 200, cut
    assert cut["choices"][0]["message"]["content"] == text[:text.find(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("body,param,status", [
    ({"messages": []}, "messages", 400),
    ({"messages": "hi"}, "messages", 400),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", 400),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", 400),
    ({"messages": HI, "max_tokens": 0}, "max_tokens", 400),
    ({"messages": HI, "max_tokens": "ten"}, "max_tokens", 400),
    ({"messages": HI, "temperature": -1}, "temperature", 400),
    ({"messages": HI, "top_p": 0}, "top_p", 400),
    ({"messages": HI, "n": 0}, "n", 400),
    ({"messages": HI, "stop": [""]}, "stop", 400),
    ({"messages": HI, "seed": "x"}, "seed", 400),
    ({"messages": HI, "stream": True}, "stream", 400),
    ({"messages": HI, "max_tokens": 10 ** 7}, "max_tokens", 400),
    ({"messages": HI, "model": "gpt-4o"}, "model", 404),
    ([1, 2], None, 400),
])
def test_bad_requests_get_an_openai_error(served_tiny_model, body, param, status):
    got, err = post(served_tiny_model["url"], body)
    assert got == status
    e = err["error"]
    assert e["param"] == param and e["type"] == "invalid_request_error"
    assert e["message"] and "\n" not in e["message"]


def test_not_json_and_unknown_route(served_tiny_model):
    url = served_tiny_model["url"]
    status, err = post(url, None, raw=b"{not json")
    assert status == 400 and "not JSON" in err["error"]["message"]
    status, err = get(url, "/v1/completions-nope")
    assert status == 404 and "Not Found" in err["error"]["message"]


def test_concurrent_requests_are_served_together(served_tiny_model):
    """Eight requests at once: all answered, and the hf engine decoded them in shared batches (more than one row
    per forward step on average over the window)."""
    import aiohttp

    url = served_tiny_model["url"]
    before = get(url, "/health")[1]["engine_stats"]

    async def main():
        async with aiohttp.ClientSession() as s:
            async def one(i):
                body = {"messages": [{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}],
                        "max_tokens": 32, "temperature": 0.7, "seed": i}
                async with s.post(url + "/v1/chat/completions", json=body) as r:
                    return r.status, await r.json()
            return await asyncio.gather(*[one(i) for i in range(8)])

    results = asyncio.run(main())
    assert [s for s, _ in results] == [200] * 8
    assert all(b["choices"][0]["message"]["role"] == "assistant" for _, b in results)
    after = get(url, "/health")[1]["engine_stats"]
    steps = after["steps"] - before["steps"]
    rows = after["rows_sampled"] - before["rows_sampled"]
    assert rows == sum(b["usage"]["completion_tokens"] for _, b in results)
    assert rows / steps > 1.5, (rows, steps)


def test_checkpoint_folder_means_its_hf_model(tiny_model_path, tmp_path):
    from agent_rl.orchestration.serve import resolve_model_path

    ckpt = tmp_path / "global_step_3"
    ckpt.mkdir()
    os.symlink(tiny_model_path, ckpt / "hf")
    assert resolve_model_path(str(ckpt)) == str(ckpt / "hf")
    assert resolve_model_path(tiny_model_path) == tiny_model_path


def test_a_missing_model_is_one_line(tmp_path, capsys):
    from agent_rl.cli.main import main

    assert main(["serve", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agent-rl serve: MODEL: not found:") and "\n" not in err
    assert main(["serve", str(tmp_path)]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_clean_shutdown_on_sigint(tiny_model_path, tmp_path):
    """A request in flight when SIGINT comes is still answered (drain), then the process exits 0. (SIGTERM: the
    shared server's teardown in conftest checks the same exit.)"""
    import threading

    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent_rl.cli.main", "serve", tiny_model_path, "--port", "0",
                                 "--engine", "hf", "--drain-s", "60"], stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.time() + 180
        while not (m := re.search(r"on (http://127\.0\.0\.1:\d+)/v1", log.read_text())):
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        url = m.group(1)
        result = {}
        t = threading.Thread(target=lambda: result.update(r=post(url, {"messages": HI, "max_tokens": 150,
                                                                         "temperature": 1.0, "seed": 1})))
        t.start()
        while get(url, "/health")[1]["in_flight"] == 0 and t.is_alive():
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
        t.join(timeout=60)
        status, body = result["r"]
        assert status == 200 and body["usage"]["completion_tokens"] > 0
        text = log.read_text()
        assert "stopping (1 requests in flight)" in text and "stopped after 1 completions" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sglang_serving_gets_the_training_engine_defaults(monkeypatch):
    """`agent-rl serve --engine sglang` starts sglang with rollout.engine_kwargs' defaults (triton attention, pytorch
    sampling, no grammar backend): without them sglang picks FlashAttention-3, which the GPU host's sgl_kernel lacks
    (found on the H200, 2026-12-02: the server died at start)."""
    import agent_rl.engines.sglang_engine as sg
    from agent_rl.config.schema import RolloutConfig
    from agent_rl.orchestration.serve import build_engine_for

    seen = {}

    class FakeSGLang:
        def __init__(self, model_path, **kw):
            seen.update(kw)

    monkeypatch.setattr(sg, "SGLangEngine", FakeSGLang)
    build_engine_for("/some/model", "sglang", gpu_memory_utilization=0.3)
    assert seen["engine_kwargs"] == RolloutConfig().engine_kwargs
    assert seen["engine_kwargs"]["attention_backend"] == "triton" and seen["mem_fraction_static"] == 0.3
