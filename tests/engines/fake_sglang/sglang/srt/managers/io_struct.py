"""The session requests of sglang 0.5.17's io_struct (engines/sglang_engine.py opens and closes streaming sessions)."""
import dataclasses
from typing import Optional


@dataclasses.dataclass
class OpenSessionReqInput:
    capacity_of_str_len: int
    session_id: Optional[str] = None
    streaming: Optional[bool] = None
    timeout: Optional[float] = None


@dataclasses.dataclass
class CloseSessionReqInput:
    session_id: str
