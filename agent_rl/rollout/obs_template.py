"""Fast observation deltas: render a tool turn's chat-template delta once per message *shape* with
placeholder contents, then fill in each call's contents by string substitution.

A template may transform contents (trim them, escape them, branch on them), so substitution is used
for a shape only after it reproduced the real render for a set of probe contents (surrounding
whitespace, newlines, quotes, braces, markup, an empty string) and keeps being checked against the
real render for the first `verify_calls` real calls of that shape. Any mismatch turns the fast path
off for that shape for good; every call then renders. Shape = the tool names and the message keys,
with string contents only; anything else always renders.

Tool names come from the model's text (an unknown tool, a malformed call), so the shapes of a run are not a fixed
set: at most `max_shapes` are remembered, and a shape seen after that always renders.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

_PROBES = ("", "plain text", "  padded\n\n", "\nline one\nline two\n", "quotes ' \" and {braces} {{x}} {% raw %}",
           "<tool_response>markup</tool_response> & <b>", "tab\tend\\n", "ünïcödé ✓ 数字 42")
_MARK = "\u2063agent_rl_obs_slot_{}\u2063"


class ObservationTemplates:
    def __init__(self, render: Callable[[List[Dict[str, Any]]], str], verify_calls: int = 8, max_shapes: int = 256):
        self._render = render
        self.verify_calls = verify_calls
        self.max_shapes = max_shapes
        self._shapes: Dict[Tuple, Optional[List[str]]] = {}   # shape -> literal segments between contents (None = off)
        self._checked: Dict[Tuple, int] = {}
        self.fast_calls = 0
        self.rendered_calls = 0

    @staticmethod
    def _shape(msgs: Sequence[Dict[str, Any]]) -> Optional[Tuple]:
        if not all(isinstance(v, str) for m in msgs for v in m.values()):
            return None
        return tuple(tuple(sorted((k, v) for k, v in m.items() if k != "content")) +
                     (len(m),) for m in msgs)

    def _fill(self, segments: List[str], contents: Sequence[str]) -> str:
        out = [segments[0]]
        for c, seg in zip(contents, segments[1:]):
            out += [c, seg]
        return "".join(out)

    def _build(self, msgs: Sequence[Dict[str, Any]]) -> Optional[List[str]]:
        marks = [_MARK.format(i) for i in range(len(msgs))]
        try:
            text = self._render([{**m, "content": mk} for m, mk in zip(msgs, marks)])
        except Exception:
            return None
        segments, rest = [], text
        for mk in marks:
            if rest.count(mk) != 1:
                return None
            head, rest = rest.split(mk)
            segments.append(head)
        segments.append(rest)
        for probe in _PROBES:
            contents = [f"{probe}{i}" if i else probe for i in range(len(msgs))]
            if self._fill(segments, contents) != self._render([{**m, "content": c} for m, c in zip(msgs, contents)]):
                return None
        return segments

    def text(self, msgs: Sequence[Dict[str, Any]]) -> Optional[str]:
        """The delta text by substitution, or None when the caller must render."""
        shape = self._shape(msgs)
        if shape is None or (shape not in self._shapes and len(self._shapes) >= self.max_shapes):
            self.rendered_calls += 1
            return None
        if shape not in self._shapes:
            self._shapes[shape] = self._build(msgs)
            if self._shapes[shape] is None:
                log.info("observation template: rendering every call for tool messages shaped %s", shape)
        segments = self._shapes[shape]
        if segments is None:
            self.rendered_calls += 1
            return None
        text = self._fill(segments, [m["content"] for m in msgs])
        seen = self._checked.get(shape, 0)
        if seen < self.verify_calls:
            self._checked[shape] = seen + 1
            real = self._render(list(msgs))
            if real != text:
                log.warning("observation template: substitution differs from the chat template's render for %s; "
                            "rendering every call for this shape", shape)
                self._shapes[shape] = None
                self.rendered_calls += 1
                return real
        self.fast_calls += 1
        return text
