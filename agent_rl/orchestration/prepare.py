"""What the driver does before any worker starts: device, model folder, data files, KG server.

- `resolve_device(cfg)`: `auto` -> cuda when available, else cpu.
- `prepare_model(cfg)`: `model.path: embedded` -> `prepare_embedded()` (cached HF folder); a local folder must hold a
  Hugging Face model config (config.json with a model_type that transformers loads).
- `check_data(cfg)` / `prepare_data(cfg)`: a missing train/val file is generated (as `agent-rl data generate <kind>
  --out data/<kind>`) only when `data.generate_if_missing` is `kg` or `arith` and the file is one the generator writes
  into that task's DEFAULT folder `data/<kind>/` (relative to the working directory: what the config defaults and the
  example scripts use), and the tools of `tools.config_path` are of the same task (no KG data for the calculator).
  Any other missing file is a one-line ConfigError naming the key, the file and the command that makes it, raised
  before anything is written. The KG store is generated with the data only when it lies in `data/kg/` too.
- `check_tools(cfg)`: the tool YAML parses, validates and every class_name imports (no tool is built).
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
from typing import Any, Callable, Dict, List, Optional, Sequence

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


def check_model_folder(path: str, key: str = "model.path", tokenizer: bool = True) -> None:
    """A local model folder holds a Hugging Face config.json with a model_type, weights and (`tokenizer`) tokenizer
    files; read without transformers."""
    where = f"{key}: {path}"
    if not os.path.exists(path):
        raise ConfigError(f"{key}: not found: {path} (a local HF folder, or `embedded`)")
    if not os.path.isdir(path):
        raise ConfigError(f"{where} is not a folder (a local Hugging Face model folder, or `embedded`)")
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise ConfigError(f"{where} has no config.json: not a Hugging Face model folder (a local HF folder, or `embedded`)")
    try:
        with open(cfg_file, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}: config.json is not readable JSON ({_one_line(e)})") from None
    if not isinstance(doc, dict) or not doc.get("model_type"):
        raise ConfigError(f"{where}: config.json has no model_type: not a Hugging Face model config")
    names = os.listdir(path)
    if not any(n.endswith((".safetensors", ".bin", ".index.json")) for n in names):
        raise ConfigError(f"{where} has no model weights (*.safetensors or pytorch_model*.bin): not a Hugging Face "
                          "model folder (a local HF folder, or `embedded`)")
    if tokenizer:
        from agent_rl.orchestration.components import TOKENIZER_FILES

        if not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
            raise ConfigError(f"{where} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): not a Hugging Face "
                              "model folder? (set model.tokenizer_path to the tokenizer's folder)")


def _one_line(text: Any, limit: int = 240) -> str:
    from agent_rl.tool_runtime.loader import one_line

    return one_line(text, limit)


def prepare_model(cfg: TrainConfig, log: Callable[[str], None] = print) -> str:
    if cfg.model.path != "embedded":
        check_model_folder(cfg.model.path, tokenizer=not cfg.model.tokenizer_path)
        try:     # the config transformers will build the model from (an unknown model_type, remote code needed, ...)
            from transformers import AutoConfig

            AutoConfig.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        except Exception as e:
            raise ConfigError(f"model.path: {cfg.model.path}: transformers cannot load its config.json: "
                              f"{type(e).__name__}: {_one_line(e)}") from None
        return os.path.abspath(cfg.model.path)
    from agent_rl.model.prepare import PrepareError, prepare_embedded

    try:
        return prepare_embedded(log=log)
    except PrepareError as e:
        raise ConfigError(f"model.path: embedded model unavailable: {e}") from None


DATA_KINDS = ("kg", "arith")
# what `agent-rl data generate <kind> --out DIR` writes into DIR
GENERATED_FILES = {"kg": ("train.parquet", "val.parquet", "test.parquet", "kg_store.json"),
                   "arith": ("train.parquet", "val.parquet", "test.parquet")}
DATA_KEYS = ("train_files", "val_files")


def default_data_dir(kind: str) -> str:
    """The folder `data.generate_if_missing=<kind>` may write: `data/<kind>` of the working directory."""
    return os.path.join("data", kind)


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(os.path.abspath(a or ".")) == os.path.realpath(os.path.abspath(b or "."))


def default_kind_of(path: str) -> Optional[str]:
    """The task whose default folder holds `path` as a file the generator writes, else None."""
    for kind in DATA_KINDS:
        if _same_dir(os.path.dirname(path), default_data_dir(kind)) and os.path.basename(path) in GENERATED_FILES[kind]:
            return kind
    return None


def tools_task(config_path: Optional[str]) -> Optional[str]:
    """The embedded task a tool YAML is for: kg (kg_query), arith (calculator / calc_gsm8k_reward), else None."""
    try:
        names = set(tool_names(config_path))
    except ConfigError:
        return None
    if "kg_query" in names:
        return "kg"
    if names & {"calculator", "calc_gsm8k_reward"}:
        return "arith"
    return None


def _missing_message(key: str, path: str, kind: Optional[str], task: Optional[str]) -> str:
    folder = os.path.dirname(path) or "."
    folder_kind = default_kind_of(path)
    make = folder_kind or task or kind or "kg"
    if os.path.basename(path) in GENERATED_FILES[make]:
        how = f"make it with `agent-rl data generate {make} --out {folder}`"
    else:
        how = (f"`agent-rl data generate {make} --out DIR` writes {', '.join(GENERATED_FILES[make])}, "
               "`agent-rl data convert ...` converts real data")
    msg = f"{key}: file not found: {path} ({how}"
    if kind:
        msg += f"; data.generate_if_missing={kind} only fills the default folder {default_data_dir(kind)}/"
        if folder_kind and folder_kind != kind:
            msg += f", data.generate_if_missing={folder_kind} fills {default_data_dir(folder_kind)}/"
    return msg + ")"


def check_data(cfg: TrainConfig, keys: Sequence[str] = DATA_KEYS) -> Optional[str]:
    """Check the files of `data.<key>` (and the KG store) without writing anything. Returns the folder to generate
    (`data/<kind>`) when generation will make every missing file, else None; a missing file it may not make is a
    ConfigError naming the key, the file and the command that makes it."""
    kind = cfg.data.generate_if_missing
    if kind is not None and kind not in DATA_KINDS:
        raise ConfigError(f"data.generate_if_missing: {kind!r} is not one of {', '.join(DATA_KINDS)} (or null)")
    task = tools_task(cfg.tools.config_path)
    files = [(f"data.{key}", f) for key in keys for f in getattr(cfg.data, key)]
    missing = [(key, f) for key, f in files if not os.path.exists(f)]
    for key, f in missing:
        if not kind or default_kind_of(f) != kind:
            raise ConfigError(_missing_message(key, f, kind, task))
    store = cfg.tools.kg_store
    store_too = (kind == "kg" and task == "kg" and store and not os.path.exists(store) and default_kind_of(store) == "kg"
                 and all(default_kind_of(f) == "kg" for _, f in files))
    if not missing and not store_too:
        return None
    if task and task != kind:
        names = ", ".join(tool_names(cfg.tools.config_path))
        raise ConfigError(f"data.generate_if_missing: {kind} data do not fit the tools of {cfg.tools.config_path} "
                          f"({names}: the {task} task); nothing generated: set data.generate_if_missing={task} with "
                          f"data files in {default_data_dir(task)}/, or make them with `agent-rl data generate {task} --out DIR`")
    return default_data_dir(kind)


def check_data_readable(cfg: TrainConfig, keys: Sequence[str] = DATA_KEYS) -> None:
    """Every existing data file of `keys` opens as parquet (its footer; the rows are checked at load)."""
    import pyarrow.parquet as pq

    for key in keys:
        for f in getattr(cfg.data, key):
            if not os.path.isfile(f):
                if os.path.exists(f):
                    raise ConfigError(f"data.{key}: {f} is not a file")
                continue
            try:
                pq.read_metadata(f)
            except Exception as e:
                raise ConfigError(f"data.{key}: {f}: cannot read as parquet ({_one_line(e)})") from None


def prepare_data(cfg: TrainConfig, log: Callable[[str], None] = print, keys: Sequence[str] = DATA_KEYS) -> None:
    """Generate the default data folder when `check_data` allows it (see the module docstring)."""
    folder = check_data(cfg, keys)
    if folder is None:
        return
    kind = cfg.data.generate_if_missing
    from agent_rl.data.generate import generate_dataset

    log(f"generating the embedded {kind} data set into {folder} (= `agent-rl data generate {kind} --out {folder}`)")
    try:
        generate_dataset(kind, folder)
    except (OSError, ValueError) as e:
        raise ConfigError(f"data.generate_if_missing: generating {kind} data into {folder} failed: {e}") from None
    still = [(f"data.{key}", f) for key in keys for f in getattr(cfg.data, key) if not os.path.exists(f)]
    if still:
        raise ConfigError(f"{still[0][0]}: {still[0][1]} still missing after generating `{kind}` data into {folder}")


def check_tools(cfg: TrainConfig) -> None:
    """The tool YAML of `tools.config_path` is valid and each class_name imports (nothing is built or started)."""
    path = cfg.tools.config_path
    if not path:
        return
    from agent_rl.tool_runtime.errors import ToolConfigError
    from agent_rl.tool_runtime.loader import read_tool_specs, resolve_class

    if not os.path.isfile(path):
        raise ConfigError(f"tools.config_path: file not found: {path}")
    try:
        base = os.path.dirname(os.path.abspath(path))
        for spec in read_tool_specs(path):
            resolve_class(spec.class_name, base, spec.where)
    except ToolConfigError as e:
        raise ConfigError(f"tools.config_path: {e}") from None


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
    names = []
    for t in _tool_entries(config_path):
        fn = t.get("tool_schema") if isinstance(t.get("tool_schema"), dict) else {}
        fn = fn.get("function") if isinstance(fn.get("function"), dict) else {}
        if isinstance(fn.get("name"), str) and fn["name"]:
            names.append(fn["name"])
    return names


def _tool_entries(config_path: str) -> List[Dict[str, Any]]:
    """The `tools:` entries (mappings) of a tool YAML; an unreadable file is a ConfigError."""
    import yaml

    try:
        with open(config_path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"tools.config_path: cannot read {config_path}: {_one_line(e)}") from None
    entries = doc.get("tools") if isinstance(doc, dict) else None
    return [t for t in entries if isinstance(t, dict)] if isinstance(entries, list) else []


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
    for t in _tool_entries(config_path):
        fn = t.get("tool_schema") if isinstance(t.get("tool_schema"), dict) else {}
        fn = fn.get("function") if isinstance(fn.get("function"), dict) else {}
        if fn.get("name") == "kg_query":
            conf = t.get("config") if isinstance(t.get("config"), dict) else {}
            return conf.get("server_url") or None
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
