"""Cut an over-long tool observation to a budget counted in tokens (characters without a tokenizer).

`side` names the part that is cut: `head` keeps the end, `tail` keeps the beginning, `middle` keeps
both ends. The cut is replaced by a marker `...[truncated N tokens]...` (`chars` without a tokenizer),
and the kept text plus the marker fits the budget.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

SIDES = ("head", "middle", "tail")


def marker(n: int, unit: str) -> str:
    return f"...[truncated {n} {unit}]..."


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


def truncate_text(text: str, max_tokens: Optional[int], side: str = "middle", tokenizer: Any = None) -> Tuple[str, int]:
    """-> (text within budget, number of tokens/characters cut; 0 when it already fit)."""
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
    if len(text.encode("utf-8")) + 1 <= max_tokens:  # a token covers >= 1 byte (+1: a SentencePiece prefix): fits
        return text, 0
    ids = tokenizer.encode(text, add_special_tokens=False)
    total = len(ids)
    if total <= max_tokens:
        return text, 0
    mark_len = len(tokenizer.encode(marker(total, "tokens"), add_special_tokens=False))
    keep = max(0, max_tokens - mark_len)
    a, b = _split(side, keep)
    cut = total - a - b
    head = tokenizer.decode(ids[:a]) if a else ""
    tail = tokenizer.decode(ids[total - b:]) if b else ""
    return _join(side, head, tail, marker(cut, "tokens")), cut
