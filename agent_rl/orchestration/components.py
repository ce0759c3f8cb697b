"""Building the rollout-side objects from the config (shared by the driver and the workers)."""
from __future__ import annotations

from typing import Any, Optional

from agent_rl.config.schema import TrainConfig


def load_tokenizer(cfg: TrainConfig, model_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model.tokenizer_path or model_path, trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tool_runtime(cfg: TrainConfig, tokenizer) -> Optional[Any]:
    if not cfg.tools.config_path:
        return None
    from agent_rl.tool_runtime.runtime import ToolRuntime

    mt = cfg.rollout.multi_turn
    return ToolRuntime.from_yaml(cfg.tools.config_path, tokenizer=tokenizer, max_tool_response_tokens=mt.max_tool_response_tokens,
                                 truncate_side=mt.tool_response_truncate_side)


def build_renderer(cfg: TrainConfig, tokenizer, tool_runtime):
    from agent_rl.rollout.chat import ChatRenderer

    tools = tool_runtime.schemas if (tool_runtime is not None and cfg.rollout.multi_turn.enable) else None
    return ChatRenderer(tokenizer, tools, cfg.rollout.multi_turn.system_prompt)


def make_reward_fn(cfg: TrainConfig):
    from agent_rl.rewards import compute_reward

    reward_cfg = cfg.reward

    def reward_fn(traj):
        return compute_reward(traj, reward_cfg)

    return reward_fn
