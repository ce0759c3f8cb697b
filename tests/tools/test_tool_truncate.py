"""Truncation of tool observations: head / middle / tail, in tokens (tokenizer) or characters."""
import threading

import pytest

from agent_rl.tool_runtime import truncate as truncate_mod
from agent_rl.tool_runtime.runtime import ToolRuntime
from agent_rl.tool_runtime.truncate import max_chars_per_token, truncate_text, truncate_text_async
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



class SpyTokenizer:
    """A real tokenizer that records the texts it encodes and the threads it runs in."""

    def __init__(self, tok):
        self.tok = tok
        self.lengths = []
        self.threads = set()

    def get_vocab(self):
        return self.tok.get_vocab()

    def encode(self, text, add_special_tokens=False):
        self.lengths.append(len(text))
        self.threads.add(threading.get_ident())
        return self.tok.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids):
        return self.tok.decode(ids)


def test_max_chars_per_token_bounds_every_token(tokenizer):
    c = max_chars_per_token(tokenizer)
    longest = max(len(t) for t in tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
    assert longest <= c < 1000


@pytest.mark.parametrize("side", ["head", "middle", "tail"])
def test_huge_text_is_bounded_before_tokenizing(tokenizer, side):
    words = " ".join(f"w{i}" for i in range(60_000))          # ~390k characters, ~350k tokens
    spy = SpyTokenizer(tokenizer)
    out, cut = truncate_text(words, 64, side, spy)
    c = max_chars_per_token(tokenizer)
    assert max(spy.lengths) <= 64 * c + 2 * (c + 16)          # windows bounded by the budget, never the whole text
    mark = f"...[truncated about {cut} tokens]..."
    assert mark in out and len(tokenizer.encode(out, add_special_tokens=False)) <= 64 + 2
    true_cut = len(tokenizer.encode(words, add_special_tokens=False)) - len(tokenizer.encode(out.replace(mark, ""), add_special_tokens=False))
    assert abs(cut - true_cut) <= 0.15 * true_cut, (cut, true_cut)   # an estimate, close to the truth
    head, tail = out.split(mark)
    assert words.startswith(head) and words.endswith(tail)
    if side == "head":
        assert head == "" and tail.endswith("w59999")
    elif side == "tail":
        assert tail == "" and head.startswith("w0 w1 w2")
    else:
        assert head.startswith("w0 w1") and tail.endswith("w59999") and abs(len(head) - len(tail)) < 20


class NoTokenizing:
    def get_vocab(self):
        return {"a": 0}

    def encode(self, *a, **k):
        raise AssertionError("tokenized a text that fits by its byte length")


async def test_texts_that_fit_by_bytes_are_never_tokenized_nor_sent_to_a_thread(monkeypatch):
    async def no_thread(*a, **k):
        raise AssertionError("sent to a thread")
    monkeypatch.setattr(truncate_mod.asyncio, "to_thread", no_thread)
    text = "é" * 3000                                             # 6000 bytes
    assert truncate_text(text, 6001, "middle", NoTokenizing()) == (text, 0)
    assert await truncate_text_async(text, 6001, "middle", NoTokenizing()) == (text, 0)
    assert await truncate_text_async("short", 10, "middle", NoTokenizing()) == ("short", 0)


async def test_long_texts_are_tokenized_off_the_event_loop(tokenizer):
    spy = SpyTokenizer(tokenizer)
    words = " ".join(f"w{i}" for i in range(5000))
    out, cut = await truncate_text_async(words, 64, "middle", spy)
    assert cut > 0 and "...[truncated" in out and threading.get_ident() not in spy.threads
    spy.threads.clear()
    out, cut = await truncate_text_async("w1 w2 w3", 4, "middle", spy)   # short: inline
    assert spy.threads == {threading.get_ident()}


class DropsSpaces:
    """A tokenizer whose tokens skip characters (one token per 'a', spaces dropped): the window bound does
    not hold, so the exact path must be taken."""

    def get_vocab(self):
        return {"a": 0}

    def encode(self, text, add_special_tokens=False):
        return [0] * text.count("a")

    def decode(self, ids):
        return "a" * len(ids)


def test_tokenizer_that_drops_characters_falls_back_to_exact_count():
    text = " " * 100_000 + "a" * 10
    assert truncate_text(text, 20, "middle", DropsSpaces()) == (text, 0)
    out, cut = truncate_text(" " * 100_000 + "a" * 500, 100, "tail", DropsSpaces())
    assert cut > 0 and "about" not in out
