"""What the driver does before any worker starts: device, model folder, data files, the tasks' services.

- `resolve_device(cfg)`: `auto` -> cuda when available, else cpu.
- `prepare_model(cfg)`: `model.path: embedded` -> `prepare_embedded()` (cached HF folder); a local folder must hold a
  Hugging Face model config (config.json with a model_type that transformers loads).
- `check_data(cfg)` / `prepare_data(cfg)`: a missing train/val file is generated (as `agent-rl data generate <kind>
  --out data/<kind>`) only when `data.generate_if_missing` is `kg` or `arith` and the file is one the generator writes
  into that task's DEFAULT folder `data/<kind>/` (relative to the working directory: what the config defaults and the
  example scripts use), and the tools of `tools.config_path` are of the same task (no KG data for the calculator).
  Any other missing file is a one-line ConfigError naming the key, the file and the command that makes it, raised
  before anything is written. The task's other files a config key names (`Task.data_files`: the KG store,
  `tools.kg_store`) are generated with the data only when they lie in that default folder too.
- `check_tools(cfg)`: the tool YAML parses, validates and every class_name imports (no tool is built).
- `prepare_demos(cfg)`: with `sft.steps > 0` and `data.generate_if_missing: kg | arith`, a missing `sft.files` entry
  is written from the folder it names: KG (its train.parquet + kg_store.json; `agent-rl data kg-demos`) or
  arithmetic (its train.parquet, the calculator of `tools.config_path` or else the default arith YAML;
  `agent-rl data arith-demos`).
- `start_services(cfg)`: what the tasks whose tools the tool YAML declares need running (the KG server for
  `kg_query`: `agent_rl/tasks/kg/server.py`); returns the handles to stop.

Which task a data folder, a tool YAML or a demonstration file belongs to comes from `agent_rl.tasks.registry`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from agent_rl.config.load import ConfigError
from agent_rl.config.schema import TrainConfig
from agent_rl.config.tool_yaml import tool_names
from agent_rl.tasks.registry import GENERATABLE, TASKS, config_value, hook, task_of_tools


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
    from agent_rl.tool_runtime.imports import one_line

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


DATA_KINDS = GENERATABLE      # the tasks with generated data (agent_rl.tasks.registry)
# what `agent-rl data generate <kind> --out DIR` writes into DIR
GENERATED_FILES = {k: TASKS[k].generated_files for k in DATA_KINDS}
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
    """The task with generated data whose tools a tool YAML declares (kg: kg_query, arith: calculator /
    calc_gsm8k_reward), else None."""
    try:
        names = tool_names(config_path)
    except ConfigError:
        return None
    task = task_of_tools(names)
    return task.name if task is not None and task.name in DATA_KINDS else None


def _missing_message(key: str, path: str, kind: Optional[str], task: Optional[str]) -> str:
    folder = os.path.dirname(path) or "."
    folder_kind = default_kind_of(path)
    make = folder_kind or task or kind or DATA_KINDS[0]
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
    """Check the files of `data.<key>` (and the task's other files the config names, `Task.data_files`: the KG
    store) without writing anything. Returns the folder to generate
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
    others = [config_value(cfg, key) for key, _ in TASKS[kind].data_files] if kind else []
    others_too = (task == kind and any(p and not os.path.exists(p) and default_kind_of(p) == kind for p in others)
                  and all(default_kind_of(f) == kind for _, f in files))
    if not missing and not others_too:
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
    from agent_rl.tasks.generate import generate_dataset

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


def check_demos(cfg: TrainConfig) -> None:
    """With `sft.steps > 0`, every `sft.files` entry exists or `data.generate_if_missing` names a task that writes
    demonstrations (`prepare_demos`)."""
    task = TASKS.get(cfg.data.generate_if_missing or "")
    if cfg.sft.steps <= 0 or (task is not None and task.demos):
        return
    for f in cfg.sft.files:
        if not os.path.exists(f):
            cmds = " or ".join(f"`agent-rl data {t}-demos --data DIR`" for t, v in TASKS.items() if v.demos)
            raise ConfigError(f"sft.files: file not found: {f} (demonstrations: {cmds})")


def check_rewards(cfg: TrainConfig) -> None:
    """`reward.functions` entries load, `reward.default_reward` names a task or `infer`, every objective of
    `reward.objectives` names a task or a function that loads."""
    from agent_rl.tasks.objectives import check_objectives
    from agent_rl.tasks.rewards import DEFAULT_REWARD_NAMES, configured_rewards

    default = cfg.reward.default_reward
    if default is not None and default not in DEFAULT_REWARD_NAMES:
        raise ConfigError(f"reward.default_reward: {default!r} is not one of {', '.join(DEFAULT_REWARD_NAMES)}")
    try:
        configured_rewards(cfg.reward.functions)
        check_objectives(cfg.reward)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def prepare_demos(cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
    """With `sft.steps > 0`, write each missing `sft.files` entry from the folder it names, by the demonstration
    hook of the task `data.generate_if_missing` names (kg: `agent-rl data kg-demos`, arith: `arith-demos`)."""
    if cfg.sft.steps <= 0:
        return
    kind = cfg.data.generate_if_missing
    task = TASKS.get(kind) if kind else None
    for f in cfg.sft.files:
        if os.path.exists(f):
            continue
        folder = os.path.dirname(os.path.abspath(f))
        if task is None or not task.demos:
            check_demos(cfg)
        what, cmd, write = hook(task, "demos")(cfg, folder, f)
        log(f"writing {what} demonstrations of {folder}/train.parquet to {f} (= `agent-rl data {cmd}`)")
        try:
            s = write()
        except (OSError, ValueError) as e:
            raise ConfigError(f"sft.files: cannot write {what} demonstrations to {f}: {e}") from None
        log(f"  {s['demos']} demonstrations of {s['rows']} rows (skipped: {s['skipped'] or 'none'})")


def start_services(cfg: TrainConfig, log: Callable[[str], None] = print) -> List[Any]:
    """Start what the tasks of the tool YAML's tools need (each task's `services` hook); returns the handles
    (`.stop(timeout)`), stopped again here if a later one fails."""
    names = set(tool_names(cfg.tools.config_path))
    handles: List[Any] = []
    try:
        for task in TASKS.values():
            if task.services and names & set(task.tools):
                h = hook(task, "services")(cfg, log)
                if h is not None:
                    handles.append(h)
    except BaseException:
        for h in handles:
            h.stop(timeout=5.0)
        raise
    return handles


def worker_env() -> Dict[str, str]:
    """Environment the workers need from the driver (and what the tasks' services set: `Task.env`)."""
    keep = [e for t in TASKS.values() for e in t.env] + ["AGENT_RL_CACHE", "WANDB_MODE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM"]
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
