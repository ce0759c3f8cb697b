"""Error kinds the tool runtime counts that are not the status of a call, and the loader's exception.
Call statuses (and `ToolCallRecord`) live in `record.py`."""
from __future__ import annotations

# Counted only (`tools/<name>/errors/<kind>`), never a ToolCallRecord.status:
CREATE_ERROR = "create_error"
RELEASE_FAILED = "release_failed"
CALC_REWARD_FAILED = "calc_reward_failed"
CLOSE_FAILED = "close_failed"
CANCELLED = "cancelled"
NON_UTF8 = "non_utf8"
BAD_STEP_REWARD = "bad_step_reward"


class ToolConfigError(ValueError):
    """A tool YAML file is invalid; the message names the file and the entry."""
