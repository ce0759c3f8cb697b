"""`rollout.event_loop`: asyncio's own loop whatever policy is set, uvloop on request, a clear error otherwise."""
import asyncio
import sys

import pytest

from agent_rl.config.load import ConfigError, compose
from agent_rl.rollout.event_loop import new_event_loop


class _NotThisPolicy(asyncio.DefaultEventLoopPolicy):   # what importing sglang does: another loop for new_event_loop()
    def new_event_loop(self):
        raise AssertionError("the policy's loop was used")


def test_asyncio_is_asyncios_own_loop_whatever_the_policy():
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_NotThisPolicy())
    try:
        loop = new_event_loop("asyncio")
    finally:
        asyncio.set_event_loop_policy(old)
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert loop.run_until_complete(asyncio.sleep(0, result=7)) == 7
    finally:
        loop.close()


def test_uvloop_runs_coroutines():
    uvloop = pytest.importorskip("uvloop")
    loop = new_event_loop("uvloop")
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0.01, result="ok")) == "ok"
    finally:
        loop.close()


def test_uvloop_missing_and_unknown_kinds_are_one_line_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)   # import uvloop -> ImportError
    with pytest.raises(ValueError, match="needs the uvloop package"):
        new_event_loop("uvloop")
    with pytest.raises(ValueError, match="is not one of asyncio, uvloop"):
        new_event_loop("trio")


def test_the_config_key_is_checked():
    assert compose(["rollout.event_loop=uvloop"], check_paths=False).rollout.event_loop == "uvloop"
    assert compose([], check_paths=False).rollout.event_loop == "asyncio"
    with pytest.raises(ConfigError, match=r"^rollout.event_loop: 'trio' is not one of asyncio, uvloop$"):
        compose(["rollout.event_loop=trio"], check_paths=False)
