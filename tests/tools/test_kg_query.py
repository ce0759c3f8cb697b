"""kg_query through the runtime against the real KG server: results, metrics, server down, load."""
import asyncio
import os
import socket
import time

import pytest

from agent_rl.tool_runtime.metrics import percentile
from agent_rl.tool_runtime.runtime import ToolRuntime
from tools.kg_query import DEFAULT_URL, ENV_URL, KGQueryTool, resolve_server_url

pytestmark = pytest.mark.timeout(60)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KG_YAML = os.path.join(REPO, "configs", "tool_config", "kg_query_tool_config.yaml")


def kw(sample_id="q1"):
    return {"kg_query": {"create_kwargs": {"sample_id": sample_id, "dataset": "tiny"}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_url_resolution(monkeypatch):
    monkeypatch.delenv(ENV_URL, raising=False)
    assert resolve_server_url({}) == DEFAULT_URL == "http://127.0.0.1:8001"
    monkeypatch.setenv(ENV_URL, "http://127.0.0.1:9999/")
    assert resolve_server_url({}) == "http://127.0.0.1:9999"
    assert resolve_server_url({"server_url": "http://127.0.0.1:7777"}) == "http://127.0.0.1:7777"


async def test_queries_metrics_and_repeats(kg_server, monkeypatch):
    monkeypatch.setenv(ENV_URL, kg_server)
    rt = ToolRuntime.from_yaml(KG_YAML)
    try:
        async with rt.session("t", kw()) as s:
            r1 = await s.call("kg_query", '{"action": "get_relations_out", "entity": "Barack Obama"}')
            r2 = await s.call("kg_query", {"action": "get_entities_out", "entity": "Barack Obama", "relation": "people.person.spouse"})
            r3 = await s.call("kg_query", {"action": "get_relations_out", "entity": "Barack Obama"})
            r4 = await s.call("kg_query", {"action": "get_entities_out", "entity": "Barack Obama", "relation": "people.person.age"})
            r5 = await s.call("kg_query", {"action": "teleport", "entity": "x"})
    finally:
        await rt.close()
    assert r1.status == "ok" and "people.person.children" in r1.observation
    assert r1.metrics == {"success": True, "error_type": "KG_SUCCESS", "lookup": "get_relations_out|barack obama|",
                          "repeated": False}
    assert r2.observation.endswith("Michelle Obama") and not r2.metrics["repeated"]
    assert r2.metrics["entities"] == ["Michelle Obama"]   # what the KG reward reads, not the text
    assert r2.metrics["lookup"] == "get_entities_out|barack obama|people.person.spouse"
    assert r3.metrics["repeated"] is True
    assert r4.metrics == {"success": False, "error_type": "KG_RELATION_NOT_FOUND",
                          "lookup": "get_entities_out|barack obama|people.person.age", "repeated": False}
    assert "people.person.place_of_birth" in r4.observation
    assert r5.status == "invalid_arguments" and "field 'action'" in r5.observation
    snap = rt.metrics.snapshot()
    assert snap["tools/kg_query/calls"] == 5 and snap["tools/kg_query/success_mean"] == 0.75
    assert snap["tools/kg_query/repeated_mean"] == 0.25


async def test_unexpected_arguments_are_format_errors(kg_server, monkeypatch):
    monkeypatch.setenv(ENV_URL, kg_server)
    rt = ToolRuntime.from_yaml(KG_YAML)
    try:
        async with rt.session("t", kw()) as s:
            rel = await s.call("kg_query", {"action": "get_relations_out", "entity": "Barack Obama",
                                            "relation": "people.person.spouse"})
            empty = await s.call("kg_query", {"action": "get_relations_in", "entity": "Barack Obama", "relation": ""})
            extra = await s.call("kg_query", {"action": "get_relations_out", "entity": "Barack Obama", "hops": 2})
    finally:
        await rt.close()
    for rec in (rel, empty, extra):   # a malformed call earns no query validity
        assert rec.status == "ok" and rec.metrics["success"] is False and rec.metrics["error_type"] == "KG_FORMAT_ERROR"
    assert "takes no relation" in rel.observation and "Unexpected argument(s) hops" in extra.observation


async def test_missing_sample_id_is_create_failed(kg_server, monkeypatch):
    monkeypatch.setenv(ENV_URL, kg_server)
    rt = ToolRuntime.from_yaml(KG_YAML)
    async with rt.session("t", {}) as s:
        rec = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
    await rt.close()
    assert rec.status == "create_failed" and "sample_id" in rec.observation


async def test_kg_server_down_gives_error_observation_quickly():
    url = f"http://127.0.0.1:{free_port()}"
    schema = {"type": "function", "function": {"name": "kg_query", "description": "d",
              "parameters": {"type": "object", "properties": {"action": {"type": "string"}, "entity": {"type": "string"}}}}}
    tool = KGQueryTool({"server_url": url, "connect_retries": 2, "connect_backoff_s": 0.02, "request_timeout_s": 1}, schema)
    rt = ToolRuntime([tool])
    t0 = time.perf_counter()
    async with rt.session("t", kw()) as s:
        rec = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
    await rt.close()
    assert time.perf_counter() - t0 < 3
    assert rec.status == "ok" and rec.observation.startswith("Error: the knowledge graph server at " + url)
    assert rec.metrics["error_type"] == "KG_SERVER_ERROR" and rec.metrics["success"] is False


async def test_load_2000_requests_64_concurrent(kg_server, monkeypatch):
    monkeypatch.setenv(ENV_URL, kg_server)
    rt = ToolRuntime.from_yaml(KG_YAML)
    queries = [
        ("q1", {"action": "get_relations_out", "entity": "Barack Obama"}),
        ("q1", {"action": "get_entities_out", "entity": "Barack Obama", "relation": "people.person.children"}),
        ("q1", {"action": "get_entities_in", "entity": "Hawaii", "relation": "location.location.containedby"}),
        ("q2", {"action": "get_relations_in", "entity": "France"}),
    ]
    total, workers = 2000, 64
    records = []

    async def worker(w: int):
        for j in range(w, total, workers):
            sid, args = queries[j % len(queries)]
            async with rt.session(f"load-{j}", kw(sid)) as s:
                records.append(await s.call("kg_query", args))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - t0
    await rt.close()
    lat = [r.latency_s for r in records]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    print(f"\nkg_query load: {len(records)} calls, {workers} concurrent, {elapsed:.2f} s "
          f"({len(records) / elapsed:.0f} calls/s), latency p50 {p50 * 1e3:.1f} ms p99 {p99 * 1e3:.1f} ms")
    assert len(records) == total
    bad = [r for r in records if r.status != "ok" or not r.metrics.get("success")]
    assert not bad, bad[:3]
    snap = rt.metrics.snapshot()
    assert snap["tools/kg_query/calls"] == total and not any(k.startswith("tools/errors/") for k in snap)
    assert elapsed < 20, elapsed


async def test_wrong_url_gives_unexpected_reply_observation(kg_server):
    schema = {"type": "function", "function": {"name": "kg_query", "description": "d",
              "parameters": {"type": "object", "properties": {"action": {"type": "string"}, "entity": {"type": "string"}}}}}
    tool = KGQueryTool({"server_url": kg_server + "/not-here"}, schema)
    rt = ToolRuntime([tool])
    async with rt.session("t", kw()) as s:
        rec = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
    await rt.close()
    assert rec.status == "ok" and "gave an unexpected reply (HTTP 404" in rec.observation
    assert rec.metrics["error_type"] == "KG_SERVER_ERROR"
