import dataclasses

import pytest

from agent_rl.engines.base import SamplingParams


def test_copy_with_is_dataclasses_replace():
    base = SamplingParams(max_new_tokens=7, temperature=0.3, top_k=5, stop_token_ids=[1, 2], seed=4, priority=2)
    changes = {"max_new_tokens": 3, "session": "s", "affinity": "g"}
    new = base.copy_with(**changes)
    assert new == dataclasses.replace(base, **changes) and type(new) is SamplingParams
    assert new is not base and (base.max_new_tokens, base.session, base.affinity) == (7, None, None)
    assert new.stop_token_ids is base.stop_token_ids   # shallow, as replace
    assert base.copy_with() == base
    with pytest.raises(TypeError, match="no field 'max_tokens'"):
        base.copy_with(max_tokens=3)


def test_copy_with_keeps_a_subclass():
    @dataclasses.dataclass
    class Mine(SamplingParams):
        extra: int = 1

    new = Mine(max_new_tokens=2, extra=5).copy_with(max_new_tokens=9)
    assert type(new) is Mine and (new.max_new_tokens, new.extra) == (9, 5)
