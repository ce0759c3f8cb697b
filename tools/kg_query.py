"""`kg_query`: the model explores its question's knowledge-graph subgraph through the KG server.

arguments: action (get_relations_out | get_relations_in | get_entities_out | get_entities_in),
entity, relation (for the get_entities_* actions).
create_kwargs: sample_id (required), dataset (optional, informational).
config: server_url (else env AGENT_RL_KG_SERVER_URL, else http://127.0.0.1:8001), request_timeout_s (10),
connect_retries (2), connect_backoff_s (0.2), max_connections (256).
backend: server (default, the subgraph server) or sparql (a SPARQL endpoint, `sparql_endpoint`; tools/kg_sparql.py
lists its keys). The sparql backend adds the metrics backend_latency_s, sparql_queries, cache_hit and fallback (the
look-up went to `fallback_url`, the subgraph server, because the endpoint was down; warned once in the log).

Returns the server's text; metrics: success, error_type, lookup (the canonical look-up,
"action|entity|relation" with names lower-cased, aliases resolved), repeated (that look-up was already
asked in this trajectory) and, for a successful get_entities_*, entities (the names the text lists), which
the KG reward reads instead of parsing the text. An argument other than action / entity / relation is a
KG_FORMAT_ERROR without asking the server.

A backend failure is a tool error, not a look-up outcome: a server that cannot be reached or times out (after
`connect_retries`), answers HTTP 5xx (retried the same way), answers something that is not a KG reply (wrong
URL, proxy page) or reports KG_SERVER_ERROR (a failure inside the server) makes `execute` raise
`KGServerError`. The runtime records the call with status `exception`, counts it
(`tools/kg_query/errors/exception`, `rollout/tool_error_rate`) and the model sees
`Error: kg_query failed: KGServerError: KG_SERVER_ERROR: the knowledge graph server at URL ...`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any, Dict, Tuple

import aiohttp

from agent_rl.tool_runtime.base import BaseTool, ToolResponse
from tools.http_session import close_shared_session, shared_session
from tools.kg_index import KG_FORMAT_ERROR, KG_SERVER_ERROR, MAX_LISTED, canonical_action

log = logging.getLogger(__name__)
ENV_URL = "AGENT_RL_KG_SERVER_URL"
DEFAULT_URL = "http://127.0.0.1:8001"
SESSION_KEY = "kg_query"
ARGUMENTS = ("action", "entity", "relation")


class KGServerError(RuntimeError):
    """The KG backend failed (unreachable, timed out, HTTP 5xx, not a KG reply, KG_SERVER_ERROR): a tool error.
    Not a TransientToolError: `_post` has already retried, the runtime must not retry again."""

    def __init__(self, url: str, problem: str):
        super().__init__(f"{KG_SERVER_ERROR}: the knowledge graph server at {url} {problem}")


class BadReply(ValueError):
    """The server answered, but not with a KG reply (wrong URL, proxy page, ...)."""


class ServerStatus(ConnectionError):
    """HTTP 5xx from the server (retried like a connection error)."""


def _short(e: BaseException, limit: int = 120) -> str:
    """`Type: message`, compact (aiohttp's connector errors repeat the host: keep the OS error only)."""
    detail = getattr(e, "os_error", None)
    detail = getattr(detail, "strerror", None) or detail or e
    text = str(detail)
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def resolve_server_url(config: Dict[str, Any]) -> str:
    url = config.get("server_url") or os.environ.get(ENV_URL) or DEFAULT_URL
    return str(url).rstrip("/")


class KGQueryTool(BaseTool):
    def __init__(self, config: Dict[str, Any], tool_schema: Dict[str, Any]):
        super().__init__(config, tool_schema)
        self.request_timeout_s = float(self.config.get("request_timeout_s", 10.0))
        self.connect_retries = int(self.config.get("connect_retries", 2))
        self.connect_backoff_s = float(self.config.get("connect_backoff_s", 0.2))
        self.max_connections = int(self.config.get("max_connections", 256))
        self._state: Dict[str, Dict[str, Any]] = {}
        self.backend = str(self.config.get("backend", "server"))
        self._sparql = self._fallback = None
        if self.backend == "sparql":
            from tools.kg_sparql import Fallback, SparqlKG

            self._sparql = SparqlKG(self.config)
            self._fallback = Fallback(self.config.get("fallback_url"), float(self.config.get("fallback_cooldown_s", 30.0)))
        elif self.backend != "server":
            raise ValueError(f"kg_query config.backend must be server or sparql, got {self.backend!r}")

    @property
    def server_url(self) -> str:
        # Resolved per call, so a server started (and the env var set) after the tool was built is found.
        return resolve_server_url(self.config)

    async def create(self, instance_id: str, sample_id: Any = None, dataset: Any = None, **kwargs) -> None:
        if sample_id is None or (isinstance(sample_id, str) and not sample_id.strip()):
            raise ValueError("kg_query needs create_kwargs.sample_id (extra_info.tools_kwargs.kg_query.create_kwargs)")
        self._state[instance_id] = {"sample_id": str(sample_id), "dataset": dataset, "seen": set()}

    async def _post(self, payload: Dict[str, Any], url: str = "") -> Dict[str, Any]:
        session = shared_session(SESSION_KEY, self.max_connections)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        last: Exception = RuntimeError("no attempt")
        for attempt in range(self.connect_retries + 1):
            try:
                async with session.post(f"{url or self.server_url}/retrieve", json=payload, timeout=timeout) as resp:
                    raw = await resp.read()
                    status = resp.status
                if status >= 500:
                    raise ServerStatus(f"HTTP {status}")
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError, ServerStatus) as e:
                last = e
                if attempt < self.connect_retries:
                    await asyncio.sleep(self.connect_backoff_s * (2 ** attempt))
                continue
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if status in (404, 405) or not isinstance(body, dict) or "error_type" not in body:
                # no /retrieve endpoint there (our server answers unknown paths with a JSON error too)
                raise BadReply(f"HTTP {status}, not a KG server reply")
            return body
        if isinstance(last, ServerStatus):
            raise last
        raise ConnectionError(_short(last))

    async def execute(self, instance_id: str, arguments: Dict[str, Any], **kwargs) -> Tuple[ToolResponse, float, Dict[str, Any]]:
        state = self._state.get(instance_id)
        if state is None:
            raise KeyError(f"no instance {instance_id!r} (create was not called or it was released)")
        action, entity, relation = arguments.get("action"), arguments.get("entity"), arguments.get("relation")
        act = canonical_action(action) or str(action)
        lookup = "|".join("" if x is None else str(x).strip().lower() for x in (act, entity, relation))
        repeated = lookup in state["seen"]
        state["seen"].add(lookup)
        base = {"lookup": lookup, "repeated": repeated}
        unexpected = sorted(set(arguments) - set(ARGUMENTS))
        if unexpected:
            return (ToolResponse(text=f"Unexpected argument(s) {', '.join(unexpected)}: kg_query takes "
                                 f"{', '.join(ARGUMENTS)}."), 0.0, {"success": False, "error_type": KG_FORMAT_ERROR, **base})
        payload = {"sample_id": state["sample_id"], "action": action, "entity": entity}
        if relation is not None:
            payload["relation"] = relation
        if state["dataset"] is not None:
            payload["dataset"] = state["dataset"]
        url = self.server_url if self._sparql is None else self._sparql.endpoint
        extra: Dict[str, Any] = {}
        try:
            if self._sparql is None:
                reply = await self._post(payload)
            else:
                reply, extra = await self._ask_sparql(payload)
                url = extra.pop("url", url)
        except _SparqlFailure as e:
            url, problem = e.url, e.problem
        except BadReply as e:
            problem = f"gave an unexpected reply ({e})"
        except ServerStatus as e:
            problem = f"failed ({e}; {self.connect_retries + 1} attempts)"
        except ConnectionError as e:
            problem = f"could not be reached ({e}; {self.connect_retries + 1} attempts)"
        except aiohttp.ClientError as e:
            problem = f"failed ({_short(e)})"
        else:
            problem = None
            if reply.get("error_type") == KG_SERVER_ERROR:
                problem = f"failed on this query ({str(reply.get('result', ''))[:200]})"
        if problem is not None:
            if not repeated:     # the look-up was never answered: asking it again is not a repeat
                state["seen"].discard(lookup)
            raise KGServerError(url, problem)
        metrics = {"success": bool(reply.get("success")), "error_type": str(reply.get("error_type")), **base, **extra}
        if metrics["success"] and act.startswith("get_entities") and isinstance(reply.get("data"), list):
            metrics["entities"] = [str(e) for e in reply["data"][:MAX_LISTED]]
        return ToolResponse(text=str(reply.get("result", ""))), 0.0, metrics

    async def _ask_sparql(self, payload: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """The SPARQL endpoint's reply, or the fallback subgraph server's while the endpoint is down.
        -> (reply, metrics to add (+ "url" when the fallback answered)); failures raise _SparqlFailure."""
        from tools.kg_sparql import BadResults, EndpointDown

        sparql, fb = self._sparql, self._fallback
        t0 = time.perf_counter()
        down = None
        if not fb.active():
            try:
                reply, stats = await sparql.query(payload)
            except EndpointDown as e:
                if fb.url is None:
                    raise _SparqlFailure(sparql.endpoint, str(e)) from None
                down = str(e)
                fb.trip()
            except BadResults as e:
                raise _SparqlFailure(sparql.endpoint, f"gave an unexpected reply ({e})") from None
            except aiohttp.ClientError as e:
                raise _SparqlFailure(sparql.endpoint, f"failed ({_short(e)})") from None
            else:
                return reply, {**stats, "fallback": False, "backend_latency_s": time.perf_counter() - t0}
        if not fb.warned:
            fb.warned = True
            log.warning("kg_query: the SPARQL endpoint %s %s; answering from the subgraph server at %s "
                        "(fallback_url) for the next %g s at a time", sparql.endpoint,
                        down or "is down", fb.url, fb.cooldown_s)
        where = f"{fb.url} (fallback; the SPARQL endpoint {sparql.endpoint} is down)"
        try:
            reply = await self._post(payload, fb.url)
        except BadReply as e:
            raise _SparqlFailure(where, f"gave an unexpected reply ({e})") from None
        except ServerStatus as e:
            raise _SparqlFailure(where, f"failed ({e}; {self.connect_retries + 1} attempts)") from None
        except ConnectionError as e:
            raise _SparqlFailure(where, f"could not be reached ({e}; {self.connect_retries + 1} attempts)") from None
        except aiohttp.ClientError as e:
            raise _SparqlFailure(where, f"failed ({_short(e)})") from None
        return reply, {"sparql_queries": 0, "cache_hit": False, "fallback": True,
                       "backend_latency_s": time.perf_counter() - t0, "url": where}

    async def release(self, instance_id: str, **kwargs) -> None:
        self._state.pop(instance_id, None)

    async def close(self) -> None:
        await close_shared_session(SESSION_KEY)
        if self._sparql is not None:
            from tools.kg_sparql import SESSION_KEY as SPARQL_SESSION_KEY

            await close_shared_session(SPARQL_SESSION_KEY)


class _SparqlFailure(Exception):
    def __init__(self, url: str, problem: str):
        super().__init__(problem)
        self.url, self.problem = url, problem
