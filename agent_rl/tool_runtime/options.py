"""Per-tool runtime options, read from the tool's `config` block in the YAML.

    config:
      type: native
      timeout_s: 30            # one execute attempt
      create_timeout_s: 30     # create (default: timeout_s)
      release_timeout_s: 10    # release / calc_reward
      max_concurrency: 64      # calls of this tool in flight at once (per runtime); null = no cap
      rate_limit: null         # verl's key and meaning: calls of this tool in flight at once, shared by every
                               # runtime of the process on one event loop (verl: the Ray cluster); null = no cap
      enable_global_rate_limit: true  # verl's key: false turns rate_limit off
      calls_per_second: null   # time-based limit, shared by every runtime in the process
      calls_per_second_burst: 1  # calls allowed back to back before calls_per_second applies
      max_retries: 2           # retries of a TransientToolError
      retry_backoff_s: 0.2     # first retry delay; doubles each retry (capped by retry_backoff_max_s)
      retry_backoff_max_s: 5
      max_response_tokens: null  # overrides the runtime's max_tool_response_tokens for this tool
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional

from agent_rl.tool_runtime.errors import ToolConfigError


@dataclass(frozen=True)
class RuntimeOptions:
    timeout_s: float = 30.0
    create_timeout_s: Optional[float] = None
    release_timeout_s: float = 10.0
    max_concurrency: Optional[int] = 64
    rate_limit: Optional[int] = None
    enable_global_rate_limit: bool = True
    calls_per_second: Optional[float] = None
    calls_per_second_burst: int = 1
    max_retries: int = 2
    retry_backoff_s: float = 0.2
    retry_backoff_max_s: float = 5.0
    max_response_tokens: Optional[int] = None

    @property
    def create_timeout(self) -> float:
        return self.timeout_s if self.create_timeout_s is None else self.create_timeout_s

    @property
    def concurrent_cap(self) -> Optional[int]:
        """verl's `rate_limit` unless `enable_global_rate_limit` is false: calls in flight at once (None = no cap)."""
        return self.rate_limit if self.enable_global_rate_limit else None

    def backoff(self, retry: int) -> float:
        """Delay before retry number `retry` (0-based)."""
        return min(self.retry_backoff_s * (2 ** retry), self.retry_backoff_max_s)


_INTS = {"max_concurrency", "rate_limit", "calls_per_second_burst", "max_retries", "max_response_tokens"}
_BOOLS = {"enable_global_rate_limit"}
_NON_NEGATIVE = {"max_retries", "retry_backoff_s"}
_NOT_NULL = {"timeout_s", "release_timeout_s", "enable_global_rate_limit", "calls_per_second_burst", "max_retries",
             "retry_backoff_s", "retry_backoff_max_s"}


def options_from_config(config: Dict[str, Any], where: str = "", defaults: Optional[Dict[str, Any]] = None) -> RuntimeOptions:
    """Pick the runtime keys out of a tool config (other keys belong to the tool) and check them."""
    values: Dict[str, Any] = dict(defaults or {})
    names = {f.name for f in fields(RuntimeOptions)}
    for key in names:
        if key in (config or {}):
            values[key] = config[key]
    prefix = f"{where}: " if where else ""
    if "rate_limit_burst" in (config or {}):   # our key from when rate_limit meant calls per second
        raise ToolConfigError(f"{prefix}config.rate_limit_burst is now calls_per_second_burst: rate_limit caps the calls "
                              "in flight at once, as in verl; a calls-per-second limit is calls_per_second")
    for key, v in values.items():
        if key not in names:
            raise ToolConfigError(f"{prefix}unknown runtime option {key!r}")
        if v is None:
            if key in _NOT_NULL:
                raise ToolConfigError(f"{prefix}config.{key} must not be null")
            continue
        if key in _BOOLS:
            if not isinstance(v, bool):
                raise ToolConfigError(f"{prefix}config.{key} must be true or false, got {v!r}")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            raise ToolConfigError(f"{prefix}config.{key} must be a finite number, got {v!r}")
        if key in _INTS:
            if int(v) != v:
                raise ToolConfigError(f"{prefix}config.{key} must be an integer, got {v!r}")
            values[key] = int(v)
        if key in _NON_NEGATIVE:
            if v < 0:
                raise ToolConfigError(f"{prefix}config.{key} must be >= 0, got {v!r}")
        elif v <= 0:
            raise ToolConfigError(f"{prefix}config.{key} must be > 0, got {v!r}")
    return RuntimeOptions(**values)
