"""Cut an over-long tool observation to a budget counted in tokens (characters without a tokenizer).

`side` names the part that is cut: `head` keeps the end, `tail` keeps the beginning, `middle` keeps
both ends. The cut is replaced by a marker `...[truncated N tokens]...` (`chars` without a tokenizer),
and the kept text plus the marker fits the budget.

Huge texts are bounded by characters before anything is tokenized: no token of the tokenizer's
vocabulary decodes to more than `C` characters (`max_chars_per_token`), so the first `a` tokens lie
within the first `a * C` characters and the last `b` tokens within the last `b * C`. A text longer
than `max_tokens * C` characters is over budget for sure; only the two windows that can hold the kept
tokens are tokenized, and the number cut is estimated from the windows' characters per token (the
marker then says `...[truncated about N tokens]...`). The cost is bounded by the budget, not by the
response size. `truncate_text_async` runs long texts in a worker thread, short ones inline.
"""
from __future__ import annotations

import asyncio
import math
import threading
import weakref
from typing import Any, Optional, Tuple

SIDES = ("head", "middle", "tail")
FALLBACK_MAX_CHARS_PER_TOKEN = 256   # when the tokenizer has no get_vocab()
INLINE_MAX_CHARS = 4096              # truncate_text_async tokenizes texts up to this length on the event loop
RATE_SAMPLE_CHARS = 4096             # text tokenized to estimate the count when no window is kept

_chars_per_token: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
_chars_lock = threading.Lock()


def marker(n: int, unit: str, approx: bool = False) -> str:
    return f"...[truncated {'about ' if approx else ''}{n} {unit}]..."


def _join(side: str, head: str, tail: str, mark: str) -> str:
    if side == "head":
        return mark + tail
    if side == "tail":
        return head + mark
    return head + mark + tail


def _split(side: str, keep: int) -> Tuple[int, int]:
    """-> (kept from the start, kept from the end)."""
    if side == "head":
        return 0, keep
    if side == "tail":
        return keep, 0
    first = (keep + 1) // 2
    return first, keep - first


def max_chars_per_token(tokenizer: Any) -> int:
    """An upper bound on the characters one token decodes to: the longest vocabulary entry (byte-level
    BPE writes one character per byte, SentencePiece one per character or `<0xNN>` per byte)."""
    try:
        with _chars_lock:
            cached = _chars_per_token.get(tokenizer)
        if cached is not None:
            return cached
    except TypeError:          # not weak-referenceable / hashable: compute every time
        pass
    bound = FALLBACK_MAX_CHARS_PER_TOKEN
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is not None:
        try:
            vocab = get_vocab()
            if vocab:
                bound = max(1, max(len(str(k)) for k in vocab))
        except Exception:
            pass
    try:
        with _chars_lock:
            _chars_per_token[tokenizer] = bound
    except TypeError:
        pass
    return bound


def fits_without_tokenizing(text: str, max_tokens: Optional[int]) -> bool:
    """True when `text` fits `max_tokens` whatever the tokenizer: a token covers >= 1 byte (+1: a
    SentencePiece prefix). Cheap: long texts are rejected before being encoded."""
    if max_tokens is None or max_tokens <= 0:
        return True
    return len(text) + 1 <= max_tokens and len(text.encode("utf-8")) + 1 <= max_tokens


def _encode(tokenizer: Any, text: str):
    return tokenizer.encode(text, add_special_tokens=False)


def _truncate_windows(text: str, max_tokens: int, side: str, tokenizer: Any, c: int) -> Optional[Tuple[str, int]]:
    """Truncate a text known to be over budget by tokenizing only the windows that hold the kept tokens.
    None when the windows hold fewer tokens than the bound promises (a tokenizer that drops characters)."""
    n = len(text)
    # the count in the marker is at most 4 * n + 1 (tokens <= UTF-8 bytes + 1): its token length bounds the real one
    mark_len = len(_encode(tokenizer, marker(4 * n + 1, "tokens", approx=True)))
    keep = max(0, max_tokens - mark_len)
    a, b = _split(side, keep)
    margin = c + 16
    head_win = text[: a * c + margin] if a else ""
    tail_win = text[n - (b * c + margin):] if b else ""
    ids_h = _encode(tokenizer, head_win) if a else []
    ids_t = _encode(tokenizer, tail_win) if b else []
    if (a and len(ids_h) <= a) or (b and len(ids_t) <= b):
        return None
    sample_chars, sample_tokens = len(head_win) + len(tail_win), len(ids_h) + len(ids_t)
    if not sample_chars:
        sample = text[:RATE_SAMPLE_CHARS]
        sample_chars, sample_tokens = len(sample), len(_encode(tokenizer, sample))
    estimate = round(n * sample_tokens / sample_chars) if sample_chars else 0
    total = max(estimate, math.ceil(n / c), max_tokens + 1)
    cut = total - a - b
    head = tokenizer.decode(ids_h[:a]) if a else ""
    tail = tokenizer.decode(ids_t[len(ids_t) - b:]) if b else ""
    return _join(side, head, tail, marker(cut, "tokens", approx=True)), cut


def truncate_text(text: str, max_tokens: Optional[int], side: str = "middle", tokenizer: Any = None) -> Tuple[str, int]:
    """-> (text within budget, number of tokens/characters cut; 0 when it already fit). The number is an
    estimate when the text was too long to tokenize whole (marker `...[truncated about N tokens]...`)."""
    if side not in SIDES:
        raise ValueError(f"truncate side must be one of {SIDES}, got {side!r}")
    if max_tokens is None or max_tokens <= 0:
        return text, 0
    if tokenizer is None:
        total = len(text)
        if total <= max_tokens:
            return text, 0
        keep = max(0, max_tokens - len(marker(total, "chars")))
        a, b = _split(side, keep)
        cut = total - a - b
        return _join(side, text[:a], text[total - b:] if b else "", marker(cut, "chars")), cut
    if fits_without_tokenizing(text, max_tokens):
        return text, 0
    c = max_chars_per_token(tokenizer)
    if len(text) > max_tokens * c + 2 * (c + 16):    # over budget for sure, and the windows do not overlap
        out = _truncate_windows(text, max_tokens, side, tokenizer, c)
        if out is not None:
            return out
    ids = _encode(tokenizer, text)
    total = len(ids)
    if total <= max_tokens:
        return text, 0
    mark_len = len(_encode(tokenizer, marker(total, "tokens")))
    keep = max(0, max_tokens - mark_len)
    a, b = _split(side, keep)
    cut = total - a - b
    head = tokenizer.decode(ids[:a]) if a else ""
    tail = tokenizer.decode(ids[total - b:]) if b else ""
    return _join(side, head, tail, marker(cut, "tokens")), cut


async def truncate_text_async(text: str, max_tokens: Optional[int], side: str = "middle",
                              tokenizer: Any = None) -> Tuple[str, int]:
    """`truncate_text` that keeps tokenization of long texts off the event loop (a worker thread);
    texts without a tokenizer, that fit without tokenizing, or of at most INLINE_MAX_CHARS run inline."""
    if (tokenizer is None or max_tokens is None or max_tokens <= 0 or len(text) <= INLINE_MAX_CHARS
            or fits_without_tokenizing(text, max_tokens)):
        return truncate_text(text, max_tokens, side, tokenizer)
    return await asyncio.to_thread(truncate_text, text, max_tokens, side, tokenizer)
