"""Tool-call formats by name: the one registry `rollout.multi_turn.format` names.

A format is a function `text -> ParseResult` (one assistant turn's decoded text in, its calls in
order and the remaining text out). It never raises: a call it cannot read becomes a `ParsedCall`
with `error` set, which the agent loop turns into a `parse_error` observation the model sees
(design decision 4). Every format reads the call object the same way (`parser.call_from_json`):
a string `name` and `arguments` or `parameters` (an object, a JSON string holding one, or missing).
Text inside `<think>...</think>` is never parsed as a call.

    hermes       Hermes / Qwen2.5 (default): <tool_call>{"name": ..., "arguments": {...}}</tool_call>,
                 several blocks per turn (`parser.parse_tool_calls`).
    llama3_json  Llama 3.1 / 3.2 / 3.3 JSON tool calls: the assistant message *is* the call,
                 {"name": ..., "parameters": {...}}, optionally after <|python_tag|>; several calls
                 separated by `;` (also `,` or a newline), or one JSON list of call objects. Text
                 before <|python_tag|> and text after the last call are content.
    mistral      Mistral: [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...] (tokenizer v3, e.g.
                 Mistral-7B-Instruct-v0.3, Nemo), and [TOOL_CALLS]name[ARGS]{...} (tokenizer v11+,
                 e.g. Mistral-Small-3.2), one [TOOL_CALLS] per call.

A user's own format is a dotted path `package.module:function` (resolved with importlib, so every
Ray worker loads it from the config string alone); the function takes the text and returns a
`ParseResult`. `get_parser` resolves a name or a path; config validation calls it at load.
"""
from __future__ import annotations

import json
import re
from typing import Callable, Dict, List, Optional, Tuple

from agent_rl.tool_runtime.imports import ImportSpecError, load_callable
from agent_rl.rollout.parser import (ParsedCall, ParseResult, call_from_json, parse_call_body,
                                     parse_tool_calls, visible_spans)

ToolCallParser = Callable[[str], ParseResult]

DEFAULT_FORMAT = "hermes"
PYTHON_TAG = "<|python_tag|>"
TOOL_CALLS = "[TOOL_CALLS]"

_DECODER = json.JSONDecoder()
# Between Llama calls: whitespace and end-of-message tokens (kept when the tokenizer does not strip
# them), then at most one separator.
_LLAMA_GAP_RE = re.compile(r"(?:\s|<\|eom_id\|>|<\|eot_id\|>)*")
_LLAMA_SEP_RE = re.compile(r"(?:\s|<\|eom_id\|>|<\|eot_id\|>)*[;,]?\s*")
_NEXT_OBJECT_RE = re.compile(r'[;,\n]\s*\{\s*"name"')
_MISTRAL_NAME_RE = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[CALL_ID\]\s*[A-Za-z0-9]*\s*)?(?:\[ARGS\])?\s*")


def _content(text: str, removed: List[Tuple[int, int]]) -> str:
    out, last = [], 0
    for a, b in sorted(removed):
        out.append(text[last:a])
        last = max(last, b)
    out.append(text[last:])
    return "".join(out).strip()


def _skip(regex: re.Pattern, text: str, pos: int, end: int) -> int:
    return regex.match(text, pos, end).end()


def _decode(text: str, pos: int, end: int):
    """Decode one JSON value starting at `pos` that ends by `end`: (value, end index) or raises."""
    return _DECODER.raw_decode(text[:end], pos)


def _json_list_calls(items: list, raw: str) -> List[ParsedCall]:
    if not items:
        return [ParsedCall("", None, raw, "empty list of tool calls")]
    return [call_from_json(it, json.dumps(it, ensure_ascii=False)) for it in items]


# ---------------------------------------------------------------------------- llama3_json

def _llama_block(text: str) -> Optional[Tuple[int, int, int, bool]]:
    """(cut start, body start, body end, tagged) of the call block, or None when the turn makes no call."""
    spans = visible_spans(text)
    for s, e in spans:
        i = text.find(PYTHON_TAG, s, e)
        if i >= 0:
            return i, i + len(PYTHON_TAG), e, True
    # Without the tag the message (outside thinking) must start with the call object (or a list of them).
    for s, e in spans:
        k = _skip(_LLAMA_GAP_RE, text, s, e)
        if k >= e:
            continue
        if text[k] == "{" or re.match(r"\[\s*\{", text[k:e]):
            return k, k, e, False
        return None
    return None


