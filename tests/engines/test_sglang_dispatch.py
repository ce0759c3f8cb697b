"""A loop pass's generate requests to sglang's scheduler in one message (engines/sglang_dispatch.py): held until the
end of the pass, sent as one batch, any other message (an abort) only after what was held, off by default."""
import asyncio
from dataclasses import dataclass, field
from typing import List

import pytest

import agent_rl.engines.sglang_dispatch as dispatch_mod
from agent_rl.bench.variants import applied, check_engine
from agent_rl.engines.sglang_dispatch import BatchDispatch
from agent_rl.engines.sglang_engine import SGLangEngine


@dataclass
class Req:          # stands in for sglang's TokenizedGenerateReqInput
    rid: str
    time_stats: str = "wrapped"


@dataclass
class Batch:        # BatchTokenizedGenerateReqInput
    batch: List[Req] = field(default_factory=list)


@dataclass
class Abort:
    rid: str


class TM:
    def __init__(self):
        self.sent = []

    def _dispatch_to_scheduler(self, obj):
        self.sent.append(obj)


def _send_one_request(tm, obj):
    """What sglang 0.5.17's `_send_one_request` does around the dispatch: the pickled field goes out, the original
    gets its time stats back right after."""
    tm._dispatch_to_scheduler(obj)
    obj.time_stats = "restored"


async def test_a_pass_of_requests_goes_out_as_one_message_and_aborts_never_overtake():
    tm = TM()
    d = BatchDispatch(tm._dispatch_to_scheduler, Req, Batch)
    tm._dispatch_to_scheduler = d
    _send_one_request(tm, Req("a"))
    assert [r.rid for r in tm.sent] == ["a"]            # off by default: straight through
    d.on = True
    reqs = [Req("b"), Req("c"), Req("d")]
    for r in reqs:
        _send_one_request(tm, r)
    assert len(tm.sent) == 1                              # held until the end of this loop pass
    await asyncio.sleep(0)
    batch = tm.sent[1]
    assert isinstance(batch, Batch) and [r.rid for r in batch.batch] == ["b", "c", "d"]
    # the held copies kept the field as it was at the dispatch; the originals got theirs back
    assert {r.time_stats for r in batch.batch} == {"wrapped"} and {r.time_stats for r in reqs} == {"restored"}
    assert (d.batches, d.requests) == (1, 3)

    _send_one_request(tm, Req("e"))                       # one request in a pass: sent as it is
    await asyncio.sleep(0)
    assert isinstance(tm.sent[2], Req) and tm.sent[2].rid == "e"

    _send_one_request(tm, Req("f"))
    _send_one_request(tm, Req("g"))
    tm._dispatch_to_scheduler(Abort("f"))                 # an abort in the same pass: the held requests go first
    assert [type(m).__name__ for m in tm.sent[3:]] == ["Batch", "Abort"] and tm.sent[-1].rid == "f"
    await asyncio.sleep(0)
    assert len(tm.sent) == 5                              # nothing left to send at the end of the pass

    _send_one_request(tm, Req("h"))
    d.on = False                                          # turned off with a request held: it still goes out
    await asyncio.sleep(0)
    assert tm.sent[-1].rid == "h"


def test_install_wraps_only_with_sglang_and_a_dispatch(monkeypatch):
    monkeypatch.setattr(dispatch_mod, "sglang_request_classes", lambda: None)
    assert BatchDispatch.install(TM()) is None            # no sglang here
    monkeypatch.setattr(dispatch_mod, "sglang_request_classes", lambda: (Req, Batch))
    assert BatchDispatch.install(object()) is None        # nothing to wrap
    tm = TM()
    d = BatchDispatch.install(tm)
    assert tm._dispatch_to_scheduler is d and not d.on


def test_the_engine_switch_and_the_bench_variant(monkeypatch):
    from tests.bench.test_output_tap import _BatchingEngine

    from agent_rl.bench.modes import parse_modes

    assert [m.name for m in parse_modes("async,async@batchsend")] == ["async", "async@batchsend"]
    plain = SGLangEngine.wrap(_BatchingEngine())          # a stand-in engine: nothing to batch
    assert not plain.can_batch_dispatch and plain.batch_dispatch is False
    plain.batch_dispatch = False
    with pytest.raises(ValueError, match="batch_dispatch needs sglang's tokenizer manager in this process"):
        plain.batch_dispatch = True
    with pytest.raises(ValueError, match=r"^mode variant @batchsend needs the in-process sglang engine"):
        check_engine(plain, "batchsend")

    fake = _BatchingEngine()
    fake.tokenizer_manager._dispatch_to_scheduler = lambda obj: None
    fake.tokenizer_manager.generate_request = lambda obj, request=None: None
    monkeypatch.setattr(dispatch_mod, "sglang_request_classes", lambda: (Req, Batch))
    monkeypatch.setattr("agent_rl.engines.sglang_engine._request_input_class", lambda: dict)
    engine = SGLangEngine.wrap(fake)
    assert engine.can_batch_dispatch and engine.batch_dispatch is False
    assert engine.scheduling_info()["batch_dispatch"] is False
    with applied(engine, "batchsend"):
        assert engine.batch_dispatch is True and engine.scheduling_info()["batch_dispatch"] is True
    assert engine.batch_dispatch is False
