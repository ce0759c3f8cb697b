"""The KG server: serves a KG store's per-question subgraphs over HTTP (aiohttp) for `kg_query`.

    POST /retrieve   one request {sample_id, action, entity, relation?} or a list of them
                     -> {success, error_type, result, data} (or a list, in order)
    GET  /health     -> {status: "ok", samples, triples, store_sha256}  (sha256 of the store file's bytes, or
                     of the canonical JSON of a store passed as a dict; null for a KGIndex passed in)
    GET  /actions    -> {actions, aliases, error_types}

Look-up outcomes (entity not found, ...) are answered with HTTP 200 and their error type. A body
that is not UTF-8 JSON (or nests deeper than MAX_DEPTH, checked before decoding, which recurses once
per level), a request of the wrong shape or types, a name that is not valid Unicode (a lone surrogate
escape), an empty or too large batch is a 400, an oversize body a 413, always with the same JSON
fields and error_type KG_FORMAT_ERROR (so are unknown paths and methods: 404 / 405).

Hostile clients are bounded: a body larger than `max_body_bytes` (1 MiB) is a 413; a body not received within
`read_timeout_s` (10 s) after its headers is a 408; a connection that is idle or sends only part of its headers
is closed after `idle_timeout_s` (30 s, aiohttp's keep-alive timer, which runs from the connection's start);
at most `max_in_flight` (64) requests are handled at once, more are answered at once with 503 KG_SERVER_ERROR
(kg_query retries a 5xx), so buffered bodies stay below max_in_flight * max_body_bytes; a client that
disconnects mid-request is logged in one line at debug level, with no traceback.

Start it with `agent-rl kg-server --store PATH`, in-process with `await start_kg_server(...)`, or in a
background thread with `start_kg_server_thread(...)` (what the trainer's autostart uses).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
from itertools import accumulate
from typing import Any, Dict, Optional, Tuple, Union

from aiohttp import web

from tools.kg_index import (ACTIONS, ALIASES, ERROR_TYPES, KG_FORMAT_ERROR, KG_SERVER_ERROR, KGIndex, KGResult)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
MAX_BODY_BYTES = 1 << 20
MAX_BATCH = 1024
MAX_IN_FLIGHT = 64
READ_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0     # above aiohttp's client keep-alive (15 s), so pooled clients close first
LINGERING_S = 2.0         # how long an unread rest of a refused body is drained before closing
MAX_DEPTH = 8             # a request nests 2 deep (a batch of objects)
# A JSON string literal, or an unterminated one up to the end: every match succeeds without backtracking,
# so removing them is linear in the body.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}
INDEX_KEY = web.AppKey("kg_index", KGIndex)
LIMITS_KEY = web.AppKey("kg_limits", dict)
DIGEST_KEY = web.AppKey("kg_store_sha256", object)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload, ensure_ascii=False), status=status, content_type="application/json")


def _format_error(message: str, status: int = 400) -> web.Response:
    return _json(KGResult(False, KG_FORMAT_ERROR, message).to_json(), status)


def _too_deep(text: str) -> bool:
    """Brackets outside string literals nest deeper than MAX_DEPTH (linear, no recursion)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_NESTING.__getitem__, brackets)), default=0) > MAX_DEPTH


def _valid_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_item(item: Any, where: str) -> Optional[str]:
    if not isinstance(item, dict):
        return f"{where} must be a JSON object with sample_id, action, entity, relation?"
    for key in ("sample_id", "action", "entity"):
        if key not in item or item[key] is None:
            return f"{where} is missing the field {key!r}"
    sid = item["sample_id"]
    if isinstance(sid, bool) or not isinstance(sid, (str, int)):
        return f"{where}.sample_id must be a string, got {type(sid).__name__}"
    for key in ("action", "entity"):
        if not isinstance(item[key], str):
            return f"{where}.{key} must be a string, got {type(item[key]).__name__}"
    rel = item.get("relation")
    if rel is not None and not isinstance(rel, str):
        return f"{where}.relation must be a string or null, got {type(rel).__name__}"
    for key in ("sample_id", "action", "entity", "relation"):
        if isinstance(item.get(key), str) and not _valid_unicode(item[key]):
            return f"{where}.{key} is not valid Unicode (a lone surrogate escape)"
    return None


