"""Look-ups/s and latency of kg_query's two backends at 64 concurrent look-ups: the subgraph server vs SPARQL
(oxigraph serving the N-Quads export of the same store). Figures in docs/tools.md.

    python scripts/bench_kg_backends.py [--samples 50] [--lookups 4000] [--concurrency 64]

Generates a synthetic KG (train rows = --samples), exports it, starts both servers on loopback (oxigraph as a
child process, killed at the end), and drives each backend through `KGQueryTool.execute` with the same look-ups
(a mix of the four actions over the store's entities and triples; each distinct look-up asked once per pass).
SPARQL is measured twice: cache off (every look-up goes to oxigraph) and with the default cache, warm.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCHEMA = {"type": "function", "function": {"name": "kg_query", "description": "d", "parameters": {"type": "object"}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def drive(tool, items, concurrency):
    lat = []
    queue = list(enumerate(items))

    async def worker():
        while queue:
            i, (sid, args) = queue.pop()
            await tool.create(f"b{i}", sample_id=sid)
            t0 = time.perf_counter()
            _, _, m = await tool.execute(f"b{i}", args)
            lat.append(time.perf_counter() - t0)
            await tool.release(f"b{i}")
            assert m["error_type"] in ("KG_SUCCESS", "KG_RELATION_NOT_FOUND"), m

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return len(items) / wall, pct(lat, 50) * 1e3, pct(lat, 99) * 1e3


async def bench(url_server, url_sparql, items, concurrency):
    from tools.kg_query import KGQueryTool

    rows = []
    for label, config in (("subgraph server", {"server_url": url_server}),
                          ("SPARQL (oxigraph), no cache", {"backend": "sparql", "sparql_endpoint": url_sparql,
                                                            "cache_size": 0}),
                          ("SPARQL (oxigraph), warm cache", {"backend": "sparql", "sparql_endpoint": url_sparql})):
        tool = KGQueryTool(config, SCHEMA)
        await drive(tool, items[:200], concurrency)          # warm-up (connections; fills the cache for "warm")
        if "warm" in label:
            await drive(tool, items, concurrency)
        rows.append((label, *await drive(tool, items, concurrency)))
        await tool.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--lookups", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    exe = shutil.which("oxigraph")
    if exe is None:
        print("oxigraph not found (pip install oxigraph)", file=sys.stderr)
        return 2
    from agent_rl.tasks.generate import generate_dataset
    from agent_rl.tasks.kg.ntriples import export_ntriples
    from tools.kg_store import load_kg_store
    from tools.kg_server import start_kg_server_thread

    tmp = tempfile.mkdtemp(prefix="kg_bench_")
    generate_dataset("kg", tmp, sizes={"train": args.samples, "val": 0, "test": 0})
    store = os.path.join(tmp, "kg_store.json")
    export_ntriples(store, os.path.join(tmp, "kg.nq"))
    samples = load_kg_store(store)
    rng = random.Random(0)
    pool = []
    for sid, triples in samples.items():
        for h, r, t in triples:
            pool += [(sid, {"action": "get_relations_out", "entity": h}), (sid, {"action": "get_relations_in", "entity": t}),
                     (sid, {"action": "get_entities_out", "entity": h, "relation": r}),
                     (sid, {"action": "get_entities_in", "entity": t, "relation": r})]
    items = [pool[rng.randrange(len(pool))] for _ in range(args.lookups)]
    db = os.path.join(tmp, "oxigraph")
    subprocess.run([exe, "load", "--location", db, "--file", os.path.join(tmp, "kg.nq")], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([exe, "serve", "--location", db, "--bind", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url_sparql = f"http://127.0.0.1:{port}/query"
    server = start_kg_server_thread(store, port=0)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url_sparql + "?query=ASK%7B%7D", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        rows = asyncio.run(bench(server.url, url_sparql, items, args.concurrency))
    finally:
        server.stop()
        os.kill(proc.pid, 15)
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(samples)} subgraphs, {sum(len(v) for v in samples.values())} triples; {args.lookups} look-ups, "
          f"{args.concurrency} concurrent")
    print(f"{'backend':32s} {'look-ups/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for label, qps, p50, p99 in rows:
        print(f"{label:32s} {qps:10.0f} {p50:8.1f} {p99:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
