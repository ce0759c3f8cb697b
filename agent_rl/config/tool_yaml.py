"""What a tool YAML (verl shape) declares, read without building a tool: its `tools:` entries and function names."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from agent_rl.config.load import ConfigError
from agent_rl.tool_runtime.imports import one_line as _one_line


def tool_names(config_path: Optional[str]) -> List[str]:
    """Function names declared in a tool YAML (verl shape)."""
    if not config_path:
        return []
    names = []
    for t in tool_entries(config_path):
        fn = t.get("tool_schema") if isinstance(t.get("tool_schema"), dict) else {}
        fn = fn.get("function") if isinstance(fn.get("function"), dict) else {}
        if isinstance(fn.get("name"), str) and fn["name"]:
            names.append(fn["name"])
    return names


def tool_entries(config_path: str) -> List[Dict[str, Any]]:
    """The `tools:` entries (mappings) of a tool YAML; an unreadable file is a ConfigError."""
    import yaml

    try:
        with open(config_path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"tools.config_path: cannot read {config_path}: {_one_line(e)}") from None
    entries = doc.get("tools") if isinstance(doc, dict) else None
    return [t for t in entries if isinstance(t, dict)] if isinstance(entries, list) else []
