"""Encoding a rendered chat text piece by piece: the texts between added tokens (`<|im_start|>`, `<|im_end|>`, ...)
are encoded on their own and the pieces that repeat (the system prompt with its tool list, the role headers) come
from a cache.

A fast tokenizer (HF `tokenizers`) splits its input on its added tokens before anything else and encodes each text
between them on its own, so `encode(a + tok + b) == encode(a) + [id(tok)] + encode(b)` when the added tokens strip no
neighbouring whitespace (`lstrip` / `rstrip`), match anywhere (`single_word` off), are matched before normalisation
(or there is no normaliser), and nothing truncates or pads. `SplitEncoder` uses the split only under those
conditions, when the pre-tokenizer does not treat the start of the input specially (Metaspace's `prepend_scheme`),
after a probe text encoded both ways agreed, and it compares its result with the plain encoding for the first
`verify_calls` texts; any difference turns it off for good (every text is then encoded whole).

The prompt of a tool-using task renders the whole tool list into its system message: a few hundred tokens, ~0.5 ms to
encode, the same for every prompt of a run. With the split, only the user's message is encoded per prompt.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, List, Optional

log = logging.getLogger(__name__)

PROBE = ("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n<tools>\n{\"type\": \"function\"}\n</tools>"
         "<|im_end|>\n<|im_start|>user\n  Question  with\n\nspaces, ünïcödé ✓ 数字 42?<|im_end|>\n<|im_start|>assistant\n"
         "<tool_call>\n{\"name\": \"x\"}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n7\n</tool_response>"
         "<|im_end|>\n<|im_start|>assistant\n")


class SplitEncoder:
    def __init__(self, tokenizer, verify_calls: int = 16, cache_size: int = 4096):
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.verify_calls = verify_calls
        self.cache_size = cache_size
        self._cache: Dict[str, List[int]] = {}
        self._split: Optional[re.Pattern] = None
        self._ids: Dict[str, int] = {}
        self.split_calls = 0
        reason = self._why_not()
        if reason is None:
            probe = PROBE + "".join(self._ids)  # every added token once
            if self.encode(probe, cache=False) != self.whole(probe):
                reason = "the probe text encodes differently"
        if reason is not None:
            self._split = None
            log.info("chat encoding: every text is encoded whole (%s)", reason)

    def _why_not(self) -> Optional[str]:
        b = self.backend
        if b is None:
            return "not a fast tokenizer"
        if getattr(b, "truncation", None) or getattr(b, "padding", None):
            return "the tokenizer truncates or pads"
        if "Metaspace" in repr(getattr(b, "pre_tokenizer", None)):
            return "Metaspace pre-tokenizer"
        try:
            added = b.get_added_tokens_decoder()
        except Exception:  # noqa: BLE001 - an old tokenizers: no split
            return "added tokens unknown"
        normalizer = getattr(b, "normalizer", None)
        for i, t in added.items():
            if t.lstrip or t.rstrip or t.single_word or (t.normalized and normalizer is not None):
                return f"added token {t.content!r} strips, matches whole words or is normalised"
            if t.content:
                self._ids[t.content] = int(i)
        if not self._ids:
            return "no added tokens"
        self._split = re.compile("(" + "|".join(re.escape(c) for c in sorted(self._ids, key=len, reverse=True)) + ")")
        return None

    @property
    def enabled(self) -> bool:
        return self._split is not None

    def whole(self, text: str) -> List[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode(self, text: str, cache: bool = True) -> List[int]:
        """Ids of `text` (no special tokens added). `cache`: remember the pieces encoded now (texts that recur, like a
        prompt's); a piece already remembered is always reused."""
        if self._split is None:
            return self.whole(text)
        out: List[int] = []
        memo = self._cache
        for i, piece in enumerate(self._split.split(text)):
            if i % 2:
                out.append(self._ids[piece])
            elif piece:
                ids = memo.get(piece)
                if ids is None:
                    ids = self.backend.encode(piece, add_special_tokens=False).ids
                    if cache:
                        if len(memo) >= self.cache_size:
                            del memo[next(iter(memo))]
                        memo[piece] = ids
                out.extend(ids)
        self.split_calls += 1
        if self.split_calls <= self.verify_calls:
            whole = self.whole(text)
            if whole != out:
                log.warning("chat encoding: piecewise encoding differs from the tokenizer's; encoding every text whole")
                self._split = None
                self._cache.clear()
                return whole
        return out
