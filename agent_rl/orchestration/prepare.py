"""What the driver does before any worker starts: device, model folder, data files, KG server.

- `resolve_device(cfg)`: `auto` -> cuda when available, else cpu.
- `prepare_model(cfg)`: `model.path: embedded` -> `prepare_embedded()` (cached HF folder).
- `prepare_data(cfg)`: when `data.generate_if_missing` is set and a train/val file (or the KG store)
  is missing, generate the data set (as `agent-rl data generate <kind> --out <folder>`) into each folder concerned.
- `prepare_demos(cfg)`: with `sft.steps > 0` and `data.generate_if_missing: kg | arith`, a missing `sft.files` entry
  is written from the folder it names: KG (its train.parquet + kg_store.json; `agent-rl data kg-demos`) or
  arithmetic (its train.parquet, the calculator of `tools.config_path` or else the default arith YAML;
  `agent-rl data arith-demos`).
- `ensure_kg_server(cfg)`: when the tool YAML declares `kg_query`: reuse the server at `tools.kg_server_url` only
  if it serves `tools.kg_store` (the sha256 its `/health` reports equals the file's; with `tools.kg_store: null`
  or a store file absent on this host, a user-managed server there is used unchecked); else start the KG server
  in a thread of this process (on the configured port when nothing answers there, on a free port when another
  server holds it) and export its URL in `AGENT_RL_KG_SERVER_URL` (passed on to the workers) and
  `cfg.tools.kg_server_url`. A `server_url` pinned in the tool YAML is the URL checked (kg_query uses it).
"""
from __future__ import annotations

import errno
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from functools import partial
from typing import Any, Callable, Dict, List, Optional

from agent_rl.config.load import ConfigError
from agent_rl.config.schema import TrainConfig

KG_ENV = "AGENT_RL_KG_SERVER_URL"


def resolve_device(cfg: TrainConfig) -> str:
    dev = cfg.trainer.device
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.device: cuda requested but torch sees no CUDA device")
    return dev


def prepare_model(cfg: TrainConfig, log: Callable[[str], None] = print) -> str:
    if cfg.model.path != "embedded":
        if not os.path.isdir(cfg.model.path):
            raise ConfigError(f"model.path: not found: {cfg.model.path} (a local HF folder, or `embedded`)")
        return os.path.abspath(cfg.model.path)
    from agent_rl.model.prepare import PrepareError, prepare_embedded

    try:
        return prepare_embedded(log=log)
    except PrepareError as e:
        raise ConfigError(f"model.path: embedded model unavailable: {e}") from None


def _missing_data(cfg: TrainConfig) -> List[str]:
    files = list(cfg.data.train_files) + list(cfg.data.val_files)
    if cfg.data.generate_if_missing == "kg" and cfg.tools.kg_store:
        files.append(cfg.tools.kg_store)
    return [f for f in files if not os.path.exists(f)]


