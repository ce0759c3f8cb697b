"""Compose the trainer config: Hydra (config dir + overrides) merged into the structured schema.

Errors are one line naming the key or path: `ConfigError("rollout.multi_turn.max_turnz: unknown key ...")`.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import typing
from functools import lru_cache
from typing import Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agent_rl.algorithms.advantage import ESTIMATORS
from agent_rl.algorithms.aggregate import AGG_MODES
from agent_rl.algorithms.kl import KL_KINDS
from agent_rl.engines import KINDS as ENGINE_KINDS
from agent_rl.engines.kv_sessions import SESSION_KINDS, needs_session_engine
from agent_rl.engines.replicas import NOT_HTTP
from agent_rl.engines.sglang_patches import selected as selected_patches
from agent_rl.config import extend
from agent_rl.config.schema import TrainConfig
from agent_rl.rollout.formats import get_parser

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    pass


def default_config_dir() -> str:
    """`configs/` of the source tree when present (editable installs, examples), else the packaged copy."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.join(here, "..", "..", "configs")
    if os.path.exists(os.path.join(repo, "trainer.yaml")):
        return os.path.abspath(repo)
    return here


def task_sections() -> Dict[str, type]:
    """{section: its class extended with the keys the tasks add} (`Task.config` of agent_rl/tasks/registry.py,
    `extend.py`): the schema every compose / validate uses. Read from the task registry when called (a task a user
    adds to it counts too): a known exception to the layers' import direction (docs/architecture.md, Layers)."""
    from agent_rl.tasks.registry import config_additions

    try:
        return extend.section_types(TrainConfig, config_additions())
    except ValueError as e:
        raise ConfigError(str(e)) from None


def section_class(name: str) -> type:
    """The class of section `name` as a composed config holds it (with the tasks' keys): `section_class("reward")()`."""
    return task_sections().get(name) or typing.get_type_hints(TrainConfig)[name]


def default_config() -> TrainConfig:
    """Every key at its schema default, the tasks' keys included (what the dataclasses give, before trainer.yaml)."""
    return extend.default_config(TrainConfig, task_sections())


def schema_keys() -> List[str]:
    """Every dotted key of the schema, sections included (`rollout`, `rollout.multi_turn`, `rollout.n`, ...)."""
    return _schema_keys(tuple(task_sections().items()))


@lru_cache(maxsize=4)
def _schema_keys(types) -> List[str]:
    return [key for key, _, _ in extend.walk(TrainConfig, dict(types))]


def _did_you_mean(key: str) -> Optional[str]:
    """The schema key a misspelt one most likely meant (difflib over the schema's keys), or None."""
    keys = schema_keys()
    parent, _, leaf = key.rpartition(".")
    if parent == "" or parent in keys:      # the section exists: a misspelt or misplaced last part
        same = [k for k in keys if k.rpartition(".")[2] == leaf]     # rollout.temperature -> rollout.sampling.temperature
        inside = [k for k in same if k.startswith(parent + ".")] if parent else []
        if inside:
            return min(inside, key=len)
        siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
        words = leaf.split("_")     # total_steps -> total_training_steps: every word of the typo is (nearly) in the key
        containing = [s for s in siblings if len(words) > 1 and
                      all(difflib.get_close_matches(w, s.split("_"), n=1, cutoff=0.8) for w in words)]
        near = difflib.get_close_matches(leaf, containing or siblings, n=1, cutoff=0.5 if containing else 0.6)
        if near:
            return f"{parent}.{near[0]}" if parent else near[0]
        return same[0] if len(same) == 1 else None
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)   # a misspelt section: the whole key
    return near[0] if near else None


def unknown_key_message(key: str) -> str:
    near = _did_you_mean(key)
    if near:
        return f"{key}: unknown config key, did you mean {near}? (every key: docs/config.md)"
    return f"{key}: unknown config key (misspelt? see docs/config.md)"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or ""
    msg = getattr(e, "msg", None) or str(e).splitlines()[0]
    msg = msg.splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        return unknown_key_message(key)
    return f"{key}: {msg}" if key else msg


