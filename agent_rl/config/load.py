"""Compose the trainer config: Hydra (config dir + overrides) merged into the structured schema.

Errors are one line naming the key or path: `ConfigError("rollout.multi_turn.max_turnz: unknown key ...")`.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agent_rl.algorithms.kl import KL_KINDS
from agent_rl.config.schema import TrainConfig
from agent_rl.rollout.formats import get_parser


class ConfigError(ValueError):
    pass


def default_config_dir() -> str:
    """`configs/` of the source tree when present (editable installs, examples), else the packaged copy."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.join(here, "..", "..", "configs")
    if os.path.exists(os.path.join(repo, "trainer.yaml")):
        return os.path.abspath(repo)
    return here


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or ""
    msg = getattr(e, "msg", None) or str(e).splitlines()[0]
    msg = msg.splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        return f"{key}: unknown config key (misspelt? see docs/config.md)"
    return f"{key}: {msg}" if key else msg


def _hydra_error(e: Exception) -> str:
    text = str(e)
    cause = e.__cause__ or e.__context__
    full = re.search(r"full_key: (\S+)", text + "\n" + str(cause or ""))
    key = full.group(1) if full else None
    if re.search(r"not in struct|is not in struct|Could not override", text) and key and "not in struct" in text + str(cause or ""):
        return f"{key}: unknown config key (misspelt? see docs/config.md)"
    if isinstance(cause, OmegaConfBaseException):
        return _describe(cause)
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        detail = [ln for ln in (str(cause) if cause else text).splitlines() if ln.strip() and "Could not override" not in ln and "To append" not in ln]
        return f"{m.group(1)}: {detail[0].strip() if detail else 'invalid override'}"
    return text.splitlines()[0]


def compose(overrides: Sequence[str] = (), config_dir: Optional[str] = None, config_name: str = "trainer",
            check_paths: bool = True) -> TrainConfig:
    """Hydra-compose `config_name` from `config_dir` with `overrides`, validate against the schema."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="agent_rl_schema", node=TrainConfig)
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
    schema = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(schema, raw)
        OmegaConf.resolve(merged)
        cfg: TrainConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e)) from None
    _check_values(cfg)
    if check_paths:
        check_files(cfg)
    return cfg


def _check_values(cfg: TrainConfig) -> None:
    def choice(key, value, options):
        if value not in options:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}")

    choice("rollout.engine", cfg.rollout.engine, ["auto", "sglang", "hf", "http"])
    choice("rollout.multi_turn.tool_response_truncate_side", cfg.rollout.multi_turn.tool_response_truncate_side, ["head", "middle", "tail"])
    choice("actor.loss_agg_mode", cfg.actor.loss_agg_mode, ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
    choice("actor.kl_loss_type", cfg.actor.kl_loss_type, list(KL_KINDS))
    choice("algorithm.adv_estimator", cfg.algorithm.adv_estimator, ["grpo", "grpo_multi_turn"])
    choice("trainer.device", cfg.trainer.device, ["auto", "cuda", "cpu"])
    choice("reward.kg_answer_metric", cfg.reward.kg_answer_metric, ["f1", "em", "hits1"])
    choice("logger.wandb_mode", cfg.logger.wandb_mode, ["auto", "online", "offline", "disabled"])
    for b in cfg.logger.backends:
        choice("logger.backends", b, ["console", "jsonl", "wandb"])
    for key, value in [("rollout.n", cfg.rollout.n), ("data.train_batch_size", cfg.data.train_batch_size),
                       ("actor.ppo_mini_batch_size", cfg.actor.ppo_mini_batch_size),
                       ("rollout.multi_turn.max_assistant_turns", cfg.rollout.multi_turn.max_assistant_turns),
                       ("rollout.multi_turn.max_new_tokens_per_turn", cfg.rollout.multi_turn.max_new_tokens_per_turn),
                       ("trainer.n_gpus_per_node", cfg.trainer.n_gpus_per_node)]:
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    try:  # a format name of the registry, or a dotted path that must import
        get_parser(cfg.rollout.multi_turn.format)
    except ValueError as e:
        raise ConfigError(f"rollout.multi_turn.format: {e}") from None
    if any(not isinstance(s, str) or not s for s in cfg.rollout.multi_turn.stop_strings):
        raise ConfigError(f"rollout.multi_turn.stop_strings: every entry must be a non-empty string, got {cfg.rollout.multi_turn.stop_strings!r}")
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
    if cfg.data.train_batch_size % cfg.actor.ppo_mini_batch_size:
        raise ConfigError(f"actor.ppo_mini_batch_size: {cfg.actor.ppo_mini_batch_size} must divide data.train_batch_size {cfg.data.train_batch_size}")


def check_files(cfg: TrainConfig) -> None:
    """Missing inputs fail at start, naming the key and the path."""
    gen = cfg.data.generate_if_missing
    for key, files in [("data.train_files", cfg.data.train_files), ("data.val_files", cfg.data.val_files)]:
        for f in files:
            if not os.path.exists(f) and not gen:
                raise ConfigError(f"{key}: file not found: {f} (make it with `agent-rl data generate kg --out {os.path.dirname(f) or '.'}`)")
    if cfg.sft.steps > 0 and gen not in ("kg", "arith"):
        for f in cfg.sft.files:
            if not os.path.exists(f):
                raise ConfigError(f"sft.files: file not found: {f} (demonstrations: `agent-rl data kg-demos --data DIR` "
                                  "or `agent-rl data arith-demos --data DIR`)")
    if cfg.tools.config_path and not os.path.exists(cfg.tools.config_path):
        raise ConfigError(f"tools.config_path: file not found: {cfg.tools.config_path}")
    if cfg.model.path != "embedded" and not os.path.exists(cfg.model.path):
        raise ConfigError(f"model.path: not found: {cfg.model.path} (a local HF folder, or `embedded`)")


def to_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def parse_overrides(argv: List[str]) -> List[str]:
    bad = [a for a in argv if "=" not in a and not a.startswith(("+", "~"))]
    if bad:
        raise ConfigError(f"{bad[0]}: expected a Hydra override key=value")
    return list(argv)