def prepare_data(cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
    kind = cfg.data.generate_if_missing
    missing = _missing_data(cfg)
    if not missing:
        return
    if not kind:
        raise ConfigError(f"data.train_files: file not found: {missing[0]} "
                          f"(make it with `agent-rl data generate kg --out {os.path.dirname(missing[0]) or '.'}`)")
    if kind not in ("kg", "arith"):
        raise ConfigError(f"data.generate_if_missing: {kind!r} is not one of kg, arith")
    from agent_rl.data.generate import generate_dataset

    for folder in sorted({os.path.dirname(os.path.abspath(f)) for f in missing}):
        log(f"generating the embedded {kind} data set into {folder} (= `agent-rl data generate {kind} --out {folder}`)")
        try:
            generate_dataset(kind, folder)
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.generate_if_missing: generating {kind} data into {folder} failed: {e}") from None
    still = _missing_data(cfg)
    if still:
        raise ConfigError(f"data.train_files: {still[0]} still missing after generating `{kind}` data "
                          "(the generator writes train/val/test.parquet: point data.*_files at them)")


def prepare_demos(cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
    if cfg.sft.steps <= 0:
        return
    kind = cfg.data.generate_if_missing
    for f in cfg.sft.files:
        if os.path.exists(f):
            continue
        folder = os.path.dirname(os.path.abspath(f))
        if kind not in ("kg", "arith"):
            raise ConfigError(f"sft.files: file not found: {f} (demonstrations: `agent-rl data kg-demos --data DIR` "
                              "or `agent-rl data arith-demos --data DIR`)")
        if kind == "kg":
            from agent_rl.data.kg_demos import write_kg_demos

            what, cmd = "KG", f"kg-demos --data {folder} --out {f} --max-turns {cfg.sft.max_turns}"
            write = partial(write_kg_demos, folder, out=f, max_turns=cfg.sft.max_turns)
        else:
            from agent_rl.data.arith_demos import write_arith_demos

            # the run's calculator when its tool YAML declares one, else the default arith YAML
            tc = cfg.tools.config_path
            tc = tc if tc and os.path.isfile(tc) and "calculator" in tool_names(tc) else None
            what, cmd = "arithmetic", f"arith-demos --data {folder} --out {f}" + (f" --tool-config {tc}" if tc else "")
            write = partial(write_arith_demos, folder, out=f, tool_config=tc)
        log(f"writing {what} demonstrations of {folder}/train.parquet to {f} (= `agent-rl data {cmd}`)")
        try:
            s = write()
        except (OSError, ValueError) as e:
            raise ConfigError(f"sft.files: cannot write {what} demonstrations to {f}: {e}") from None
        log(f"  {s['demos']} demonstrations of {s['rows']} rows (skipped: {s['skipped'] or 'none'})")


def tool_names(config_path: Optional[str]) -> List[str]:
    """Function names declared in a tool YAML (verl shape)."""
    if not config_path:
        return []
    import yaml

    with open(config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    names = []
    for t in doc.get("tools", []) or []:
        fn = ((t or {}).get("tool_schema") or {}).get("function") or {}
        if fn.get("name"):
            names.append(fn["name"])
    return names


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


def _pinned_tool_url(config_path: Optional[str]) -> Optional[str]:
    """`config.server_url` of kg_query in the tool YAML (it wins over the env var the driver exports)."""
    if not config_path:
        return None
    import yaml

    with open(config_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    for t in doc.get("tools", []) or []:
        fn = (((t or {}).get("tool_schema") or {}).get("function") or {})
        if fn.get("name") == "kg_query":
            return ((t or {}).get("config") or {}).get("server_url") or None
    return None


def _use(cfg: TrainConfig, url: str) -> None:
    os.environ[KG_ENV] = url
    cfg.tools.kg_server_url = url


def ensure_kg_server(cfg: TrainConfig, log: Callable[[str], None] = print) -> Optional[Any]:
    """Start the KG server when needed. Returns the server handle (call `.stop()`) or None."""
    if "kg_query" not in tool_names(cfg.tools.config_path):
        return None
    pinned = _pinned_tool_url(cfg.tools.config_path)
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
        raise ConfigError(f"{cfg.tools.config_path}: kg_query config.server_url {pinned} is pinned, and the server "
                          f"there {why}; remove server_url there and set tools.kg_server_url instead")
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
                raise ConfigError(f"{cfg.tools.config_path}: kg_query config.server_url {pinned} is pinned and its "
                                  f"port is taken; remove server_url there and set tools.kg_server_url") from None
            reason = f"{url} is taken ({e.strerror or e}); starting this run's own server for {store} on a free port"
            port = 0
    if port == 0:
        log(f"KG server: {reason}")
        handle = start_kg_server_thread(store, host, 0)
    _use(cfg, handle.url)
    log(f"KG server: started in-process at {handle.url} ({store})")
    return handle


def worker_env() -> Dict[str, str]:
    """Environment the workers need from the driver."""
    keep = [KG_ENV, "AGENT_RL_CACHE", "WANDB_MODE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM"]
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