def _hydra_error(e: Exception) -> str:
    text = str(e)
    cause = e.__cause__ or e.__context__
    full = re.search(r"full_key: (\S+)", text + "\n" + str(cause or ""))
    key = full.group(1) if full else None
    m = re.search(r"Could not override '([^']+)'", text)
    override_key = m.group(1).lstrip("+~") if m else None
    if override_key and key and (override_key == key or override_key.startswith(key + ".")) and \
            re.search(r"not in struct|Key '[^']+' not in", text + "\n" + str(cause or "")):
        return unknown_key_message(override_key)    # the whole key typed: `rollot.n` suggests `rollout.n`
    if re.search(r"not in struct|is not in struct|Could not override", text) and key and "not in struct" in text + str(cause or ""):
        return unknown_key_message(key)
    if isinstance(cause, OmegaConfBaseException):
        return _describe(cause)
    if m:
        detail = [ln for ln in (str(cause) if cause else text).splitlines() if ln.strip() and "Could not override" not in ln and "To append" not in ln]
        return f"{m.group(1)}: {detail[0].strip() if detail else 'invalid override'}"
    return text.splitlines()[0]


OPEN_MAPPINGS = ("reward.functions.", "reward.objectives.", "rollout.engine_kwargs.")   # schema fields that are free-form mappings


