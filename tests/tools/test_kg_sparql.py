"""kg_query's SPARQL backend against a real oxigraph server loaded with the N-Quads export of a generated KG:
the same answers as the subgraph server, failures as tool errors, cache, fallback, a scripted rollout."""
import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from agent_rl.tasks.kg.ntriples import export_ntriples
from tools.kg_store import load_kg_store, save_kg_store
from agent_rl.tool_runtime.runtime import ToolRuntime
from tools.kg_index import KGIndex
from tools.kg_query import KGQueryTool

pytestmark = pytest.mark.timeout(120)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPARQL_YAML = os.path.join(REPO, "configs", "tool_config", "kg_query_sparql_tool_config.yaml")
SCHEMA = {"type": "function", "function": {"name": "kg_query", "description": "d", "parameters": {
    "type": "object", "properties": {"action": {"type": "string"}, "entity": {"type": "string"},
                                     "relation": {"type": "string"}}}}}
SPARQL_ONLY = ("backend_latency_s", "sparql_queries", "cache_hit", "fallback")
# hand-made subgraphs: names that need escaping, a name shared with another question, case variants
TRICKY = {
    "tricky/1": [
        ['Say "hi"', "music.recording.artist", "back\\slash"],
        ["back\\slash", "music.artist.origin", "Ünïcødé 東京"],
        ["a\\u0022b", "people.person.spouse", "Ünïcødé 東京"],
        ["two\nlines", "people.person.spouse", "Paris"],
        ["Paris", "location.location.containedby", "France"],
    ],
    "tricky 2": [["Paris", "location.location.containedby", "Texas"]],
}
# schema relations, which the SPARQL backend drops (the subgraph server lists them): not in the comparison
SCHEMA_SAMPLE = {"schema": [["paris", "common.topic.alias", "Paree"], ["paris", "type.object.type", "location.citytown"],
                            ["paris", "location.location.containedby", "France"]]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kg(tmp_path_factory):
    """A small generated KG plus TRICKY, its index, its N-Quads export, its training rows."""
    from agent_rl.tasks.generate import generate_dataset
    from agent_rl.data.loader import load_rows

    root = tmp_path_factory.mktemp("kg_sparql")
    generate_dataset("kg", str(root / "data"), sizes={"train": 6, "val": 0, "test": 0})
    samples = dict(load_kg_store(str(root / "data" / "kg_store.json")), **TRICKY, **SCHEMA_SAMPLE)
    store = str(root / "kg_store.json")
    save_kg_store(store, samples, dataset="kg_synth")
    nq = str(root / "kg.nq")
    summary = export_ntriples(store, nq)
    return {"root": root, "store": store, "nq": nq, "samples": samples, "index": KGIndex(samples),
            "summary": summary, "rows": load_rows(str(root / "data" / "train.parquet"))}


@pytest.fixture(scope="module")
def endpoint(kg):
    """A real oxigraph server on loopback, loaded with the export; killed by pid at teardown."""
    exe = shutil.which("oxigraph")
    if exe is None:
        pytest.skip("the oxigraph CLI is not installed (pip install oxigraph, in the dev extra)")
    location = str(kg["root"] / "oxigraph")
    subprocess.run([exe, "load", "--location", location, "--file", kg["nq"]], check=True, capture_output=True,
                   timeout=60)
    port = free_port()
    log = open(kg["root"] / "oxigraph.log", "wb")
    proc = subprocess.Popen([exe, "serve", "--location", location, "--bind", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/query"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "?query=ASK%7B%7D", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"oxigraph did not start: {(kg['root'] / 'oxigraph.log').read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        os.kill(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def subgraph_server(kg):
    from tools.kg_server import start_kg_server_thread

    handle = start_kg_server_thread(kg["store"], port=0)
    try:
        yield handle.url
    finally:
        handle.stop()


def sparql_tool(endpoint, **config):
    return KGQueryTool({"backend": "sparql", "sparql_endpoint": endpoint, **config}, SCHEMA)


async def ask(tool, sample_id, arguments, instance="i"):
    """(observation, metrics) of one look-up, or the exception execute raised."""
    await tool.create(instance, sample_id=sample_id)
    try:
        resp, _, metrics = await tool.execute(instance, arguments)
        return resp.text, metrics
    except Exception as e:
        return e
    finally:
        await tool.release(instance)


def lookups(kg):
    """Every relation look-up of every entity, every entity look-up of every triple (both sides), aliases,
    case variants, unknown and wrong-direction relations, unknown entities and samples, format errors."""
    items = []
    for sid, triples in sorted(kg["samples"].items()):
        if sid in SCHEMA_SAMPLE:
            continue
        for name in sorted({x for t in triples for x in (t[0], t[2])}):
            items += [(sid, {"action": "get_relations_out", "entity": name}),
                      (sid, {"action": "get_head_relations", "entity": name}),
                      (sid, {"action": "get_relations_in", "entity": f" {name.upper()} "})]
        for h, r, t in triples:
            items += [(sid, {"action": "get_entities_out", "entity": h, "relation": r}),
                      (sid, {"action": "get_head_entities", "entity": t, "relation": r}),
                      (sid, {"action": "get_tail_entities", "entity": h.lower(), "relation": r.upper()}),
                      (sid, {"action": "get_entities_in", "entity": h, "relation": r}),      # wrong direction
                      (sid, {"action": "get_entities_out", "entity": h, "relation": "people.person.age"})]
        items += [(sid, {"action": "get_relations_out", "entity": 'Nobody "here" \\u0022 \\'}),
                  (sid, {"action": "get_relations_out", "entity": "m.0nothere"})]
    items += [("no-such-question", {"action": "get_relations_out", "entity": "Paris"}),
              ("tricky/1", {"action": "teleport", "entity": "Paris"}),
              ("tricky/1", {"action": "get_entities_out", "entity": "Paris"}),
              ("tricky/1", {"action": "get_relations_out", "entity": "Paris", "relation": "x"}),
              ("tricky/1", {"action": "get_relations_out", "entity": "  "}),
              ("tricky/1", {"action": "get_relations_out", "entity": "Paris", "hops": 2}),
              ("tricky/1", {"action": "get_relations_out", "entity": 7}),
              ("tricky/1", {"action": "get_relations_out", "entity": "bad \ud800 surrogate"})]
    return items


def test_export_shape(kg):
    lines = open(kg["nq"], encoding="utf-8").read().splitlines()
    s = kg["summary"]
    assert s["samples"] == len(kg["samples"]) and len(lines) == s["statements"] == s["entities"] + s["triples"]
    names = {}     # (graph, mid) -> name
    quad = re.compile(r'^<http://rdf\.freebase\.com/ns/(m\.0[0-9b-df-hj-np-tv-z_]+)> <http://rdf\.freebase\.com/ns/'
                      r'([^>]+)> (?:<http://rdf\.freebase\.com/ns/(m\.0[^>]+)>|(".*")) <urn:agent-rl:kg:([^>]+)> \.$')
    for line in lines:
        m = quad.match(line)
        assert m, line
        if m.group(2) == "type.object.name":
            assert m.group(4) and (m.group(5), m.group(1)) not in names
            names[(m.group(5), m.group(1))] = m.group(4)
        else:
            assert m.group(3) and not m.group(4)
    mids = [mid for _, mid in names]
    assert len(mids) == len(set(mids)) == s["entities"]     # one mid per (question, name), never shared
    paris = [mid for (g, mid), n in names.items() if n == '"Paris"']
    assert len(paris) == 2   # the same name in two questions: two mids
    assert ("tricky%2F1", paris[0]) in names or ("tricky%2F1", paris[1]) in names
    assert '"Say \\"hi\\""' in names.values() and '"two\\nlines"' in names.values() and '"back\\\\slash"' in names.values()


def test_export_cli_errors(kg, tmp_path):
    cmd = [sys.executable, "-m", "agent_rl.cli.main", "data", "export-ntriples"]
    ok = subprocess.run(cmd + ["--store", kg["store"], "--out", str(tmp_path / "kg.nt")], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith(f"wrote {tmp_path / 'kg.nt'}: {len(kg['samples'])} subgraphs")
    first = open(tmp_path / "kg.nt", encoding="utf-8").readline()
    assert first.count("<") == 2 and "urn:agent-rl" not in first      # N-Triples: no graph term
    (tmp_path / "bad.json").write_text("[")
    for args, why in (([kg["store"], str(tmp_path / "kg.ttl")], "must end in .nq"),
                      ([str(tmp_path / "missing.json"), str(tmp_path / "x.nq")], "KG store not found"),
                      ([str(tmp_path / "bad.json"), str(tmp_path / "x.nq")], "not JSON")):
        r = subprocess.run(cmd + ["--store", args[0], "--out", args[1]], capture_output=True, text=True)
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not os.path.exists(tmp_path / "x.nq") and not os.path.exists(tmp_path / "x.nq.tmp")


async def test_every_lookup_matches_subgraph_server(kg, endpoint, subgraph_server):
    server = KGQueryTool({"server_url": subgraph_server}, SCHEMA)
    sparql = sparql_tool(endpoint)
    items = lookups(kg)
    sem = asyncio.Semaphore(32)

    async def both(i, sid, args):
        async with sem:
            return await ask(server, sid, args, f"s{i}"), await ask(sparql, sid, args, f"q{i}")

    try:
        pairs = await asyncio.gather(*(both(i, sid, args) for i, (sid, args) in enumerate(items)))
    finally:
        await server.close()
        await sparql.close()
    kinds = set()
    for (sid, args), (want, got) in zip(items, pairs):
        assert not isinstance(want, Exception) and not isinstance(got, Exception), (sid, args, want, got)
        assert got[0] == want[0], (sid, args)
        assert {k: v for k, v in got[1].items() if k not in SPARQL_ONLY} == want[1], (sid, args)
        if "hops" not in args:      # an unexpected argument is answered before any backend
            assert got[1]["fallback"] is False and got[1]["backend_latency_s"] > 0
        kinds.add(want[1]["error_type"])
        if not want[1]["success"] and want[1]["error_type"] != "KG_FORMAT_ERROR":    # the index agrees too
            assert want[0] == kg["index"].query(sid, args["action"], args["entity"], args.get("relation")).result
    assert kinds == {"KG_SUCCESS", "KG_FORMAT_ERROR", "KG_SAMPLE_NOT_FOUND", "KG_ENTITY_NOT_FOUND",
                     "KG_RELATION_NOT_FOUND", "KG_NO_RESULTS"}
    assert len(items) > 1000


async def test_schema_relations_are_dropped_and_top_k(kg, endpoint):
    tool = sparql_tool(endpoint)
    text, m = await ask(tool, "schema", {"action": "get_relations_out", "entity": "PARIS"})
    assert text == 'Outgoing relations of "paris": location.location.containedby'       # common.*, type.object.*
    text, m = await ask(tool, "schema", {"action": "get_relations_in", "entity": "Paree"})
    assert m["error_type"] == "KG_NO_RESULTS" and text == 'Entity "Paree" has no incoming relations.'
    text, m = await ask(tool, "schema", {"action": "get_entities_out", "entity": "paris", "relation": "common.topic.alias"})
    assert m["error_type"] == "KG_RELATION_NOT_FOUND"
    # kg_top_k: the k relations with the most edges (ties by name), listed by name
    sid, triples = next((s, t) for s, t in sorted(kg["samples"].items()) if s.startswith("kg_synth"))
    edges = {}
    for h, r, _ in {tuple(t) for t in triples}:
        edges.setdefault(h, {}).setdefault(r, 0)
        edges[h][r] += 1
    head = max(edges, key=lambda h: (len(edges[h]), h))
    rels = edges[head]
    assert len(rels) >= 3
    top = sorted(sorted(rels, key=lambda r: (-rels[r], r))[:2])
    text, m = await ask(sparql_tool(endpoint, kg_top_k=2), sid, {"action": "get_relations_out", "entity": head})
    assert text == f'Outgoing relations of "{head}": {", ".join(top)}'
    await tool.close()


async def test_cache_hits(kg, endpoint):
    tool = sparql_tool(endpoint, cache_size=2)
    sid = "tricky/1"
    args = {"action": "get_entities_out", "entity": "Paris", "relation": "location.location.containedby"}
    text1, m1 = await ask(tool, sid, args)
    sent = tool._sparql.requests
    text2, m2 = await ask(tool, sid, args)
    assert text1 == text2 == 'Tail entities of "Paris" via location.location.containedby: France'
    assert m1["cache_hit"] is False and m1["sparql_queries"] == 2
    assert m2["cache_hit"] is True and tool._sparql.requests == sent       # nothing sent
    await ask(tool, sid, {"action": "get_relations_out", "entity": "France"})
    assert len(tool._sparql.cache) == 2                                      # bounded (LRU)
    _, m3 = await ask(tool, sid, args)
    assert m3["cache_hit"] is False and tool._sparql.requests == sent + 1 + 2   # France, then both evicted
    off = sparql_tool(endpoint, cache_size=0)
    await ask(off, sid, args)
    _, m4 = await ask(off, sid, args)
    assert m4["cache_hit"] is False and off._sparql.requests == 4
    await tool.close()


async def start_app(handler):
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/query", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/query"


def assert_tool_errors(rt, recs, where):
    for rec in recs:
        assert rec.status == "exception" and not rec.succeeded
        assert rec.observation.startswith("Error: kg_query failed: KGServerError: KG_SERVER_ERROR: "
                                          f"the knowledge graph server at {where} "), rec.observation
    snap = rt.metrics.snapshot()
    assert snap["tools/kg_query/errors/exception"] == len(recs)


def kw(sample_id="tricky/1"):
    return {"kg_query": {"create_kwargs": {"sample_id": sample_id}}}


async def test_endpoint_down_is_a_tool_error():
    url = f"http://127.0.0.1:{free_port()}/query"
    rt = ToolRuntime([sparql_tool(url, connect_retries=2, connect_backoff_s=0.02, request_timeout_s=1)])
    t0 = time.perf_counter()
    async with rt.session("t", kw()) as s:
        rec = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
    await rt.close()
    assert time.perf_counter() - t0 < 5
    assert_tool_errors(rt, [rec], url)
    assert "could not be reached" in rec.observation and "3 attempts" in rec.observation


async def test_slow_and_5xx_endpoints_are_tool_errors():
    from aiohttp import web

    hits = []

    async def handler(request):
        hits.append(request.method)
        query = (await request.post()).get("query", "")
        if "Slow" in query:
            await asyncio.sleep(2)
        return web.json_response({"error": "overloaded"}, status=503)

    runner, url = await start_app(handler)
    try:
        rt = ToolRuntime([sparql_tool(url, connect_retries=1, connect_backoff_s=0.01, request_timeout_s=0.3)])
        t0 = time.perf_counter()
        async with rt.session("t", kw()) as s:
            slow = await s.call("kg_query", {"action": "get_relations_out", "entity": "Slow"})
            n_slow = len(hits)
            busy = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
        await rt.close()
    finally:
        await runner.cleanup()
    assert time.perf_counter() - t0 < 3
    assert n_slow == 2 and len(hits) == 4 and set(hits) == {"POST"}      # each retried once
    assert_tool_errors(rt, [slow, busy], url)
    assert "timed out after 0.3 s (2 attempts)" in slow.observation
    assert "failed (HTTP 503; 2 attempts)" in busy.observation


@pytest.mark.parametrize("reply,why", [
    (("<html>proxy login</html>", "text/html", 200), "HTTP 200, not JSON"),
    (('{"head": {"vars": []}}', "application/json", 200), "no results object"),
    (('{"head": {}, "results": {"bindings": {"e": 1}}}', "application/json", 200), "results.bindings is not a list"),
    (('{"results": {"bindings": [{"e": {"type": "uri"}}]}}', "application/json", 200), "binding 'e' is not an RDF term"),
    (("Parse error at 1:3", "text/plain", 400), "HTTP 400: Parse error at 1:3"),
])
async def test_malformed_results_are_tool_errors(reply, why):
    from aiohttp import web

    async def handler(request):
        body, ctype, status = reply
        return web.Response(text=body, content_type=ctype, status=status)

    runner, url = await start_app(handler)
    try:
        rt = ToolRuntime([sparql_tool(url, connect_retries=1, connect_backoff_s=0.01)])
        async with rt.session("t", kw()) as s:
            rec = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
            again = await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"})
        await rt.close()
    finally:
        await runner.cleanup()
    assert_tool_errors(rt, [rec, again], url)     # bad replies are not cached: asked again, failed again
    assert "gave an unexpected reply (" in rec.observation and why in rec.observation, rec.observation


async def test_fallback_to_subgraph_server(kg, subgraph_server, caplog):
    down = f"http://127.0.0.1:{free_port()}/query"
    tool = sparql_tool(down, fallback_url=subgraph_server, connect_retries=0, request_timeout_s=1)
    server = KGQueryTool({"server_url": subgraph_server}, SCHEMA)
    args = {"action": "get_entities_out", "entity": "Paris", "relation": "location.location.containedby"}
    with caplog.at_level(logging.WARNING, logger="tools.kg_query"):
        first = await ask(tool, "tricky/1", args)
        second = await ask(tool, "tricky 2", args)
    want = await ask(server, "tricky/1", args)
    assert first[0] == want[0] == 'Tail entities of "Paris" via location.location.containedby: France'
    assert second[0] == 'Tail entities of "Paris" via location.location.containedby: Texas'
    assert first[1]["fallback"] is True and second[1]["fallback"] is True and first[1]["sparql_queries"] == 0
    assert tool._sparql.requests == 1          # tried once, then the cooldown sends look-ups to the fallback
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "fallback_url" in r.getMessage()]
    assert len(warnings) == 1 and down in warnings[0].getMessage() and subgraph_server in warnings[0].getMessage()
    both_down = sparql_tool(down, fallback_url=f"http://127.0.0.1:{free_port()}", connect_retries=0)
    err = await ask(both_down, "tricky/1", args)
    assert isinstance(err, Exception) and "fallback; the SPARQL endpoint" in str(err) and "could not be reached" in str(err)
    for t in (tool, server, both_down):
        await t.close()


async def test_scripted_rollout_with_sparql_backend(kg, endpoint, tokenizer, tmp_path):
    """One trajectory through the agent loop: a scripted engine replays a gold demonstration, the real tool
    runtime (from the example YAML, pointed at oxigraph) answers; observations are the index's, reward full."""
    import yaml

    sys.path.insert(0, os.path.join(REPO, "tests", "rollout"))
    from rollout_fakes import ScriptedEngine

    from agent_rl.config.schema import MultiTurnConfig, RewardConfig
    from agent_rl.tasks.kg.demos import kg_demonstration
    from agent_rl.engines.base import SamplingParams
    from agent_rl.tasks.kg.reward import kg_reward
    from agent_rl.rollout.agent_loop import run_trajectory
    from agent_rl.rollout.chat import ChatRenderer
    from agent_rl.rollout.trajectory import Trajectory

    row, demo = next((r, d) for r in kg["rows"] for d in [kg_demonstration(r, kg["index"])[0]] if d and len(d) >= 5)
    doc = yaml.safe_load(open(SPARQL_YAML))
    doc["tools"][0]["config"]["sparql_endpoint"] = endpoint
    path = tmp_path / "tools.yaml"
    path.write_text(yaml.safe_dump(doc))
    rt = ToolRuntime.from_yaml(str(path), tokenizer=tokenizer, max_tool_response_tokens=None)
    turns = [m["content"] for m in demo if m["role"] == "assistant"]
    engine = ScriptedEngine(tokenizer, lambda ids, rid: turns[int(re.search(r"-t(\d+)", rid).group(1))])
    renderer = ChatRenderer(tokenizer, rt.schemas)
    prompt = list(row["prompt"])
    traj = Trajectory(uid="g0", sample_index=0, row=row, prompt_ids=renderer.prompt_ids(prompt))
    try:
        async with rt.session("r0", row["extra_info"]["tools_kwargs"]) as session:
            traj = await run_trajectory(traj, engine, renderer, session, MultiTurnConfig(),
                                        SamplingParams(max_new_tokens=512), "r0")
    finally:
        await rt.close()
    assert traj.status == "finished" and traj.stop_reason == "answer"
    calls = [c for t in traj.turns for c in t.tool_calls]
    want = [m["content"] for m in demo if m["role"] == "tool"]
    assert [c.observation for c in calls] == want and all(c.status == "ok" and c.metrics["success"] for c in calls)
    score, comps = kg_reward(traj, RewardConfig())
    assert comps["f1"] == 1.0 and comps["retrieval"] == 1.0 and comps["kg_queries"] == len(want)
