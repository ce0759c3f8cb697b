"""Shared fixtures. Models come from the SmolLM2 tokenizer (fetched once into the agent-rl cache)."""
import os

import pytest


def _cuda_and_sglang() -> bool:
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import sglang  # noqa: F401
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_and_sglang():
        return
    skip = pytest.mark.skip(reason="needs CUDA and sglang")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer_path():
    from agent_rl.model.prepare import tokenizer_dir

    return tokenizer_dir()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_path)


@pytest.fixture(scope="session")
def tiny_model_path():
    """A tiny random Llama (2 layers, hidden 64) with the SmolLM2 tokenizer and our chat template."""
    from agent_rl.model.prepare import cache_dir, tiny_model_dir

    return tiny_model_dir(os.path.join(cache_dir(), "test-models", "tiny-llama-h64-l2"))


@pytest.fixture(scope="session")
def served_tiny_model(tiny_model_path, tmp_path_factory):
    """`agent-rl serve` of the tiny model on loopback (any free port, hf engine), shared by the serve and judge tests:
    {"url": "http://127.0.0.1:PORT", "model": name, "proc": Popen, "log": path}. Stopped by pid at teardown."""
    import re
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent_rl.cli.main", "serve", tiny_model_path, "--port", "0",
                                 "--engine", "hf", "--seed", "0", "--served-model-name", "tiny"],
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        url, deadline = None, time.time() + 180
        while url is None:
            m = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", log.read_text())
            if m:
                url = m.group(1)
            elif proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"agent-rl serve did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            else:
                time.sleep(0.2)
        with urllib.request.urlopen(url + "/health", timeout=30) as r:
            assert r.status == 200
        yield {"url": url, "model": "tiny", "proc": proc, "log": log}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # a clean stop on SIGTERM (tests/cli/test_serve.py checks SIGINT with a request in flight)
    assert proc.returncode == 0 and "stopped after" in log.read_text(), log.read_text()[-2000:]


def _eager_if_instant(loop, coro):
    """Python 3.12's eager task start (tool_runtime/bounded._start) for coroutines that finish in their first step:
    a future that is already done, holding what the task would hold."""
    import asyncio

    fut = loop.create_future()
    try:
        coro.send(None)
    except StopIteration as stop:
        fut.set_result(stop.value)
        return fut
    except asyncio.CancelledError:
        fut.cancel()
        return fut
    except BaseException as e:     # noqa: BLE001 - handed over as the task would hold it
        fut.set_exception(e)
        return fut
    coro.close()
    raise AssertionError("this stand-in only starts coroutines that never wait")


@pytest.fixture(params=["stand-in", "python"])
def eager_tool_tasks(request, monkeypatch):
    """Tool calls' tasks start eagerly: on Python 3.11 (CI) through `_eager_if_instant`, and with Python's own eager
    tasks where it has them (3.12+; skipped before)."""
    import sys

    from agent_rl.tool_runtime import bounded

    if request.param == "stand-in":
        monkeypatch.setattr(bounded, "_start", _eager_if_instant)
    elif sys.version_info < (3, 12):
        pytest.skip("eager tasks need Python 3.12")


@pytest.fixture
def session_requests(monkeypatch):
    """sglang's OpenSessionReqInput / CloseSessionReqInput, where sglang itself is not installed."""
    import sys
    import types

    class Req:
        def __init__(self, **kw):
            self.__dict__.update(kw)
    mod = types.ModuleType("sglang.srt.managers.io_struct")
    mod.OpenSessionReqInput = mod.CloseSessionReqInput = Req
    for name in ("sglang", "sglang.srt", "sglang.srt.managers"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sglang.srt.managers.io_struct", mod)
