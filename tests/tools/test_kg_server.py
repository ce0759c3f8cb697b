"""The KG server over real HTTP on loopback: API, bad requests, the thread helper, the CLI."""
import asyncio
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from tools.kg_index import ACTIONS, ERROR_TYPES
from tools.kg_server import start_kg_server, start_kg_server_thread

pytestmark = pytest.mark.timeout(60)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def post(url, body, raw=False):
    async with aiohttp.ClientSession() as s:
        data = body if raw else json.dumps(body)
        async with s.post(f"{url}/retrieve", data=data, headers={"Content-Type": "application/json"}) as r:
            return r.status, await r.json(content_type=None)


async def test_health_and_actions(kg_server, kg_store_path):
    with open(kg_store_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{kg_server}/health") as r:
            assert r.status == 200 and await r.json() == {"status": "ok", "samples": 2, "triples": 11,
                                                          "store_sha256": digest}
        async with s.get(f"{kg_server}/actions") as r:
            body = await r.json()
    assert body["actions"] == list(ACTIONS) and body["aliases"]["get_tail_entities"] == "get_entities_out"
    assert body["error_types"] == list(ERROR_TYPES)


async def test_single_and_batch(kg_server):
    status, body = await post(kg_server, {"sample_id": "q1", "action": "get_entities_out", "entity": "Barack Obama",
                                          "relation": "people.person.children", "dataset": "tiny"})
    assert status == 200 and body == {"success": True, "error_type": "KG_SUCCESS", "data": ["Malia Obama", "Sasha Obama"],
                                      "result": 'Tail entities of "Barack Obama" via people.person.children: Malia Obama, Sasha Obama'}
    status, body = await post(kg_server, [
        {"sample_id": "q2", "action": "get_head_relations", "entity": "paris"},
        {"sample_id": "q2", "action": "get_relations_out", "entity": "Berlin"},
        {"sample_id": "nope", "action": "get_relations_out", "entity": "Paris"},
        {"sample_id": "q2", "action": "fly", "entity": "Paris"},
    ])
    assert status == 200 and [b["error_type"] for b in body] == [
        "KG_SUCCESS", "KG_ENTITY_NOT_FOUND", "KG_SAMPLE_NOT_FOUND", "KG_FORMAT_ERROR"]
    assert body[0]["data"] == ["location.country.capital"]
    assert all(set(b) == {"success", "error_type", "result", "data"} for b in body)


@pytest.mark.parametrize("body, raw, status, needle", [
    ("{not json", True, 400, "not valid JSON"),
    (b"\xff\xfe", True, 400, "not valid JSON"),
    ("42", True, 400, "must be a JSON object"),
    ([], False, 400, "empty batch"),
    ({"sample_id": "q1", "action": "get_relations_out"}, False, 400, "missing the field 'entity'"),
    ({"sample_id": "q1", "action": "get_relations_out", "entity": 5}, False, 400, "entity must be a string"),
    ({"sample_id": ["q1"], "action": "get_relations_out", "entity": "x"}, False, 400, "sample_id must be a string"),
    ([{"sample_id": "q1", "action": "get_relations_out", "entity": "x", "relation": 3}], False, 400, "request[0].relation"),
    ([{"sample_id": "q1", "action": "a", "entity": "x"}] * 1025, False, 413, "exceeds the limit of 1024"),
    ("x" * (1 << 20 + 1), True, 413, "larger than"),
    # decoding these used to raise (RecursionError, ValueError, UnicodeEncodeError) and answer HTTP 500
    pytest.param("[" * 100000, True, 400, "nests deeper than 8 levels", id="deep-nesting"),
    pytest.param('{"sample_id": "q1", "action": "get_relations_out", "entity": "x", "dataset": ' + "[" * 5000
                 + "]" * 5000 + "}", True, 400, "nests deeper than 8 levels", id="deep-nesting-in-a-field"),
    pytest.param('{"sample_id": "q1", "action": "get_relations_out", "entity": ' + "1" * 5000 + "}", True, 400,
                 "not valid JSON", id="number-too-long"),
    pytest.param('{"sample_id": "q1", "action": "get_relations_out", "entity": "\\ud800"}', True, 400,
                 "not valid Unicode", id="lone-surrogate"),
    pytest.param('"' + '\\"' * 300000, True, 400, "not valid JSON", id="unterminated-string-of-escapes"),
])
async def test_bad_requests(kg_server, body, raw, status, needle):
    got, reply = await post(kg_server, body, raw)
    assert got == status and reply["error_type"] == "KG_FORMAT_ERROR" and not reply["success"]
    assert needle in reply["result"], reply


async def test_unknown_path_and_method_are_json(kg_server):
    async with aiohttp.ClientSession() as s:
        for method, path, status in (("GET", "/nope", 404), ("GET", "/retrieve", 405)):
            async with s.request(method, f"{kg_server}{path}") as r:
                body = await r.json(content_type=None)
                assert r.status == status and body["error_type"] == "KG_FORMAT_ERROR" and not body["success"]


HEAD = b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def _port(url):
    return int(url.rsplit(":", 1)[1])


async def test_half_open_connections_are_closed(kg_store_path):
    """Half a header block, or headers then half a body: closed within the configured timeouts."""
    runner, url = await start_kg_server(kg_store_path, "127.0.0.1", 0, idle_timeout_s=0.5, read_timeout_s=0.5)
    try:
        port = _port(url)
        loop = asyncio.get_running_loop()
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"POST /retrieve HTTP/1.1\r\nHost: 127.")                  # headers never finished
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(HEAD + b"Content-Length: 1000\r\n\r\n[{")                # body never finished
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)          # sends nothing at all
        t0 = loop.time()
        got = await asyncio.wait_for(asyncio.gather(r1.read(), r2.read(), r3.read()), 10)
        assert loop.time() - t0 < 5
        assert got[0] == b"" and got[2] == b""
        assert got[1].startswith(b"HTTP/1.1 408") and b"KG_FORMAT_ERROR" in got[1] and b"within 0.5 s" in got[1]
        for w in (w1, w2, w3):
            w.close()
    finally:
        await runner.cleanup()


