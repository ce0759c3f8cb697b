"""The KG task's service: the KG server that `kg_query` calls, started for a run whose tool YAML declares it.

`start_services(cfg)` (the registry's `services` hook): reuse the server at `tools.kg_server_url` only if it
serves `tools.kg_store` (the sha256 its `/health` reports equals the file's; with `tools.kg_store: null` or a store
file absent on this host, a user-managed server there is used unchecked); else start the KG server in a thread of
this process (on the configured port when nothing answers there, on a free port when another server holds it) and
export its URL in `AGENT_RL_KG_SERVER_URL` (passed on to the workers) and `cfg.tools.kg_server_url`. A
`server_url` pinned in the tool YAML is the URL checked (kg_query uses it).
"""
from __future__ import annotations

import errno
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional

from agent_rl.config.load import ConfigError
from agent_rl.config.schema import TrainConfig
from agent_rl.config.tool_yaml import tool_entries, tool_names
from agent_rl.tasks.kg.rows import KG_TOOL
from tools.kg_query import ENV_URL

KG_ENV = ENV_URL      # what kg_query reads (Task.env: the workers get it)


def server_answers(url: str, timeout: float = 1.0) -> bool:
    """True when anything answers HTTP at `url` (any status code)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def served_store_digest(url: str, timeout: float = 2.0) -> Optional[str]:
    """The store sha256 the KG server at `url` reports on /health; None when it reports none (not a KG server,
    or one older than the digest) or cannot be read."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            body = json.loads(r.read(1 << 16))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    digest = body.get("store_sha256") if isinstance(body, dict) else None
    return digest if isinstance(digest, str) else None


def _kg_tool_config(config_path: Optional[str]) -> dict:
    """The `config` of kg_query in the tool YAML ({} when there is none)."""
    if not config_path:
        return {}
    for t in tool_entries(config_path):
        fn = t.get("tool_schema") if isinstance(t.get("tool_schema"), dict) else {}
        fn = fn.get("function") if isinstance(fn.get("function"), dict) else {}
        if fn.get("name") == KG_TOOL:
            return t.get("config") if isinstance(t.get("config"), dict) else {}
    return {}


def _use(cfg: TrainConfig, url: str) -> None:
    os.environ[KG_ENV] = url
    cfg.tools.kg_server_url = url


def start_services(cfg: TrainConfig, log: Callable[[str], None] = print) -> Optional[Any]:
    """Start the KG server when needed. Returns the server handle (call `.stop()`) or None. kg_query on a SPARQL
    endpoint (`backend: sparql`) needs the subgraph server only as its `fallback_url`: none is started without one,
    and with one, that URL is the server's (as a pinned `server_url` is)."""
    if KG_TOOL not in tool_names(cfg.tools.config_path):
        return None
    conf = _kg_tool_config(cfg.tools.config_path)
    if conf.get("backend") == "sparql":
        if not conf.get("fallback_url"):
            log(f"KG server: not started (kg_query answers from the SPARQL endpoint {conf.get('sparql_endpoint')}, "
                "no fallback_url)")
            return None
        pinned, pin_key = conf["fallback_url"], "fallback_url"
        advice = "point fallback_url at a server of tools.kg_store, or at a free port"
    else:
        pinned, pin_key = conf.get("server_url") or None, "server_url"   # wins over the env var the driver exports
        advice = "remove server_url there and set tools.kg_server_url instead"
    url = pinned or cfg.tools.kg_server_url     # what kg_query will call
    store = cfg.tools.kg_store
    port = None       # where to start our own server: None = the configured port, 0 = a free one
    if server_answers(url):
        if not store or not os.path.exists(store):   # a user-managed server: nothing to compare with
            _use(cfg, url)
            log(f"KG server: using {url} (" + ("tools.kg_store is null" if not store else
                f"tools.kg_store {store} not found here") + ": the store it serves is not checked)")
            return None
        from tools.kg_server import store_digest

        served = served_store_digest(url)
        if served == store_digest(store):
            _use(cfg, url)
            log(f"KG server: using {url} (it serves {store})")
            return None
        why = ("serves another store" if served else
               "does not report the store it serves (not a KG server, or an older one)")
        if not cfg.tools.kg_server_autostart:
            raise ConfigError(f"tools.kg_server_url: the server at {url} {why}, not tools.kg_store {store}, and "
                              "tools.kg_server_autostart is false (set tools.kg_store: null to use it anyway)")
        port = 0
        reason = f"{url} {why}; starting this run's own server for {store} on a free port"
    elif not cfg.tools.kg_server_autostart:
        raise ConfigError(f"tools.kg_server_url: nothing answers at {url} and tools.kg_server_autostart is false "
                          "(start one with `agent-rl kg-server --store FILE`)")
    else:
        reason = None
    if not store or not os.path.exists(store):
        raise ConfigError(f"tools.kg_store: file not found: {store} (needed to start the KG server)")
    if pinned and port == 0:
        raise ConfigError(f"{cfg.tools.config_path}: kg_query config.{pin_key} {pinned} is pinned, and the server "
                          f"there {why}; {advice}")
    from tools.kg_server import start_kg_server_thread

    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    if port is None:
        try:
            handle = start_kg_server_thread(store, host, 8001 if parsed.port is None else parsed.port)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            if pinned:              # taken since the check above, and kg_query cannot be pointed elsewhere
                raise ConfigError(f"{cfg.tools.config_path}: kg_query config.{pin_key} {pinned} is pinned and its "
                                  f"port is taken; {advice}") from None
            reason = f"{url} is taken ({e.strerror or e}); starting this run's own server for {store} on a free port"
            port = 0
    if port == 0:
        log(f"KG server: {reason}")
        handle = start_kg_server_thread(store, host, 0)
    _use(cfg, handle.url)
    log(f"KG server: started in-process at {handle.url} ({store})")
    return handle
