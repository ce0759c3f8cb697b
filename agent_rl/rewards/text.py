"""Answer text helpers shared by the reward functions: extraction, normalisation (SQuAD / KG-R1 style)."""
from __future__ import annotations

import math
import re
import string
from typing import List, Optional

from agent_rl.rollout.parser import extract_answer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_HASH_ANSWER = re.compile(r"####\s*([^\n]*)")
# A number: digits with commas between them and an optional decimal part, or a bare decimal part; an
# optional `$` (spaces may follow it). A minus is a sign only when directly attached (`-3`, `-$3`), as
# in verl's gsm8k reward (`-?[0-9.,]+`): "- 72" reads 72 and "12 - 5" ends with 5.
_NUMBER = re.compile(r"(?:-?\$\s*|-)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop articles (a / an / the), collapse whitespace."""
    s = str(s).lower()
    s = "".join(ch if ch not in _PUNCT else " " for ch in s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def split_answers(answer: Optional[str]) -> List[str]:
    """`a | b | c` -> ["a", "b", "c"] (stripped, empty parts dropped, order kept)."""
    if answer is None:
        return []
    return [p.strip() for p in answer.split("|") if p.strip()]


def final_answer(texts: List[str]) -> Optional[str]:
    """The last `<answer>...</answer>` over the assistant turns (later turns win), else None."""
    for text in reversed(texts):
        a = extract_answer(text)
        if a is not None:
            return a
    return None


def final_hash_answer(texts: List[str]) -> Optional[str]:
    """The text after the last `#### ` over the assistant turns, else None."""
    for text in reversed(texts):
        found = _HASH_ANSWER.findall(text)
        if found:
            return found[-1].strip()
    return None


def parse_number(text) -> Optional[float]:
    """The last number in `text` ("#### 1,234.5", "$72", "-3", "answer is 0.5") -> float, or None
    (also for bools and non-finite values). Commas between digits and `$` are ignored."""
    if text is None or isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        found = _NUMBER.findall(str(text))
        if not found:
            return None
        value = float(re.sub(r"[,$\s]", "", found[-1]))
    return value if math.isfinite(value) else None


def numbers_match(a: Optional[float], b: Optional[float]) -> bool:
    """Both numbers and equal within 1e-6 (relative or absolute)."""
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
