"""What `agent-rl serve` accepts: an OpenAI chat-completions request checked field by field (HTTP 400 with OpenAI's
error object and the failing `param` otherwise), and the stop-string cut of a completion (serve.py)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


ROLES = {"system", "user", "assistant", "tool", "developer"}
MAX_STOP = 16


class RequestError(Exception):
    """A request the server refuses: HTTP `status` with an OpenAI-style error object."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400,
                 type_: str = "invalid_request_error", code: Optional[str] = None):
        super().__init__(message)
        self.param, self.status, self.type, self.code = param, status, type_, code


def error_body(message: str, param: Optional[str] = None, type_: str = "invalid_request_error",
               code: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _content_text(content, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise RequestError(f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) are "
                                   "supported", f"messages[{i}].content")
        return "".join(parts)
    raise RequestError(f"messages[{i}].content: must be a string or a list of text parts, got {type(content).__name__}",
                       f"messages[{i}].content")


def parse_messages(messages) -> List[Dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}]: must be an object with role and content", f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(f"messages[{i}].role: {role!r} is not one of {', '.join(sorted(ROLES))}",
                               f"messages[{i}].role")
        if "content" not in m and role != "assistant":
            raise RequestError(f"messages[{i}].content: missing", f"messages[{i}].content")
        msg = {"role": "system" if role == "developer" else role, "content": _content_text(m.get("content"), i)}
        out.append(msg)
    return out


def parse_request(body, served_names, max_n: int = 16) -> Dict[str, Any]:
    """The validated fields of a chat-completions request body (RequestError on the first bad one)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model not in served_names:
        raise RequestError(f"model {model!r} is not served here (served: {served_names[0]})", "model", status=404,
                           code="model_not_found")
    for key in ("stream", "logprobs"):
        if body.get(key):
            raise RequestError(f"{key}: not supported by agent-rl serve", key)
    for key in ("tools", "functions"):
        if body.get(key):
            raise RequestError(f"{key}: not supported by agent-rl serve (plain chat only)", key)
    req: Dict[str, Any] = {"messages": parse_messages(body.get("messages"))}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise RequestError(f"{key}: must be an integer >= 1, got {max_tokens!r}", key)
    req["max_tokens"] = max_tokens
    t = body.get("temperature", 1.0)
    if t is None:
        t = 1.0
    if not _is_num(t) or not 0 <= t <= 2:
        raise RequestError(f"temperature: must be a number in [0, 2], got {t!r}", "temperature")
    req["temperature"] = float(t)
    p = body.get("top_p", 1.0)
    if p is None:
        p = 1.0
    if not _is_num(p) or not 0 < p <= 1:
        raise RequestError(f"top_p: must be a number in (0, 1], got {p!r}", "top_p")
    req["top_p"] = float(p)
    k = body.get("top_k", -1)
    if k is None:
        k = -1
    if not _is_int(k) or (k < 1 and k != -1):
        raise RequestError(f"top_k: must be an integer >= 1 or -1 (off), got {k!r}", "top_k")
    req["top_k"] = int(k)
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not _is_int(n) or not 1 <= n <= max_n:
        raise RequestError(f"n: must be an integer in [1, {max_n}], got {n!r}", "n")
    req["n"] = n
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(f"stop: must be a non-empty string or a list of at most {MAX_STOP} of them, got {body.get('stop')!r}",
                           "stop")
    req["stop"] = stop
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise RequestError(f"seed: must be an integer, got {seed!r}", "seed")
    req["seed"] = seed
    return req


def cut_at_stop(text: str, stops: List[str]) -> Tuple[str, bool]:
    """`text` up to the first occurrence of any stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