def parse_llama3_json(text: str) -> ParseResult:
    block = _llama_block(text)
    if block is None:
        return ParseResult(calls=[], content=text.strip())
    cut, pos, end, tagged = block
    pos = _skip(_LLAMA_GAP_RE, text, pos, end)
    calls: List[ParsedCall] = []
    stop = pos
    if pos < end and text[pos] == "[":  # one JSON list of call objects
        try:
            items, k = _decode(text, pos, end)
            calls = _json_list_calls(items, text[pos:k]) if isinstance(items, list) else \
                [call_from_json(items, text[pos:k])]
            stop = _skip(_LLAMA_GAP_RE, text, k, end)
        except json.JSONDecodeError:
            calls, stop = [parse_call_body(text[pos:end])], end
    elif tagged and (pos >= end or text[pos] != "{"):
        # <|python_tag|> announces a call; what follows is not JSON (e.g. a built-in tool's Python).
        calls, stop = [parse_call_body(text[pos:end])], end
    else:
        while pos < end and text[pos] == "{":
            try:
                obj, k = _decode(text, pos, end)
            except json.JSONDecodeError:
                nxt = _NEXT_OBJECT_RE.search(text, pos + 1, end)
                k = nxt.start() if nxt else end
                calls.append(parse_call_body(text[pos:k]))
            else:
                calls.append(call_from_json(obj, text[pos:k]))
            stop = _skip(_LLAMA_GAP_RE, text, k, end)
            nxt_pos = _skip(_LLAMA_SEP_RE, text, k, end)
            if nxt_pos >= end:
                stop = end
                break
            pos = nxt_pos
    return ParseResult(calls=calls, content=_content(text, [(cut, stop)]))


# ---------------------------------------------------------------------------- mistral

def _mistral_segment(text: str, pos: int, end: int) -> Tuple[List[ParsedCall], int]:
    """The calls after one [TOOL_CALLS] (text[pos:end]) and where they stop."""
    k0 = _skip(_LLAMA_GAP_RE, text, pos, end)
    if k0 >= end:
        return [parse_call_body("")], end
    if text[k0] in "[{":  # v3: a JSON list of {"name", "arguments"} objects (or one object)
        try:
            value, k = _decode(text, k0, end)
        except json.JSONDecodeError:
            return [parse_call_body(text[k0:end])], end
        calls = _json_list_calls(value, text[k0:k]) if isinstance(value, list) else [call_from_json(value, text[k0:k])]
        return calls, k
    m = _MISTRAL_NAME_RE.match(text, k0, end)  # v11+: name[ARGS]{...}
    if not m or not m.group(1):
        return [parse_call_body(text[k0:end])], end
    name, a = m.group(1), m.end()
    try:
        args, k = _decode(text, a, end)
    except json.JSONDecodeError as e:
        raw = text[k0:end]
        return [ParsedCall(name, None, raw, f"invalid JSON in tool call arguments: {e.msg} (char {e.pos - a})")], end
    return [call_from_json({"name": name, "arguments": args}, text[k0:k])], k


def parse_mistral(text: str) -> ParseResult:
    calls: List[ParsedCall] = []
    removed: List[Tuple[int, int]] = []
    for s, e in visible_spans(text):
        i = text.find(TOOL_CALLS, s, e)
        while i >= 0:
            body = i + len(TOOL_CALLS)
            nxt = text.find(TOOL_CALLS, body, e)
            seg_end = nxt if nxt >= 0 else e
            found, stop = _mistral_segment(text, body, seg_end)
            calls.extend(found)
            removed.append((i, stop))
            i = nxt
    return ParseResult(calls=calls, content=_content(text, removed))


# ---------------------------------------------------------------------------- registry

FORMATS: Dict[str, ToolCallParser] = {
    "hermes": parse_tool_calls,
    "llama3_json": parse_llama3_json,
    "mistral": parse_mistral,
}


def get_parser(fmt: Optional[str] = None) -> ToolCallParser:
    """The parser of a format name in FORMATS, or of a dotted path `module:function` (None: hermes).
    Raises ValueError with a one-line reason otherwise."""
    name = fmt or DEFAULT_FORMAT
    if name in FORMATS:
        return FORMATS[name]
    if ":" not in name:
        raise ValueError(f"{name!r} is not one of {', '.join(FORMATS)} (or a dotted path module:function)")
    try:
        return load_callable(name)
    except ImportSpecError as e:
        raise ValueError(f"tool-call parser {e}") from None
