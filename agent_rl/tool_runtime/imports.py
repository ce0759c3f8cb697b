"""The one resolver of user code named in config or YAML:

    package.module:name        a module on sys.path (name may be dotted: `module:Class.method`)
    path/to/file.py:name       a file, relative to a base folder (the tool YAML's folder, else the working directory)
    package.module.Name        tool YAML `class_name` only (verl's spelling): `allow_dotted=True`

Used by tool classes (`class_name`), task hooks and rewards (`reward.functions.*`, `reward.objectives.*`, task
`generate` / `demos` / `services`), the judge's score parser and tool-call parsers (`rollout.multi_turn.format`).
Every failure is an `ImportSpecError` whose message is one line and starts with the spec; callers prefix where
it was named. A file is imported once per real path (thread-safe) under a private module name.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import threading
from typing import Any, Dict, Optional, Tuple


class ImportSpecError(ValueError):
    """A spec that does not name a loadable object (one-line message starting with the spec)."""


def one_line(text: Any, limit: int = 300) -> str:
    """`text` on one line (whitespace runs collapsed), cut at `limit` characters: error messages stay one line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_file_modules: Dict[str, Any] = {}
_file_lock = threading.Lock()


def import_file(file_path: str):
    """The module of a .py file, imported once per real path."""
    file_path = os.path.realpath(file_path)
    with _file_lock:
        if file_path in _file_modules:
            return _file_modules[file_path]
        stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(file_path))[0])
        mod_name = f"agent_rl_user_code.{stem}_{hashlib.sha1(file_path.encode()).hexdigest()[:10]}"
        spec = importlib.util.spec_from_file_location(mod_name, file_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file_path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(mod_name, None)
            raise
        _file_modules[file_path] = module
        return module


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {one_line(e)}" if str(e) else type(e).__name__


def load_object(spec: str, base_dir: Optional[str] = None, allow_dotted: bool = False) -> Tuple[Any, str]:
    """(the object `spec` names, where it came from: the module name or the file path)."""
    forms = "package.module:name, package.module.Name or file.py:name" if allow_dotted else \
        "package.module:name or file.py:name"
    if not isinstance(spec, str) or not spec.strip():
        raise ImportSpecError(f"{spec!r} must be a dotted path ({forms})")
    if ":" in spec:
        where, _, attr = spec.rpartition(":")
    elif allow_dotted:
        where, _, attr = spec.rpartition(".")
    else:
        where, attr = "", ""
    if not where or not attr:
        raise ImportSpecError(f"{spec!r} must be a dotted path ({forms})")
    if where.endswith(".py"):
        path = where if os.path.isabs(where) else os.path.join(base_dir or os.getcwd(), where)
        if not os.path.isfile(path):
            raise ImportSpecError(f"{spec!r}: file not found: {path}")
        try:
            obj = import_file(path)
        except Exception as e:  # noqa: BLE001 - the user's file: any failure is reported in one line
            raise ImportSpecError(f"{spec!r}: importing {path} failed: {_error(e)}") from e
        origin = path
    elif "/" in where or os.sep in where:
        raise ImportSpecError(f"{spec!r}: the part before ':' must be a .py file or a package.module")
    else:
        try:
            obj = importlib.import_module(where)
        except Exception as e:  # noqa: BLE001
            raise ImportSpecError(f"{spec!r}: cannot import module {where!r}: {_error(e)}") from e
        origin = where
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportSpecError(f"{spec!r}: {origin} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj, origin


def load_callable(spec: str, base_dir: Optional[str] = None) -> Any:
    """`load_object` for a function (or any callable)."""
    obj, _ = load_object(spec, base_dir)
    if not callable(obj):
        raise ImportSpecError(f"{spec!r} is not callable")
    return obj
