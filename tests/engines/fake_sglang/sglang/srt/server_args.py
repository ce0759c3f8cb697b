"""ServerArgs with the fields our engine sets (a dataclass, as sglang's); remembers the kwargs it was given."""
import dataclasses
from typing import Optional


@dataclasses.dataclass
class ServerArgs:
    model_path: str
    skip_tokenizer_init: bool = False
    mem_fraction_static: Optional[float] = None
    enable_memory_saver: bool = False
    context_length: Optional[int] = None
    random_seed: Optional[int] = None
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = 30000
    log_level: str = "info"
    log_level_http: Optional[str] = None
    attention_backend: Optional[str] = None
    sampling_backend: Optional[str] = None
    grammar_backend: Optional[str] = None
    cuda_graph_max_bs_decode: Optional[int] = None
    disable_cuda_graph: bool = False
    max_running_requests: Optional[int] = None
    schedule_policy: str = "fcfs"
    enable_priority_scheduling: bool = False
    schedule_low_priority_values_first: bool = False
    disable_priority_preemption: bool = False
    default_priority_value: Optional[int] = None
    enable_prefill_delayer: bool = False
    prefill_delayer_queue_min_ratio: Optional[float] = None
    prefill_delayer_max_delay_passes: Optional[int] = None
    disable_overlap_schedule: bool = False
    disable_prefill_cuda_graph: bool = False
    dp_size: int = 1
    enable_streaming_session: bool = False
    device: Optional[str] = None
    sleep_on_idle: bool = False


_dataclass_init = ServerArgs.__init__


def _init(self, **kwargs):
    _dataclass_init(self, **kwargs)   # an unknown kwarg raises TypeError, as sglang's
    self.given = dict(kwargs)


ServerArgs.__init__ = _init
