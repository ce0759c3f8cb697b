"""Truncation of tool observations: head / middle / tail, in tokens (tokenizer) or characters."""
import pytest

from agent_rl.tool_runtime.runtime import ToolRuntime
from agent_rl.tool_runtime.truncate import truncate_text
from tool_fakes import ScriptedTool

TEXT = "".join(f"<{i:04d}>" for i in range(500))   # 3000 chars


def test_chars_fit_untouched():
    assert truncate_text("short", 10, "middle") == ("short", 0)
    assert truncate_text(TEXT, None) == (TEXT, 0)


@pytest.mark.parametrize("side", ["head", "middle", "tail"])
def test_chars_each_side(side):
    out, cut = truncate_text(TEXT, 100, side)
    assert len(out) <= 100 and cut == len(TEXT) - (len(out) - len(f"...[truncated {cut} chars]..."))
    mark = f"...[truncated {cut} chars]..."
    assert mark in out
    if side == "head":          # the head is cut: keeps the end
        assert out.startswith(mark) and TEXT.endswith(out[len(mark):])
    elif side == "tail":        # the tail is cut: keeps the beginning
        assert out.endswith(mark) and TEXT.startswith(out[: -len(mark)])
    else:
        head, tail = out.split(mark)
        assert TEXT.startswith(head) and TEXT.endswith(tail) and abs(len(head) - len(tail)) <= 1


def test_bad_side():
    with pytest.raises(ValueError, match="head"):
        truncate_text(TEXT, 10, "left")


@pytest.mark.parametrize("side", ["head", "middle", "tail"])
def test_tokens_each_side(tokenizer, side):
    words = " ".join(f"w{i}" for i in range(400))
    total = len(tokenizer.encode(words, add_special_tokens=False))
    assert total > 300
    out, cut = truncate_text(words, 64, side, tokenizer)
    n_out = len(tokenizer.encode(out, add_special_tokens=False))
    assert n_out <= 64 + 2, n_out          # decode/re-encode at the seams may merge or split a token
    mark = f"...[truncated {cut} tokens]..."
    assert mark in out and cut > total - 64
    if side == "head":
        assert out.startswith(mark) and "w399" in out and "w0 " not in out
    elif side == "tail":
        assert out.endswith(mark) and out.startswith("w0 w1") and "w399" not in out
    else:
        assert out.startswith("w0 w1") and out.endswith("w399")


async def test_runtime_truncates_in_tokens_with_per_tool_override(tokenizer):
    async def long(*a, **k):
        return " ".join(f"item{i}" for i in range(1000)), 0.0, {}
    small = ScriptedTool("small", long, max_response_tokens=20)
    big = ScriptedTool("big", long)
    rt = ToolRuntime([small, big], tokenizer=tokenizer, max_tool_response_tokens=100, truncate_side="tail")
    async with rt.session("t", {}) as s:
        a = await s.call("small", {})
        b = await s.call("big", {})
    assert len(tokenizer.encode(a.observation, add_special_tokens=False)) <= 22
    assert 90 <= len(tokenizer.encode(b.observation, add_special_tokens=False)) <= 102
    assert a.observation.startswith("item0 item1") and "tokens]..." in a.observation and b.metrics["truncated_tokens"] > 0
