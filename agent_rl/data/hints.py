"""Prompt hints that fade (KG-R1's `data.prompt_augmentation`): at training step t each training row gets a
`[Hint]: ...` block in its last user message with probability p(t), decided per row, so a resumed run replays the
same choice and every trajectory of a GRPO group (one row) shares it.

    hint_prob(t, start_prob, hint_steps, decay)   p(t): start_prob at t = 0, 0 from t = hint_steps on
                                                  (linear | cosine | step); hint_steps = 0: start_prob forever
    row_draw(seed, t, index, split)               the row's uniform number in [0, 1) (blake2b, no process state)
    insert_hint(messages, text, anchor)           new messages: "[Hint]: text\\n\\n" right before the last
                                                  occurrence of `anchor` in the last user message (else at its start)
    PromptHints                                   the three together, hint texts per data_source:
                                                  `apply(row, t, index)` -> a new row with extra_info.hinted
    is_hinted(row)                                that flag (None: the row went through no hint decision)

t counts completed training steps (the first step has t = 0). The system prompt, the tool schemas and every other
message stay as they are; the row given to `apply` is never modified. The texts come from the tasks
(`Task.hints`, agent_rl/tasks/registry.py) or from `data.prompt_augmentation.hint_text`; the trainer resolves them
(`PromptHints.from_config`).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

DECAYS = ("linear", "cosine", "step")
PREFIX = "[Hint]: "
FLAG = "hinted"      # extra_info key: True / False on every row that went through the decision


def hint_prob(t: int, start_prob: float, hint_steps: int, decay: str) -> float:
    """Probability that a training row gets the hint at step t (completed steps before it)."""
    if decay not in DECAYS:
        raise ValueError(f"decay {decay!r} is not one of {', '.join(DECAYS)}")
    if hint_steps <= 0:
        return float(start_prob)
    t = max(int(t), 0)
    if t >= hint_steps:
        return 0.0
    frac = t / hint_steps
    scale = {"linear": 1.0 - frac, "cosine": 0.5 * (1.0 + math.cos(math.pi * frac)), "step": 1.0}[decay]
    return float(start_prob) * scale


def row_draw(seed: int, t: int, index: int, split: str = "train") -> float:
    """A uniform number in [0, 1) fixed by (seed, t, index, split): the same in every process and on every resume."""
    digest = hashlib.blake2b(f"{int(seed)}:{split}:{int(t)}:{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def hint_block(text: str) -> str:
    return f"{PREFIX}{text.strip()}\n\n"


def insert_hint(messages: Sequence[Mapping[str, Any]], text: str, anchor: Optional[str] = None) -> List[Dict[str, Any]]:
    """A copy of `messages` whose last user message carries the hint block right before the last occurrence of
    `anchor` (the task's question marker, e.g. `Question:`), or at its start when there is no anchor in it."""
    msgs = [dict(m) for m in messages]
    last = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].get("role") == "user"), None)
    if last is None:
        raise ValueError("the prompt has no user message to put the hint in")
    content = msgs[last].get("content")
    if not isinstance(content, str):
        raise ValueError(f"the last user message's content is {type(content).__name__}, not text")
    i = content.rfind(anchor) if anchor else -1
    i = max(i, 0)
    msgs[last]["content"] = content[:i] + hint_block(text) + content[i:]
    return msgs


def is_hinted(row: Optional[Mapping[str, Any]]) -> Optional[bool]:
    extra = (row or {}).get("extra_info")
    flag = extra.get(FLAG) if isinstance(extra, Mapping) else None
    return bool(flag) if flag is not None else None


# resolve(data_source) -> ({level: text}, anchor) of the task that scores it; ({}, None) when no task does
Resolver = Callable[[str], Tuple[Mapping[str, str], Optional[str]]]


@dataclass
class PromptHints:
    texts: Dict[str, str]                    # data_source -> hint text
    start_prob: float = 1.0
    hint_steps: int = 200
    decay: str = "linear"
    seed: int = 0
    apply_to_val: bool = False
    anchors: Dict[str, Optional[str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, pa: Any, rows: Iterable[Mapping[str, Any]], resolve: Resolver, seed: int) -> "PromptHints":
        """The hints of `data.prompt_augmentation` (`pa`) for `rows`. ValueError (one line, starting with the key
        under `data.prompt_augmentation.`) when a row has no user message, or a data_source has no text: its task
        defines no hints, or not the level `pa.guideline_level`."""
        texts: Dict[str, str] = {}
        anchors: Dict[str, Optional[str]] = {}
        sources = set()
        for i, row in enumerate(rows):
            sources.add(row["data_source"])
            if not any(m.get("role") == "user" for m in row["prompt"]):
                raise ValueError(f"enable: row {i} (data_source {row['data_source']!r}) has no user message to put "
                                 "the hint in")
        for ds in sorted(sources):
            try:
                levels, anchor = resolve(ds)
            except ValueError as e:
                raise ValueError(f"guideline_level: {e}") from None
            anchors[ds] = anchor
            if pa.hint_text is not None:
                texts[ds] = pa.hint_text
            elif not levels:
                raise ValueError(f"hint_text: data_source {ds!r} belongs to no task with hint texts: give the hint "
                                 "as data.prompt_augmentation.hint_text")
            elif pa.guideline_level not in levels:
                raise ValueError(f"guideline_level: {pa.guideline_level!r} is not a hint level of data_source "
                                 f"{ds!r} (one of {', '.join(levels)})")
            else:
                texts[ds] = levels[pa.guideline_level]
        return cls(texts=texts, anchors=anchors, start_prob=pa.start_prob, hint_steps=pa.hint_steps, decay=pa.decay,
                   seed=seed if pa.seed is None else pa.seed, apply_to_val=pa.apply_to_val)

    def prob(self, t: int) -> float:
        return hint_prob(t, self.start_prob, self.hint_steps, self.decay)

    def decide(self, t: int, index: int, split: str = "train") -> bool:
        return row_draw(self.seed, t, index, split) < self.prob(t)

    def apply(self, row: Dict[str, Any], t: int, index: int, split: str = "train") -> Dict[str, Any]:
        """A new row with `extra_info.hinted` and, when decided, the hint in its prompt. Validation rows
        (`split="val"`) come back untouched unless `apply_to_val`."""
        if split == "val" and not self.apply_to_val:
            return row
        hinted = self.decide(t, index, split)
        ds = row.get("data_source")
        if ds not in self.texts:
            raise ValueError(f"no hint text for data_source {ds!r}")
        out = dict(row)
        out["extra_info"] = {**(row.get("extra_info") or {}), FLAG: hinted}
        if hinted:
            out["prompt"] = insert_hint(row["prompt"], self.texts[ds], self.anchors.get(ds))
        return out