async def test_dropped_connections_log_no_traceback(kg_store_path, caplog):
    runner, url = await start_kg_server(kg_store_path, "127.0.0.1", 0)
    caplog.set_level(logging.DEBUG)
    try:
        port = _port(url)
        for _ in range(20):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(HEAD + b"Content-Length: 100000\r\n\r\n" + b"[" * 100)
            await w.drain()
            await asyncio.sleep(0.02)                                      # the handler is reading the body
            w.transport.abort()                                            # RST mid-request
        await asyncio.sleep(0.3)
        status, body = await post(url, {"sample_id": "q2", "action": "get_relations_out", "entity": "France"})
        assert status == 200 and body["success"]
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text
    drops = [r for r in caplog.records if "disconnected mid-request" in r.getMessage()]
    assert 1 <= len(drops) <= 20 and all(r.levelno == logging.DEBUG for r in drops)


async def test_in_flight_cap_answers_503(kg_store_path):
    runner, url = await start_kg_server(kg_store_path, "127.0.0.1", 0, max_in_flight=2, read_timeout_s=5)
    try:
        port = _port(url)
        held = []
        for _ in range(2):                                                 # two requests stuck reading their body
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(HEAD + b"Content-Length: 1000\r\n\r\n[")
            await w.drain()
            held.append((r, w))
        await asyncio.sleep(0.2)
        status, body = await post(url, {"sample_id": "q2", "action": "get_relations_out", "entity": "France"})
        assert status == 503 and body["error_type"] == "KG_SERVER_ERROR" and "busy" in body["result"]
        for _, w in held:
            w.transport.abort()
        await asyncio.sleep(0.2)
        status, body = await post(url, {"sample_id": "q2", "action": "get_relations_out", "entity": "France"})
        assert status == 200 and body["success"]
    finally:
        await runner.cleanup()


async def test_brackets_inside_strings_are_not_nesting(kg_server):
    status, body = await post(kg_server, [{"sample_id": "q2", "action": "get_relations_out", "entity": '[{"\\' * 50}])
    assert status == 200 and body[0]["error_type"] == "KG_ENTITY_NOT_FOUND"


async def test_in_process_start_rejects_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="KG store not found"):
        await start_kg_server(str(tmp_path / "none.json"), "127.0.0.1", 0)


def test_thread_helper(kg_store_path):
    handle = start_kg_server_thread(kg_store_path, "127.0.0.1", 0)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{handle.url}/health", timeout=5) as r:
            assert json.load(r)["samples"] == 2
        req = urllib.request.Request(f"{handle.url}/retrieve", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"sample_id": "q2", "action": "get_relations_out", "entity": "France"}).encode())
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.load(r)["data"] == ["location.country.capital"]
        port = int(handle.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):           # port in use: the error reaches the caller
            start_kg_server_thread(kg_store_path, "127.0.0.1", port)
    finally:
        handle.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{handle.url}/health", timeout=2)


def test_cli_kg_server_process(kg_store_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import sys; from agent_rl.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "kg-server", "--store", kg_store_path, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("KG server on http://127.0.0.1:") and "(2 samples, 11 triples)" in line, line
        url = line.split()[3]
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            assert json.load(r)["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-c", code, "kg-server", "--store", "/nonexistent/kg.json", "--port", "0"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert bad.returncode == 1 and "KG store not found" in bad.stderr
    bad = subprocess.run([sys.executable, "-c", code, "kg-server", "--store", kg_store_path, "--port", "0",
                          "--max-in-flight", "0"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "--max-in-flight must be positive" in bad.stderr