def compose(overrides: Sequence[str] = (), config_dir: Optional[str] = None, config_name: str = "trainer",
            check_paths: bool = True) -> TrainConfig:
    """Hydra-compose `config_name` from `config_dir` with `overrides`, validate against the schema."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="agent_rl_schema", node=extend.schema(TrainConfig, task_sections()))
    # keys of the open mappings need no `+`: `reward.functions.my_source=pkg.mod:fn` adds or replaces an entry
    overrides = [f"++{o}" if o.startswith(OPEN_MAPPINGS) else o for o in overrides]
    config_dir = os.path.abspath(config_dir or default_config_dir())
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            raw = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_hydra_error(e)) from None
    finally:
        GlobalHydra.instance().clear()
    return validate(OmegaConf.to_container(raw, resolve=False), check_paths=check_paths)


def validate(raw: dict, check_paths: bool = True) -> TrainConfig:
    schema = extend.schema(TrainConfig, task_sections())
    try:
        merged = OmegaConf.merge(schema, raw)
        OmegaConf.resolve(merged)
        cfg: TrainConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e)) from None
    _check_values(cfg)
    _advise(cfg)
    if check_paths:
        check_files(cfg)
    return cfg


def _advise(cfg: TrainConfig) -> None:
    """Settings that run but, as measured, do not do what they are usually set for: a one-line warning each."""
    r = cfg.rollout
    if r.over_sample_rate > 0 and not r.partial_rollout and not cfg.algorithm.filter_groups.enable:
        log.warning("rollout.over_sample_rate=%g without rollout.partial_rollout or algorithm.filter_groups.enable: the "
                    "cut groups' tokens are thrown away (on an H200: at most 5%% off a 64x4 step, 128x8 steps ~20%% "
                    "slower; docs/rollout.md); rollout.partial_rollout=true resumes them the next step", r.over_sample_rate)


def _check_values(cfg: TrainConfig) -> None:
    def choice(key, value, options):
        if value not in options:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}")

    choice("rollout.engine", cfg.rollout.engine, list(ENGINE_KINDS))
    choice("rollout.multi_turn.tool_response_truncate_side", cfg.rollout.multi_turn.tool_response_truncate_side, ["head", "middle", "tail"])
    choice("actor.loss_agg_mode", cfg.actor.loss_agg_mode, list(AGG_MODES))
    choice("actor.kl_loss_type", cfg.actor.kl_loss_type, list(KL_KINDS))
    choice("algorithm.adv_estimator", cfg.algorithm.adv_estimator, list(ESTIMATORS))
    choice("trainer.device", cfg.trainer.device, ["auto", "cuda", "cpu"])
    for problem in extend.choice_errors(cfg):    # fields with `choices` (F(..., choices=...)), the tasks' keys too
        raise ConfigError(problem)
    choice("logger.wandb_mode", cfg.logger.wandb_mode, ["auto", "online", "offline", "disabled"])
    for b in cfg.logger.backends:
        choice("logger.backends", b, ["console", "jsonl", "wandb"])
    for key, value in [("rollout.n", cfg.rollout.n), ("data.train_batch_size", cfg.data.train_batch_size),
                       ("actor.ppo_mini_batch_size", cfg.actor.ppo_mini_batch_size),
                       ("rollout.multi_turn.max_assistant_turns", cfg.rollout.multi_turn.max_assistant_turns),
                       ("rollout.multi_turn.max_new_tokens_per_turn", cfg.rollout.multi_turn.max_new_tokens_per_turn),
                       ("trainer.n_gpus_per_node", cfg.trainer.n_gpus_per_node),
                       ("rollout.engine_replicas", cfg.rollout.engine_replicas)]:
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    try:  # a format name of the registry, or a dotted path that must import
        get_parser(cfg.rollout.multi_turn.format)
    except ValueError as e:
        raise ConfigError(f"rollout.multi_turn.format: {e}") from None
    if any(not isinstance(s, str) or not s for s in cfg.rollout.multi_turn.stop_strings):
        raise ConfigError(f"rollout.multi_turn.stop_strings: every entry must be a non-empty string, got {cfg.rollout.multi_turn.stop_strings!r}")
    if cfg.rollout.engine_replicas > 1 and cfg.rollout.engine == "http":
        raise ConfigError(f"rollout.engine_replicas: {NOT_HTTP}")
    if cfg.rollout.kv_sessions and cfg.rollout.engine not in SESSION_KINDS + ("auto",):
        raise ConfigError(needs_session_engine("rollout.kv_sessions", f"rollout.engine={cfg.rollout.engine}"))
    if cfg.rollout.kv_sessions and (cfg.rollout.engine_kwargs or {}).get("enable_streaming_session") is False:
        raise ConfigError("rollout.kv_sessions: needs sglang's streaming sessions, but "
                          "rollout.engine_kwargs.enable_streaming_session is false")
    patches = cfg.rollout.scheduler_patches
    if not (isinstance(patches, (bool, str)) or (isinstance(patches, (list, tuple))
                                                 and all(isinstance(n, str) for n in patches))):
        raise ConfigError(f"rollout.scheduler_patches: true, false or a list of patch names, got {patches!r}")
    try:
        selected_patches(patches)
    except ValueError as e:
        raise ConfigError(f"rollout.scheduler_patches: {e}") from None
    if cfg.rollout.engine_replicas > 1 and not 0 < cfg.rollout.gpu_memory_utilization < 1:
        raise ConfigError(f"rollout.gpu_memory_utilization: must be in (0, 1) to split between "
                          f"{cfg.rollout.engine_replicas} engine replicas, got {cfg.rollout.gpu_memory_utilization}")
    if cfg.rollout.over_sample_rate < 0:
        raise ConfigError(f"rollout.over_sample_rate: must be >= 0, got {cfg.rollout.over_sample_rate}")
    if cfg.algorithm.filter_groups.max_num_gen_batches < 0:
        raise ConfigError(f"algorithm.filter_groups.max_num_gen_batches: must be >= 0 (0 = unlimited), "
                          f"got {cfg.algorithm.filter_groups.max_num_gen_batches}")
    if not cfg.algorithm.filter_groups.metric:
        raise ConfigError("algorithm.filter_groups.metric: must name the trajectory score or a reward component")
    if cfg.sft.steps < 0:
        raise ConfigError(f"sft.steps: must be >= 0, got {cfg.sft.steps}")
    if cfg.sft.steps > 0:
        for key, value in [("sft.batch_size", cfg.sft.batch_size), ("sft.max_length", cfg.sft.max_length)]:
            if value < 1:
                raise ConfigError(f"{key}: must be >= 1, got {value}")
        if not cfg.sft.files:
            raise ConfigError("sft.files: sft.steps > 0 needs demonstration files")
        if cfg.sft.lr <= 0:
            raise ConfigError(f"sft.lr: must be > 0, got {cfg.sft.lr}")
    _check_lora(cfg)
    if cfg.data.train_batch_size % cfg.actor.ppo_mini_batch_size:
        raise ConfigError(f"actor.ppo_mini_batch_size: {cfg.actor.ppo_mini_batch_size} must divide data.train_batch_size {cfg.data.train_batch_size}")
    _check_kl_ctrl(cfg)
    _check_objectives(cfg)
    _check_judge(cfg)
    _check_prompt_augmentation(cfg)


def _check_prompt_augmentation(cfg: TrainConfig) -> None:
    """data.prompt_augmentation.*: values in range (the level is checked against the rows' tasks when the data loads)."""
    from agent_rl.data.hints import DECAYS

    pa, key = cfg.data.prompt_augmentation, "data.prompt_augmentation"
    if pa.decay not in DECAYS:
        raise ConfigError(f"{key}.decay: {pa.decay!r} is not one of {', '.join(DECAYS)}")
    if not 0.0 <= pa.start_prob <= 1.0:
        raise ConfigError(f"{key}.start_prob: must be in [0, 1], got {pa.start_prob}")
    if pa.hint_steps < 0:
        raise ConfigError(f"{key}.hint_steps: must be >= 0 (0 = never fades), got {pa.hint_steps}")
    if pa.hint_text is not None and not pa.hint_text.strip():
        raise ConfigError(f"{key}.hint_text: must be a non-empty text or null (the task's guideline_level)")
    if pa.hint_text is None and not (pa.guideline_level or "").strip():
        raise ConfigError(f"{key}.guideline_level: must name a hint level of the task (e.g. concise, detailed) "
                          "or set hint_text")


def _check_objectives(cfg: TrainConfig) -> None:
    """reward.objectives: each entry's keys, function form, finite weight, non-empty data_sources (config.objectives);
    the validated config holds them with their defaults filled. algorithm.norm_per_objective needs objectives;
    reward.functions / default_reward are then read only by objectives with `function: auto`."""
    from agent_rl.config.objectives import AUTO, normalized

    try:
        cfg.reward.objectives = normalized(cfg.reward.objectives)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    objs = cfg.reward.objectives
    if cfg.algorithm.norm_per_objective and not objs:
        raise ConfigError("algorithm.norm_per_objective: needs reward.objectives (the objectives to normalise one by "
                          "one), e.g. reward.objectives.answer.function=kg")
    if objs and not any(o["function"] == AUTO for o in objs.values()):
        for key, unused in (("functions", cfg.reward.functions), ("default_reward", cfg.reward.default_reward)):
            if unused:
                raise ConfigError(f"reward.{key}: not read when reward.objectives is set, except by an objective "
                                  f"with function: {AUTO} (add one, or name the function in an objective)")


def _check_judge(cfg: TrainConfig) -> None:
    """reward.judge.*: values in range, a regex that compiles, an endpoint when the judge reward is named."""
    import re

    j = cfg.reward.judge
    named = list((cfg.reward.functions or {}).values()) + [o["function"] for o in (cfg.reward.objectives or {}).values()]
    if any(isinstance(v, str) and v.endswith(":judge_reward") for v in named) and not j.base_url:
        raise ConfigError("reward.judge.base_url: the judge reward is configured but has no endpoint "
                          "(e.g. reward.judge.base_url=http://127.0.0.1:8000/v1 of `agent-rl serve`)")
    for key, value in [("max_concurrency", j.max_concurrency), ("max_tokens", j.max_tokens)]:
        if value < 1:
            raise ConfigError(f"reward.judge.{key}: must be >= 1, got {value}")
    for key, value in [("max_retries", j.max_retries), ("backoff_s", j.backoff_s), ("cache_size", j.cache_size),
                       ("temperature", j.temperature)]:
        if value < 0:
            raise ConfigError(f"reward.judge.{key}: must be >= 0, got {value}")
    if j.timeout_s <= 0:
        raise ConfigError(f"reward.judge.timeout_s: must be > 0, got {j.timeout_s}")
    if not j.score_max > j.score_min:
        raise ConfigError(f"reward.judge.score_max: must be > score_min, got {j.score_max} <= {j.score_min}")
    try:
        re.compile(j.score_regex)
    except re.error as e:
        raise ConfigError(f"reward.judge.score_regex: {j.score_regex!r} is not a regex: {e}") from None


def _check_kl_ctrl(cfg: TrainConfig) -> None:
    k = cfg.algorithm.kl_ctrl
    if k.type not in ("fixed", "adaptive", "range"):
        raise ConfigError(f"algorithm.kl_ctrl.type: {k.type!r} is not one of fixed, adaptive, range")
    if k.type != "fixed" and not cfg.actor.use_kl_loss:
        raise ConfigError(f"algorithm.kl_ctrl.type: {k.type} controls the KL loss coefficient, but actor.use_kl_loss "
                          "is false (there is no KL in the reward here)")
    if k.kl_coef is not None and k.kl_coef < 0:
        raise ConfigError(f"algorithm.kl_ctrl.kl_coef: must be >= 0, got {k.kl_coef}")
    if k.type == "adaptive":
        if k.horizon <= 0:
            raise ConfigError(f"algorithm.kl_ctrl.horizon: must be > 0, got {k.horizon}")
        if k.target_kl <= 0:
            raise ConfigError(f"algorithm.kl_ctrl.target_kl: must be > 0, got {k.target_kl}")
    if k.type == "range":
        if len(k.target_range) != 2 or not 0 <= k.target_range[0] < k.target_range[1]:
            raise ConfigError(f"algorithm.kl_ctrl.target_range: must be [lo, hi] with 0 <= lo < hi, got {list(k.target_range)}")
        if k.factor <= 1:
            raise ConfigError(f"algorithm.kl_ctrl.factor: must be > 1, got {k.factor}")
        if not 0 <= k.min_coef <= k.max_coef:
            raise ConfigError(f"algorithm.kl_ctrl.min_coef / max_coef: need 0 <= min_coef <= max_coef, "
                              f"got {k.min_coef} / {k.max_coef}")


def _check_lora(cfg: TrainConfig) -> None:
    """actor.lora.*: values in range, and what LoRA cannot do (the reference is the base model, adapter off)."""
    lo = cfg.actor.lora
    if lo.rank < 0:
        raise ConfigError(f"actor.lora.rank: must be >= 0 (0 = off), got {lo.rank}")
    if lo.rank == 0:
        return
    if lo.alpha <= 0:
        raise ConfigError(f"actor.lora.alpha: must be > 0, got {lo.alpha}")
    if not 0.0 <= lo.dropout < 1.0:
        raise ConfigError(f"actor.lora.dropout: must be in [0, 1), got {lo.dropout}")
    targets = lo.target_modules
    names = [targets] if isinstance(targets, str) else list(targets) if isinstance(targets, (list, tuple)) else []
    problem = None if names else "must be all-linear or a list of module names"
    bad = [t for t in names if not isinstance(t, str) or not t]
    if bad:
        problem = f"every entry must be a module name, got {bad[0]!r}"
    if problem:
        raise ConfigError(f"actor.lora.target_modules: {problem}")
    if cfg.sft.steps > 0 and cfg.sft.update_ref and cfg.actor.use_kl_loss:
        raise ConfigError("actor.lora.rank: with LoRA the KL reference is the base model (adapter off) and cannot become "
                          "the warm-started model: set sft.update_ref=false (or actor.lora.rank=0)")


def _check_lora_targets(cfg: TrainConfig) -> None:
    """Every name in actor.lora.target_modules is a linear layer of the model (built on the meta device)."""
    lo = cfg.actor.lora
    if lo.rank <= 0 or lo.target_modules == "all-linear":
        return
    from agent_rl.model.lora_targets import linear_module_names_of, target_modules_problem
    from agent_rl.model.prepare import embedded_model_dir

    path = embedded_model_dir() if cfg.model.path == "embedded" else cfg.model.path
    if not os.path.isfile(os.path.join(path, "config.json")):
        return  # not prepared yet: checked again when the adapters are applied
    try:
        names = linear_module_names_of(path, cfg.model.trust_remote_code)
    except Exception:  # noqa: BLE001 - a model transformers cannot build on meta: checked when it loads
        return
    problem = target_modules_problem(names, list(lo.target_modules) if not isinstance(lo.target_modules, str)
                                     else lo.target_modules)
    if problem:
        raise ConfigError(f"actor.lora.target_modules: {problem}")


def check_files(cfg: TrainConfig, data_keys: Sequence[str] = ("train_files", "val_files"), sft: bool = True) -> None:
    """Missing or unusable inputs fail at start, naming the key and the path; nothing is written or started.

    Data: a missing file is an error unless `data.generate_if_missing` will make it (only in the default folder of
    its task, `agent_rl.orchestration.prepare.check_data`). Tools: the YAML validates and its classes import. Model:
    a local folder with a Hugging Face config.json. Existing data files must open as parquet.
    """
    from agent_rl.orchestration.prepare import (check_data, check_data_readable, check_demos, check_model_folder,
                                                check_rewards, check_tools)

    check_data(cfg, data_keys)
    if sft:
        check_demos(cfg)
    check_tools(cfg)
    check_rewards(cfg)
    if cfg.model.path != "embedded":
        check_model_folder(cfg.model.path, tokenizer=not cfg.model.tokenizer_path)
    if cfg.model.tokenizer_path and not os.path.isdir(cfg.model.tokenizer_path):
        raise ConfigError(f"model.tokenizer_path: not a folder: {cfg.model.tokenizer_path}")
    check_data_readable(cfg, data_keys)
    _check_lora_targets(cfg)


def to_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def override_keys(overrides: Sequence[str]) -> set:
    """The config keys a list of Hydra overrides sets (`+`, `++`, `~` prefixes dropped)."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def parse_overrides(argv: List[str]) -> List[str]:
    bad = [a for a in argv if "=" not in a and not a.startswith(("+", "~"))]
    if bad:
        raise ConfigError(f"{bad[0]}: expected a Hydra override key=value")
    return list(argv)