def answer(index: KGIndex, item: Dict[str, Any]) -> Dict[str, Any]:
    try:
        return index.query(item["sample_id"], item["action"], item["entity"], item.get("relation")).to_json()
    except Exception as e:  # a bug in the index must not take the server down
        log.exception("KG query failed: %r", item)
        return KGResult(False, KG_SERVER_ERROR, f"The KG server failed on this query ({type(e).__name__}).").to_json()


async def _retrieve(request: web.Request) -> web.Response:
    limits = request.app[LIMITS_KEY]
    try:
        async with _timeout(limits["read_timeout_s"]):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _format_error(f"request body larger than {limits['max_body_bytes']} bytes", 413)
    except asyncio.TimeoutError:
        resp = _format_error(f"request body not received within {limits['read_timeout_s']} s", 408)
        resp.force_close()
        return resp
    try:
        text = body.decode("utf-8-sig")  # a leading BOM is ignored
        if _too_deep(text):
            return _format_error(f"request body nests deeper than {MAX_DEPTH} levels")
        payload = json.loads(text)
    except ValueError as e:  # bad UTF-8, bad JSON, a number too long to convert
        return _format_error(f"request body is not valid JSON: {e}")
    index = request.app[INDEX_KEY]
    if isinstance(payload, list):
        if not payload:
            return _format_error("empty batch: send one request object or a non-empty list")
        if len(payload) > limits["max_batch"]:
            return _format_error(f"batch of {len(payload)} requests exceeds the limit of {limits['max_batch']}", 413)
        for i, item in enumerate(payload):
            problem = _check_item(item, f"request[{i}]")
            if problem:
                return _format_error(problem)
        return _json([answer(index, item) for item in payload])
    problem = _check_item(payload, "request")
    if problem:
        return _format_error(problem)
    return _json(answer(index, payload))


async def _health(request: web.Request) -> web.Response:
    index = request.app[INDEX_KEY]
    return _json({"status": "ok", "samples": len(index), "triples": index.num_triples,
                  "store_sha256": request.app[DIGEST_KEY]})


async def _actions(request: web.Request) -> web.Response:
    return _json({"actions": list(ACTIONS), "aliases": dict(ALIASES), "error_types": list(ERROR_TYPES)})


def _timeout(seconds: float):
    if hasattr(asyncio, "timeout"):  # 3.11+
        return asyncio.timeout(seconds)
    from async_timeout import timeout  # aiohttp's dependency before 3.11

    return timeout(seconds)


def _is_disconnect(e: BaseException) -> bool:
    from aiohttp.web_protocol import RequestPayloadError

    return isinstance(e, (ConnectionError, RequestPayloadError))


@web.middleware
async def _guard(request: web.Request, handler) -> web.StreamResponse:
    """Cap requests in flight (503 when full), answer HTTP errors as JSON, log client drops in one line."""
    state = request.app[LIMITS_KEY]
    if state["in_flight"] >= state["max_in_flight"]:
        resp = _json(KGResult(False, KG_SERVER_ERROR, f"the KG server is busy ({state['max_in_flight']} requests in "
                                                      "flight); retry").to_json(), 503)
        resp.force_close()
        return resp
    state["in_flight"] += 1
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _format_error(f"{e.status} {e.reason}: {request.method} {request.path}", e.status)
    except Exception as e:
        if not _is_disconnect(e):
            raise
        log.debug("KG server: client %s disconnected mid-request (%s: %s)", request.remote, type(e).__name__, e)
        resp = _format_error("client disconnected", 400)  # nobody reads it: aiohttp drops the connection quietly
        resp.force_close()
        return resp
    finally:
        state["in_flight"] -= 1


