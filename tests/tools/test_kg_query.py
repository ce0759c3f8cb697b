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


SCHEMA = {"type": "function", "function": {"name": "kg_query", "description": "d",
          "parameters": {"type": "object", "properties": {"action": {"type": "string"}, "entity": {"type": "string"}}}}}


def assert_counted_server_error(rt, recs, url):
    """Each call is a tool error (status exception) counted in errors/*, rollout/tool_error_rate 1, and the
    model still sees a KG_SERVER_ERROR observation naming the server."""
    from agent_rl.tasks.kg.metrics import step_metrics
    from agent_rl.rollout.metrics import trajectory_metrics
    from agent_rl.rollout.trajectory import Trajectory, TurnRecord

    for rec in recs:
        assert rec.status == "exception" and not rec.succeeded
        assert rec.observation.startswith("Error: kg_query failed: KGServerError: KG_SERVER_ERROR: "
                                          f"the knowledge graph server at {url} "), rec.observation
    snap = rt.metrics.snapshot()
    assert snap["tools/kg_query/calls"] == len(recs)
    assert snap["tools/kg_query/errors/exception"] == len(recs) and snap["tools/errors/exception"] == len(recs)
    traj = Trajectory(uid="u", sample_index=0, row={}, prompt_ids=[1], turns=[TurnRecord(index=0, output_ids=[2], logprobs=[0.0], finish_reason="stop", text="",
                                                                               tool_calls=list(recs))])
    assert trajectory_metrics([traj])["rollout/tool_error_rate"] == 1.0
    assert step_metrics([traj])["kg/query_success_rate"] == 0.0


async def test_kg_server_down_is_a_counted_tool_error():
    url = f"http://127.0.0.1:{free_port()}"   # closed loopback port: no server
    tool = KGQueryTool({"server_url": url, "connect_retries": 2, "connect_backoff_s": 0.02, "request_timeout_s": 1}, SCHEMA)
    rt = ToolRuntime([tool])
    t0 = time.perf_counter()
    async with rt.session("t", kw()) as s:
        rec = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
        again = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
    await rt.close()
    assert time.perf_counter() - t0 < 5
    assert_counted_server_error(rt, [rec, again], url)
    assert "could not be reached" in rec.observation and "3 attempts" in rec.observation
    assert "truncated_tokens" not in rec.metrics and len(rec.observation) < 256   # fits the default budget
    assert "retries" not in rec.metrics     # the tool retried; the runtime did not retry again
    assert rt.metrics.snapshot().get("tools/kg_query/retries") is None


async def test_kg_server_5xx_and_internal_error_are_counted_tool_errors():
    from aiohttp import web

    hits = []

    async def retrieve(request):
        hits.append(1)
        body = await request.json()
        if body["entity"] == "boom":     # the server's own report of a failure inside it
            return web.json_response({"success": False, "error_type": "KG_SERVER_ERROR",
                                      "result": "The KG server failed on this query (KeyError)."})
        return web.json_response({"success": False, "error_type": "KG_SERVER_ERROR", "result": "down"}, status=503)

    app = web.Application()
    app.router.add_post("/retrieve", retrieve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        tool = KGQueryTool({"server_url": url, "connect_retries": 1, "connect_backoff_s": 0.01}, SCHEMA)
        rt = ToolRuntime([tool])
        async with rt.session("t", kw()) as s:
            r503 = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
            n503 = len(hits)
            boom = await s.call("kg_query", {"action": "get_relations_out", "entity": "boom"})
        await rt.close()
    finally:
        await runner.cleanup()
    assert n503 == 2                           # 5xx retried by the tool (connect_retries=1), then an error
    assert_counted_server_error(rt, [r503, boom], url)
    assert "failed (HTTP 503; 2 attempts)" in r503.observation
    assert "failed on this query" in boom.observation


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


async def test_wrong_url_is_a_counted_tool_error(kg_server):
    url = kg_server + "/not-here"
    tool = KGQueryTool({"server_url": url}, SCHEMA)
    rt = ToolRuntime([tool])
    async with rt.session("t", kw()) as s:
        rec = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
    await rt.close()
    assert_counted_server_error(rt, [rec], url)
    assert "gave an unexpected reply (HTTP 404" in rec.observation
