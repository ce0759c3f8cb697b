"""A trajectory: the exact token sequence of one multi-turn sample and what happened in it.

`prompt_ids` + `response_ids` is what the actor trains on; `loss_mask[i] == 1` exactly where
`response_ids[i]` was sampled by the engine, and `rollout_logprobs[i]` is the engine's log-prob of
that token (0.0 where the mask is 0). Tool observations and template tokens have mask 0.
Each tool call of a turn is a `tool_runtime.record.ToolCallRecord`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from agent_rl.tool_runtime.record import ToolCallRecord


@dataclass
class TurnRecord:
    index: int
    output_ids: List[int]          # sampled ids of this assistant turn
    logprobs: List[float]
    finish_reason: str
    text: str                      # decoded for reading only, never re-tokenised
    tool_calls: List[ToolCallRecord] = field(default_factory=list)
    observation_ids: List[int] = field(default_factory=list)  # tool turn + next assistant header
    gen_latency_s: float = 0.0
    tool_latency_s: float = 0.0
    policy_version: Optional[int] = None  # weights version that sampled this turn (carry-over spans versions)
    calls_parsed: Optional[int] = None    # tool calls the configured format found in the text (None: not parsed)


@dataclass
class Trajectory:
    uid: str                       # GRPO group id (one prompt)
    sample_index: int              # index within the group
    row: Dict[str, Any]            # the dataset row (prompt, data_source, reward_model, extra_info)
    prompt_ids: List[int]
    response_ids: List[int] = field(default_factory=list)
    loss_mask: List[int] = field(default_factory=list)
    rollout_logprobs: List[float] = field(default_factory=list)
    turns: List[TurnRecord] = field(default_factory=list)
    messages: List[Dict[str, Any]] = field(default_factory=list)   # chat view, for reading / drift checks
    status: str = "running"        # running | finished | aborted | carried
    stop_reason: str = ""          # answer | max_assistant_turns | max_tool_calls | max_response_tokens | max_model_len | abort
    reward: float = 0.0
    reward_components: Dict[str, float] = field(default_factory=dict)
    tool_rewards: Dict[str, float] = field(default_factory=dict)  # per tool calc_reward
    turn_rewards: List[float] = field(default_factory=list)       # per assistant turn (multi-turn advantage)
    drift: Optional[int] = None    # tokens differing from a full re-render (None = not checked)
    start_time: float = 0.0        # time.perf_counter() at the first turn (the bench's clock) ...
    end_time: float = 0.0          # ... and at the end
    policy_version: int = 0        # weights version that sampled the first token (carry-over spans versions)

    @property
    def id(self) -> str:
        return f"{self.uid}/{self.sample_index}"

    @property
    def num_generated(self) -> int:
        return sum(self.loss_mask)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)
