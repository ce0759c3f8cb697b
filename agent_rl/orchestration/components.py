"""Building the rollout-side objects from the config: the one place the trainer, its workers, `agent-rl rollout`
and `agent-rl eval` assemble tokenizer, tools, renderer and scheduler (the benchmark drives its own workload)."""
from __future__ import annotations

import os
from typing import Any, Optional

from agent_rl.config.schema import TrainConfig


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def load_tokenizer(cfg: TrainConfig, model_path: str):
    """The model's tokenizer; a folder without a loadable one is a ConfigError naming the key and the folder."""
    from transformers import AutoTokenizer

    from agent_rl.config.load import ConfigError
    from agent_rl.tool_runtime.imports import one_line

    path = cfg.model.tokenizer_path or model_path
    key = "model.tokenizer_path" if cfg.model.tokenizer_path else "model.path"
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise ConfigError(f"{key}: {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): not a Hugging Face "
                          "model folder? (set model.tokenizer_path to the tokenizer's folder)")
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)
    except Exception as e:   # transformers raises OSError, ValueError, ... with multi-line messages
        raise ConfigError(f"{key}: cannot load a tokenizer from {path}: {type(e).__name__}: {one_line(e, 240)}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tool_runtime(cfg: TrainConfig, tokenizer) -> Optional[Any]:
    """The tools of `tools.config_path`; an invalid tool YAML is a ConfigError (`tools.config_path: <file>: ...`)."""
    if not cfg.tools.config_path:
        return None
    from agent_rl.config.load import ConfigError
    from agent_rl.tool_runtime.errors import ToolConfigError
    from agent_rl.tool_runtime.runtime import ToolRuntime

    mt = cfg.rollout.multi_turn
    try:
        return ToolRuntime.from_yaml(cfg.tools.config_path, tokenizer=tokenizer,
                                     max_tool_response_tokens=mt.max_tool_response_tokens,
                                     truncate_side=mt.tool_response_truncate_side)
    except ToolConfigError as e:
        raise ConfigError(f"tools.config_path: {e}") from e


def build_renderer(cfg: TrainConfig, tokenizer, tool_runtime):
    from agent_rl.rollout.chat import ChatRenderer

    tools = tool_runtime.schemas if (tool_runtime is not None and cfg.rollout.multi_turn.enable) else None
    return ChatRenderer(tokenizer, tools, cfg.rollout.multi_turn.system_prompt, model_path=cfg.model.path)


def make_reward_fn(cfg: TrainConfig):
    """The scheduler's reward: a coroutine (the scheduler awaits it), so async reward functions such as the LLM
    judge (`tasks/judge.py`) run on the rollout's loop without blocking it."""
    from agent_rl.tasks import compute_reward_async

    reward_cfg = cfg.reward

    def reward_fn(traj):
        return compute_reward_async(traj, reward_cfg)

    return reward_fn


def build_scheduler(cfg: TrainConfig, engine, renderer, tool_runtime, rank: int = 0, filter_groups: bool = True):
    """The rollout scheduler over `engine` with the run's reward and, for training (`filter_groups`), the dynamic
    sampling filter of `algorithm.filter_groups`."""
    from agent_rl.rollout.group_filter import GroupFilter
    from agent_rl.rollout.scheduler import RolloutScheduler

    fg = cfg.algorithm.filter_groups
    # GDPO: a group with one weighted-sum score may still differ in its objectives (group_filter.py)
    objectives = list(cfg.reward.objectives or {}) if cfg.algorithm.norm_per_objective else []
    return RolloutScheduler(engine, renderer, tool_runtime, cfg.rollout, reward_fn=make_reward_fn(cfg),
                            group_filter=GroupFilter(fg.metric, objectives) if (fg.enable and filter_groups) else None,
                            rank=rank)
