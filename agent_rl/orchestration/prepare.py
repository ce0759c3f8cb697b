"""What the driver does before any worker starts: device, model folder, data files, KG server.

- `resolve_device(cfg)`: `auto` -> cuda when available, else cpu.
- `prepare_model(cfg)`: `model.path: embedded` -> `prepare_embedded()` (cached HF folder).
- `prepare_data(cfg)`: when `data.generate_if_missing` is set and a train/val file (or the KG store)
  is missing, generate the data set (as `agent-rl data generate <kind> --out <folder>`) into each folder concerned.
- `prepare_demos(cfg)`: with `sft.steps > 0` and `data.generate_if_missing: kg`, a missing `sft.files` entry is
  written from the KG folder it names (its train.parquet + kg_store.json; `agent-rl data kg-demos`).
- `ensure_kg_server(cfg)`: when the tool YAML declares `kg_query` and nothing answers at
  `tools.kg_server_url`, start the KG server in a thread of this process and export its URL in
  `AGENT_RL_KG_SERVER_URL` (passed on to the workers).
"""
from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
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
    for f in cfg.sft.files:
        if os.path.exists(f):
            continue
        folder = os.path.dirname(os.path.abspath(f))
        if cfg.data.generate_if_missing != "kg":
            raise ConfigError(f"sft.files: file not found: {f} (KG demonstrations: `agent-rl data kg-demos --data DIR`)")
        from agent_rl.data.kg_demos import write_kg_demos

        log(f"writing KG demonstrations of {folder}/train.parquet to {f} (= `agent-rl data kg-demos --data {folder} "
            f"--out {f} --max-turns {cfg.sft.max_turns}`)")
        try:
            s = write_kg_demos(folder, out=f, max_turns=cfg.sft.max_turns)
        except (OSError, ValueError) as e:
            raise ConfigError(f"sft.files: cannot write KG demonstrations to {f}: {e}") from None
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


def ensure_kg_server(cfg: TrainConfig, log: Callable[[str], None] = print) -> Optional[Any]:
    """Start the KG server when needed. Returns the server handle (call `.stop()`) or None."""
    if "kg_query" not in tool_names(cfg.tools.config_path):
        return None
    url = cfg.tools.kg_server_url
    if server_answers(url):
        os.environ[KG_ENV] = url
        log(f"KG server: using {url}")
        return None
    if not cfg.tools.kg_server_autostart:
        raise ConfigError(f"tools.kg_server_url: nothing answers at {url} and tools.kg_server_autostart is false "
                          "(start one with `agent-rl kg-server --store FILE`)")
    store = cfg.tools.kg_store
    if not store or not os.path.exists(store):
        raise ConfigError(f"tools.kg_store: file not found: {store} (needed to start the KG server)")
    from tools.kg_server import start_kg_server_thread

    parsed = urllib.parse.urlparse(url)
    handle = start_kg_server_thread(store, parsed.hostname or "127.0.0.1", 8001 if parsed.port is None else parsed.port)
    os.environ[KG_ENV] = handle.url
    log(f"KG server: started in-process at {handle.url} ({store})")
    return handle


def worker_env() -> Dict[str, str]:
    """Environment the workers need from the driver."""
    keep = [KG_ENV, "AGENT_RL_CACHE", "WANDB_MODE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM"]
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
