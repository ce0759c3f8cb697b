"""Error kinds of the tool runtime and the loader's exception."""
from __future__ import annotations

OK = "ok"
INVALID_ARGUMENTS = "invalid_arguments"
UNKNOWN_TOOL = "unknown_tool"
TIMEOUT = "timeout"
EXCEPTION = "exception"
CREATE_FAILED = "create_failed"
BAD_RESPONSE = "bad_response"
# Counted only (never a ToolCallRecord.status of a call):
RELEASE_FAILED = "release_failed"
CALC_REWARD_FAILED = "calc_reward_failed"
CANCELLED = "cancelled"

CALL_STATUSES = (OK, INVALID_ARGUMENTS, UNKNOWN_TOOL, TIMEOUT, EXCEPTION, CREATE_FAILED, BAD_RESPONSE)


class ToolConfigError(ValueError):
    """A tool YAML file is invalid; the message names the file and the entry."""
