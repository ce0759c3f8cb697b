"""Tool-call parsing of the Hermes / Qwen2.5 format (design decision 4), the default format.

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "17 * 23"}}
    </tool_call>

`parse_tool_calls(text)` finds every `<tool_call>...</tool_call>` block of one assistant turn, in
order. It never raises: a block that does not hold a JSON object with a string `name` and object
`arguments` becomes a `ParsedCall` with `error` set, which the agent loop turns into an error
observation the model sees. Tolerated: whitespace / newlines around the JSON, a ```json fence,
`arguments` given as a JSON string holding a JSON object, missing `arguments` (= `{}`), the key
`parameters` instead of `arguments`. Not executed: anything inside `<think>...</think>` (an
unclosed `<think>` hides the rest of the text). An unclosed `<tool_call>` at the end (the turn hit
its token limit) is a malformed call.

Other formats (Llama 3.x JSON, Mistral) and the registry that `rollout.multi_turn.format` names
live in `agent_rl.rollout.formats`; they share `ParsedCall` / `ParseResult` and `call_from_json`.

`extract_answer(text)` returns the content of the last `<answer>...</answer>` outside thinking.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass
class ParsedCall:
    name: str                          # "" when no name could be read
    arguments: Optional[Dict[str, Any]]  # None when malformed
    raw: str                           # the text between the tags (or after an unclosed tag)
    error: Optional[str] = None        # None = well-formed

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ParseResult:
    calls: List[ParsedCall] = field(default_factory=list)
    content: str = ""                  # the text with the tool-call blocks removed (stripped)

    @property
    def has_calls(self) -> bool:
        return bool(self.calls)


def visible_spans(text: str) -> List[Tuple[int, int]]:
    """[start, end) spans of `text` outside <think>...</think> regions."""
    spans, pos = [], 0
    while True:
        i = text.find(THINK_OPEN, pos)
        if i < 0:
            spans.append((pos, len(text)))
            return spans
        spans.append((pos, i))
        j = text.find(THINK_CLOSE, i + len(THINK_OPEN))
        if j < 0:
            return spans
        pos = j + len(THINK_CLOSE)


def parse_call_body(raw: str) -> ParsedCall:
    """The text of one call (between tags, or a format's call segment) -> ParsedCall; never raises."""
    body = raw.strip()
    fence = _FENCE_RE.match(body)
    if fence:
        body = fence.group(1)
    if not body:
        return ParsedCall("", None, raw, "empty tool call")
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        name = re.search(r'"name"\s*:\s*"([^"]*)"', body)
        return ParsedCall(name.group(1) if name else "", None, raw, f"invalid JSON in tool call: {e.msg} (char {e.pos})")
    return call_from_json(obj, raw)


def call_from_json(obj: Any, raw: str) -> ParsedCall:
    """One decoded call object -> ParsedCall (shared by every format): a string `name`, and
    `arguments` (or `parameters`) as an object, a JSON string holding one, or missing (= {})."""
    if not isinstance(obj, dict):
        return ParsedCall("", None, raw, f"tool call must be a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return ParsedCall("", None, raw, 'tool call has no "name" string')
    name = name.strip()
    args = obj.get("arguments", obj.get("parameters", {}))
    if args is None:
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            return ParsedCall(name, None, raw, f'"arguments" string is not valid JSON: {e.msg} (char {e.pos})')
    if not isinstance(args, dict):
        return ParsedCall(name, None, raw, f'"arguments" must be a JSON object, got {type(args).__name__}')
    return ParsedCall(name, args, raw, None)


def parse_tool_calls(text: str) -> ParseResult:
    calls: List[ParsedCall] = []
    removed: List[Tuple[int, int]] = []
    for start, end in visible_spans(text):
        pos = start
        while True:
            i = text.find(TOOL_OPEN, pos, end)
            if i < 0:
                break
            body_start = i + len(TOOL_OPEN)
            j = text.find(TOOL_CLOSE, body_start, end)
            if j < 0:
                # A following <tool_call> before any close: this one is unclosed but not the last.
                nxt = text.find(TOOL_OPEN, body_start, end)
                stop = nxt if nxt >= 0 else end
                calls.append(ParsedCall("", None, text[body_start:stop],
                                        "unclosed <tool_call> (missing </tool_call>)"))
                _name_hint(calls[-1])
                removed.append((i, stop))
                pos = stop
                if nxt < 0:
                    break
                continue
            calls.append(parse_call_body(text[body_start:j]))
            removed.append((i, j + len(TOOL_CLOSE)))
            pos = j + len(TOOL_CLOSE)
    content, last = [], 0
    for a, b in removed:
        content.append(text[last:a])
        last = b
    content.append(text[last:])
    return ParseResult(calls=calls, content="".join(content).strip())


def _name_hint(call: ParsedCall) -> None:
    m = re.search(r'"name"\s*:\s*"([^"]*)"', call.raw)
    if m:
        call.name = m.group(1).strip()


def extract_answer(text: str) -> Optional[str]:
    """Content of the last <answer>...</answer> outside <think> regions (stripped), or None."""
    found = None
    for start, end in visible_spans(text):
        for m in _ANSWER_RE.finditer(text[start:end]):
            found = m.group(1)
    return found.strip() if found is not None else None
