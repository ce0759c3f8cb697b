"""SPARQL backend of `kg_query`: the four KG-R1 look-ups translated to SPARQL 1.1 over HTTP (Freebase conventions).

Selected in the tool YAML with `config: {backend: sparql, sparql_endpoint: http://HOST:PORT/query}`. It answers
exactly like the subgraph server (`tools.kg_server` / `tools.kg_index`): same actions and aliases, same error
types, same observation text, same `data` list; `KGQueryTool` turns the reply into the same metrics.

The graph is read in Freebase shape:

- entities are IRIs `ns:m.xxx` (`ns:` = http://rdf.freebase.com/ns/) named by `ns:type.object.name` literals;
  look-ups and answers use names: a name is matched exactly, else case-insensitively (the first in sorted order,
  as the index does); all nodes carrying the chosen name are one entity (the store's names are its identities).
  A node without a name is shown (and can be asked) by its mid, a literal object by its value;
- relations are the predicates under `ns:`, shown as their dotted local name (`people.person.spouse`); schema
  relations are dropped as KG-R1 / ToG do (`type.object.*`, `type.type.*`, `common.*`, `freebase.*`, `kg.*`,
  anything with `sameAs`; config `relation_filter` replaces the prefix list), and so are predicates outside `ns:`;
- scoping: each question's subgraph is the named graph `graph_template.format(sample_id=...)` (default
  `urn:agent-rl:kg:{sample_id}`, sample_id percent-encoded), as `agent-rl data export-ntriples` writes it (N-Quads);
  every pattern runs inside `GRAPH <...>`, so look-ups stay inside the question's subgraph, and an empty graph is
  KG_SAMPLE_NOT_FOUND. `graph_template: null` queries the default graph (one whole KG such as a Freebase dump:
  no per-question scoping, KG_SAMPLE_NOT_FOUND never happens).

Config (the tool YAML's `config`; KG-R1's names where it has one): sparql_endpoint, kg_top_k (list only the k
relations with the most edges, default all), graph_template, request_timeout_s (10), connect_retries (2),
connect_backoff_s (0.2), max_connections (256, the aiohttp pool), cache_size (4096 queries, LRU; 0 disables),
max_fetch (10000 rows per query: a longer listing says "at least N more"), relation_filter, fallback_url (the
subgraph server used while the endpoint is down), fallback_cooldown_s (30).

Backend failures raise (`EndpointDown`: unreachable, timed out, HTTP 5xx, after the retries; `BadResults`: an
answer that is not SPARQL JSON results, or an HTTP 4xx); `KGQueryTool` turns them into `KGServerError`.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote

import aiohttp

from tools.kg_index import (KG_ENTITY_NOT_FOUND, KG_FORMAT_ERROR, KG_NO_RESULTS, KG_RELATION_NOT_FOUND,
                            KG_SAMPLE_NOT_FOUND, KG_SUCCESS, MAX_HINT_RELATIONS, MAX_LISTED, KGResult, check_lookup)

NS = "http://rdf.freebase.com/ns/"
NAME = NS + "type.object.name"
DEFAULT_GRAPH_TEMPLATE = "urn:agent-rl:kg:{sample_id}"
# KG-R1 / ToG's abandon_rels: schema and bookkeeping relations say nothing about the question.
DEFAULT_RELATION_FILTER = ("type.object.", "type.type.", "common.", "freebase.", "kg.")
MID = re.compile(r"^[mg]\.[0-9a-z_]+$")
SESSION_KEY = "kg_query_sparql"
N = f"<{NAME}>"    # full IRIs: some parsers (oxigraph 0.5) reject dotted prefixed names such as ns:type.object.name


class EndpointDown(ConnectionError):
    """Unreachable, timed out or HTTP 5xx after the retries."""


class BadResults(ValueError):
    """The endpoint answered, but not with SPARQL JSON results (or refused the query with a 4xx)."""


def sparql_string(s: str) -> str:
    """A SPARQL string literal: backslash, quote and line breaks as ECHARs, other control characters as UCHARs."""
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + "".join(c if c >= " " or c == "\t" else f"\\u{ord(c):04X}" for c in out) + '"'


def str_equals(expr: str, s: str) -> str:
    """A SPARQL condition `expr = s`. A backslash in `s` could start a \\u escape, which SPARQL expands before
    parsing (so no escaping of it is safe): such strings are compared percent-encoded, through ENCODE_FOR_URI."""
    if "\\" in s:
        return f'ENCODE_FOR_URI({expr}) = "{quote(s, safe="-_.~")}"'
    return f"{expr} = {sparql_string(s)}"


def iri(value: str) -> str:
    if any(c in value for c in '<>"{}|^`\\ \t\r\n'):
        raise ValueError(f"not an IRI: {value!r}")
    return f"<{value}>"


def relation_name(predicate_iri: str) -> Optional[str]:
    return unquote(predicate_iri[len(NS):]) if predicate_iri.startswith(NS) else None


def _listing(items: List[str], limit: int = MAX_LISTED, more: int = 0, capped: bool = False) -> str:
    shown = ", ".join(items[:limit])
    extra = len(items) - min(limit, len(items)) + more
    if extra > 0 or capped:
        shown += f", ... ({'at least ' if capped else ''}{extra} more)"
    return shown


class LRU:
    def __init__(self, size: int):
        self.size = size
        self._d: "OrderedDict[str, Any]" = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str) -> Any:
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            return self._d[key]
        self.misses += 1
        return None

    def put(self, key: str, value: Any) -> None:
        if self.size <= 0:
            return
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


def _short(e: BaseException, limit: int = 120) -> str:
    detail = getattr(e, "os_error", None)
    detail = getattr(detail, "strerror", None) or detail or e
    text = str(detail)
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _check_bindings(body: Any, variables: Sequence[str]) -> List[Dict[str, Dict[str, str]]]:
    if not isinstance(body, dict) or not isinstance(body.get("results"), dict):
        raise BadResults("not SPARQL JSON results (no results object)")
    rows = body["results"].get("bindings")
    if not isinstance(rows, list):
        raise BadResults("not SPARQL JSON results (results.bindings is not a list)")
    for row in rows:
        if not isinstance(row, dict):
            raise BadResults("not SPARQL JSON results (a binding is not an object)")
        for var, term in row.items():
            if not isinstance(term, dict) or term.get("type") not in ("uri", "literal", "bnode", "typed-literal") \
                    or not isinstance(term.get("value"), str):
                raise BadResults(f"not SPARQL JSON results (binding {var!r} is not an RDF term)")
    return rows


class SparqlKG:
    """Answers `{sample_id, action, entity, relation?}` like the subgraph server, from a SPARQL endpoint."""

    def __init__(self, config: Dict[str, Any]):
        endpoint = config.get("sparql_endpoint")
        if not endpoint or not isinstance(endpoint, str):
            raise ValueError("kg_query backend sparql needs config.sparql_endpoint (e.g. http://127.0.0.1:7878/query)")
        self.endpoint = endpoint
        top_k = config.get("kg_top_k")
        self.top_k = int(top_k) if top_k else None
        self.graph_template = config.get("graph_template", DEFAULT_GRAPH_TEMPLATE)
        self.request_timeout_s = float(config.get("request_timeout_s", 10.0))
        self.connect_retries = int(config.get("connect_retries", 2))
        self.connect_backoff_s = float(config.get("connect_backoff_s", 0.2))
        self.max_connections = int(config.get("max_connections", 256))
        self.max_fetch = int(config.get("max_fetch", 10000))
        self.relation_filter = tuple(config.get("relation_filter") or DEFAULT_RELATION_FILTER)
        self.cache = LRU(int(config.get("cache_size", 4096)))
        self.requests = 0   # HTTP requests sent (cache misses, retries included)

    # ---- HTTP ------------------------------------------------------------------------------------------
    async def select(self, query: str, variables: Sequence[str] = ()) -> Tuple[Any, bool]:
        """-> (bindings list, or the ASK boolean; whether it came from the cache)."""
        hit = self.cache.get(query)
        if hit is not None:
            return hit, True
        body = await self._post(query)
        if query.startswith("ASK"):
            if not isinstance(body, dict) or not isinstance(body.get("boolean"), bool):
                raise BadResults("not SPARQL JSON results (ASK without a boolean)")
            result: Any = body["boolean"]
        else:
            result = _check_bindings(body, variables)
        self.cache.put(query, result)
        return result, False

    async def _post(self, query: str) -> Any:
        from tools.http_session import shared_session

        session = shared_session(SESSION_KEY, self.max_connections)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        headers = {"Accept": "application/sparql-results+json"}
        last: Optional[BaseException] = None
        for attempt in range(self.connect_retries + 1):
            self.requests += 1
            try:
                async with session.post(self.endpoint, data={"query": query}, headers=headers,
                                        timeout=timeout) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                last = e
            else:
                if status < 500:
                    break
                last = EndpointDown(f"HTTP {status}")
            if attempt < self.connect_retries:
                await asyncio.sleep(self.connect_backoff_s * (2 ** attempt))
        else:
            attempts = self.connect_retries + 1
            if isinstance(last, EndpointDown):
                raise EndpointDown(f"failed ({last}; {attempts} attempts)")
            if isinstance(last, asyncio.TimeoutError):
                raise EndpointDown(f"timed out after {self.request_timeout_s:g} s ({attempts} attempts)")
            raise EndpointDown(f"could not be reached ({_short(last)}; {attempts} attempts)")
        if status >= 400:
            first = raw[:200].decode("utf-8", "replace").strip().splitlines()
            raise BadResults(f"HTTP {status}: {first[0] if first else 'no body'}")
        try:
            return json.loads(raw)
        except ValueError:
            raise BadResults(f"HTTP {status}, not JSON") from None

    # ---- look-ups --------------------------------------------------------------------------------------
    def graph(self, sample_id: str) -> Optional[str]:
        if self.graph_template is None:
            return None
        return iri(str(self.graph_template).format(sample_id=quote(sample_id, safe="")))

    def _scoped(self, graph: Optional[str], pattern: str) -> str:
        return f"GRAPH {graph} {{ {pattern} }}" if graph else pattern

    def keep(self, rel: str) -> bool:
        return not rel.startswith(self.relation_filter) and "sameAs" not in rel

    async def query(self, item: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """-> (reply {success, error_type, result, data}, stats {sparql_queries, cache_hit})."""
        stats = {"queries": 0, "cached": 0}
        result = await self._query(item, stats)
        return result.to_json(), {"sparql_queries": stats["queries"],
                                  "cache_hit": stats["queries"] > 0 and stats["cached"] == stats["queries"]}

    async def _run(self, stats: Dict[str, int], query: str) -> Any:
        value, cached = await self.select(query)
        stats["queries"] += 1
        stats["cached"] += int(cached)
        return value

    async def _query(self, item: Dict[str, Any], stats: Dict[str, int]) -> KGResult:
        action, entity, relation = item.get("action"), item.get("entity"), item.get("relation")
        # The subgraph server's request checks (tools.kg_server._check_item), then the index's (KGIndex.query).
        from tools.kg_server import _check_item

        problem = _check_item(item, "request")
        if problem:
            return KGResult(False, KG_FORMAT_ERROR, problem)
        act = check_lookup(action, entity, relation)
        if isinstance(act, KGResult):
            return act
        needs_relation = act.startswith("get_entities")
        sample_id = str(item["sample_id"])
        graph = self.graph(sample_id)
        found = await self._resolve(graph, entity, stats)
        if found is None:
            if graph is not None and not await self._run(stats, f"ASK {{ GRAPH {graph} {{ ?s ?p ?o }} }}"):
                return KGResult(False, KG_SAMPLE_NOT_FOUND, f"Sample {sample_id!r} is not in the knowledge graph store.")
            return KGResult(False, KG_ENTITY_NOT_FOUND,
                            f'Entity "{entity}" is not in the knowledge graph of this question. '
                            "Use an entity name exactly as given in the question or in earlier results.")
        name, nodes, rels, preds = found
        outgoing = act.endswith("_out")
        direction = "outgoing" if outgoing else "incoming"
        adj = rels["out" if outgoing else "in"]
        if not needs_relation:
            listed = self._top(adj)
            if not listed:
                return KGResult(False, KG_NO_RESULTS, f'Entity "{name}" has no {direction} relations.')
            return KGResult(True, KG_SUCCESS, f'{direction.capitalize()} relations of "{name}": {_listing(listed)}', listed)
        rel = relation.strip()
        if rel not in adj:
            lower = {}
            for r in sorted(set(rels["out"]) | set(rels["in"])):
                lower.setdefault(r.lower(), r)
            rel = lower.get(rel.lower(), rel)
        if rel not in adj:
            other = rels["in" if outgoing else "out"]
            msg = f'Relation "{relation}" is not an {direction} relation of "{name}".'
            if rel in other:
                msg += (f" It is an {'incoming' if outgoing else 'outgoing'} relation: try "
                        f"{'get_entities_in' if outgoing else 'get_entities_out'}.")
            listed = self._top(adj)
            msg += f" Its {direction} relations: {_listing(listed, MAX_HINT_RELATIONS)}" if listed \
                else f" It has no {direction} relations."
            return KGResult(False, KG_RELATION_NOT_FOUND, msg, [])
        ents, capped = await self._entities(graph, nodes, preds[rel], outgoing, stats)
        if not ents:
            return KGResult(False, KG_NO_RESULTS, f'No entities for "{name}" via {rel}.')
        label = "Tail" if outgoing else "Head"
        return KGResult(True, KG_SUCCESS, f'{label} entities of "{name}" via {rel}: {_listing(ents, capped=capped)}',
                        ents)

    def _top(self, adj: Dict[str, int]) -> List[str]:
        """All relations sorted by name, or (kg_top_k) the k with the most edges, then sorted by name."""
        if self.top_k is None or len(adj) <= self.top_k:
            return sorted(adj)
        return sorted(sorted(adj, key=lambda r: (-adj[r], r))[:self.top_k])

    async def _resolve(self, graph: Optional[str], entity: str, stats: Dict[str, int]) -> Optional[Tuple[str, List[str], Dict[str, Dict[str, int]], Dict[str, str]]]:
        """-> (display name, node IRIs, {"out"/"in": {relation: edge count}}, {relation: predicate IRI}), or None."""
        same = f"{str_equals('LCASE(STR(?n))', entity.strip().lower())} || {str_equals('STR(?n)', entity)}"
        node = f"{{ ?e {N} ?n . FILTER({same}) }}"
        if MID.match(entity.strip()):     # a nameless node (Freebase CVT) is asked by its mid
            node += (f" UNION {{ VALUES ?e {{ {iri(NS + entity.strip())} }} "
                     f"FILTER NOT EXISTS {{ ?e {N} ?any }} BIND({sparql_string(entity.strip())} AS ?n) }}")
        edges = '{ ?e ?p ?x BIND("out" AS ?d) } UNION { ?x ?p ?e BIND("in" AS ?d) }'
        rows = await self._run(stats, "SELECT ?e ?n ?d ?p (COUNT(*) AS ?c) WHERE { "
                                      f"{self._scoped(graph, node + ' ' + edges)} }} GROUP BY ?e ?n ?d ?p")
        names = {r["n"]["value"] for r in rows if "n" in r}
        if entity in names:
            name = entity
        else:
            wanted = entity.strip().lower()
            matches = sorted(n for n in names if n.lower() == wanted)
            if not matches:
                return None
            name = matches[0]
        nodes: List[str] = []
        rels: Dict[str, Dict[str, int]] = {"out": {}, "in": {}}
        preds: Dict[str, str] = {}
        for r in rows:
            if r.get("n", {}).get("value") != name or not all(k in r for k in "epd"):
                continue
            if r["e"]["type"] == "uri" and r["e"]["value"] not in nodes:
                nodes.append(r["e"]["value"])
            rel = relation_name(r["p"]["value"])
            d = r["d"]["value"]
            if rel is None or not self.keep(rel) or d not in rels:
                continue
            try:
                count = int(r.get("c", {}).get("value", "1"))
            except ValueError:
                raise BadResults("not SPARQL JSON results (a count is not an integer)") from None
            rels[d][rel] = rels[d].get(rel, 0) + count
            preds[rel] = r["p"]["value"]
        return name, nodes, rels, preds

    async def _entities(self, graph: Optional[str], nodes: List[str], predicate: str, outgoing: bool,
                        stats: Dict[str, int]) -> Tuple[List[str], bool]:
        if not nodes:
            return [], False
        values = " ".join(iri(n) for n in nodes)
        pred = iri(predicate)
        edge = f"?e {pred} ?t" if outgoing else f"?t {pred} ?e"
        pattern = f"VALUES ?e {{ {values} }} {edge} . OPTIONAL {{ ?t {N} ?tn }}"
        rows = await self._run(stats, f"SELECT DISTINCT ?t ?tn WHERE {{ {self._scoped(graph, pattern)} }} "
                                      f"LIMIT {self.max_fetch}")
        shown: Dict[Tuple[str, str], List[Tuple[int, str]]] = {}
        for r in rows:
            if "t" not in r:
                continue
            t = r["t"]
            key = (t["type"], t["value"])
            names = shown.setdefault(key, [])
            tn = r.get("tn")
            if tn is not None:
                names.append((0 if "xml:lang" not in tn or str(tn["xml:lang"]).startswith("en") else 1, tn["value"]))
        out = set()
        for (kind, value), names in shown.items():
            if names:
                out.add(min(names)[1])
            elif kind == "uri" and value.startswith(NS):
                out.add(unquote(value[len(NS):]))
            else:
                out.add(value)
        return sorted(out), len(rows) >= self.max_fetch


class Fallback:
    """When the endpoint is down, look-ups go to the subgraph server for `cooldown_s`, then the endpoint is
    tried again. The first switch is logged once per tool (logging.warning)."""

    def __init__(self, url: Optional[str], cooldown_s: float):
        self.url = url.rstrip("/") if url else None
        self.cooldown_s = cooldown_s
        self.until = 0.0
        self.warned = False

    def active(self) -> bool:
        return self.url is not None and time.monotonic() < self.until

    def trip(self) -> None:
        self.until = time.monotonic() + self.cooldown_s
