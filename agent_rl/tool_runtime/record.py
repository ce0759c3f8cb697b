"""The record of one tool call and its status vocabulary.

Every layer that reads a call (tool runtime, agent loop, scheduler, rewards, metrics) uses these names;
nothing else spells a status. The runtime sets every status but the two the agent loop sets itself
(`PARSE_ERROR`, `BUDGET`: the call never reached the runtime).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

OK = "ok"                                  # the tool ran and answered (its own metrics may still say it failed)
PARSE_ERROR = "parse_error"                # agent loop: the call text did not parse
BUDGET = "budget"                          # agent loop: over `max_tool_calls`, never ran
UNKNOWN_TOOL = "unknown_tool"              # no tool of that name
INVALID_ARGUMENTS = "invalid_arguments"    # arguments not JSON or not valid against the tool's schema
CREATE_FAILED = "create_failed"            # the trajectory's instance of the tool could not be created
TIMEOUT = "timeout"                        # execute ran past `timeout_s`
EXCEPTION = "exception"                    # execute raised (after retries of TransientToolError)
BAD_RESPONSE = "bad_response"              # execute returned something that is not a response

CALL_STATUSES = (OK, PARSE_ERROR, BUDGET, UNKNOWN_TOOL, INVALID_ARGUMENTS, CREATE_FAILED, TIMEOUT, EXCEPTION,
                 BAD_RESPONSE)
LOOP_STATUSES = (PARSE_ERROR, BUDGET)                          # set by the agent loop, not the runtime
MALFORMED_STATUSES = (PARSE_ERROR, UNKNOWN_TOOL, INVALID_ARGUMENTS)   # the model wrote a call that cannot run


@dataclass
class ToolCallRecord:
    name: str
    arguments: Any                 # parsed dict, or the raw string when it did not parse
    observation: str               # text the model saw (after truncation)
    status: str                    # one of CALL_STATUSES
    step_reward: float = 0.0
    latency_s: float = 0.0
    metrics: Dict[str, Any] = field(default_factory=dict)   # the tool's own metrics (+ truncated_tokens, retries)

    @property
    def succeeded(self) -> bool:
        """The call ran (status ok) and the tool's own metrics do not report a failure (`success` false).
        A tool that reports no `success` succeeds whenever it answers."""
        return self.status == OK and bool((self.metrics or {}).get("success", True))