def make_app(index: KGIndex, max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH,
             max_in_flight: int = MAX_IN_FLIGHT, read_timeout_s: float = READ_TIMEOUT_S,
             store_sha256: Optional[str] = None) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_guard])
    app[INDEX_KEY] = index
    app[DIGEST_KEY] = store_sha256
    app[LIMITS_KEY] = {"max_body_bytes": max_body_bytes, "max_batch": max_batch, "max_in_flight": max_in_flight,
                       "read_timeout_s": read_timeout_s, "in_flight": 0}
    app.router.add_post("/retrieve", _retrieve)
    app.router.add_get("/health", _health)
    app.router.add_get("/actions", _actions)
    return app


def store_digest(store_or_path: Union[str, KGIndex, Dict[str, Any]]) -> Optional[str]:
    """sha256 of a store file's bytes (of the canonical JSON of a dict store; None for a KGIndex)."""
    if isinstance(store_or_path, KGIndex):
        return None
    h = hashlib.sha256()
    if isinstance(store_or_path, dict):
        h.update(json.dumps(store_or_path, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
        return h.hexdigest()
    with open(str(store_or_path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_index(store_or_path: Union[str, KGIndex, Dict[str, Any]]) -> KGIndex:
    if isinstance(store_or_path, KGIndex):
        return store_or_path
    if isinstance(store_or_path, dict):
        return KGIndex(store_or_path)
    return KGIndex.from_path(str(store_or_path))


async def start_kg_server(store_or_path: Union[str, KGIndex, Dict[str, Any]], host: str = DEFAULT_HOST,
                          port: int = DEFAULT_PORT, idle_timeout_s: float = IDLE_TIMEOUT_S,
                          **app_kwargs) -> Tuple[web.AppRunner, str]:
    """Serve on the running loop. port=0 picks a free port. -> (runner, base URL); stop with `await runner.cleanup()`.
    app_kwargs: max_body_bytes, max_batch, max_in_flight, read_timeout_s (see make_app)."""
    index = load_index(store_or_path)
    app_kwargs.setdefault("store_sha256", store_digest(store_or_path))
    runner = web.AppRunner(make_app(index, **app_kwargs), access_log=None, keepalive_timeout=idle_timeout_s,
                           lingering_time=min(LINGERING_S, idle_timeout_s))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    url_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{url_host}:{bound[1]}"


class KGServerHandle:
    """A KG server running on its own event loop in a daemon thread."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, runner: web.AppRunner, thread: threading.Thread):
        self.url, self._loop, self._runner, self._thread = url, loop, runner, thread
        self._stopped = False

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            fut.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> "KGServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_kg_server_thread(store_path: Union[str, KGIndex, Dict[str, Any]], host: str = DEFAULT_HOST,
                           port: int = DEFAULT_PORT, ready_timeout: float = 60.0, **app_kwargs) -> KGServerHandle:
    """Load the store and serve it from a background thread; returns once it accepts requests.
    Errors (missing store, port in use) are raised here."""
    ready = threading.Event()
    box: Dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            box["runner"], box["url"] = loop.run_until_complete(start_kg_server(store_path, host, port, **app_kwargs))
        except BaseException as e:
            box["error"] = e
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="kg-server", daemon=True)
    thread.start()
    if not ready.wait(ready_timeout):
        raise TimeoutError(f"KG server did not start within {ready_timeout} s")
    if "error" in box:
        raise box["error"]
    return KGServerHandle(box["url"], loop, box["runner"], thread)


async def serve_forever(store_path: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                        on_ready=None, **app_kwargs) -> None:
    runner, url = await start_kg_server(store_path, host, port, **app_kwargs)
    try:
        if on_ready is not None:
            on_ready(url, runner.app[INDEX_KEY])
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
