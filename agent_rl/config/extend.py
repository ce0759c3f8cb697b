"""Config keys that a task adds to a section of the schema (`Task.config`, agent_rl/tasks/registry.py).

A task declares its keys as a dataclass of `F(...)` fields (with `help`, and `choices` where the value is one of a
list), e.g. the KG task's `tools.kg_server_url` / `tools.kg_store` (agent_rl/tasks/kg/config.py). The section's
class is extended with those fields: the keys keep their spelling (`tools.kg_store=...` on the command line,
`cfg.tools.kg_store` in code), are type-checked by OmegaConf like every other key, and appear in docs/config.md.
The framework's schema (`schema.py`) names no task.

An extended class is built once per (section class, additions) and pickles by reference to those classes (all
importable), so a config holding one crosses to Ray workers, `copy.deepcopy` and `pickle` like the plain schema.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple

_CLASSES: Dict[Tuple[type, ...], type] = {}


class _Extended:
    """Mixin of an extended section class: pickled as (recipe, state), rebuilt by `_rebuild` in any process."""

    __ext_key__ = ()

    def __reduce__(self):
        return _rebuild, (self.__ext_key__, dict(self.__dict__))


def _rebuild(key: Tuple[type, ...], state: Dict[str, Any]) -> Any:
    cls = extended(key[0], key[1:])
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def extended(base: type, additions: Sequence[type]) -> type:
    """`base` (a section dataclass) with the fields of `additions` after its own; `base` itself without additions.
    ValueError (one line) when a key is defined twice."""
    additions = tuple(additions)
    if not additions:
        return base
    key = (base, *additions)
    cls = _CLASSES.get(key)
    if cls is not None:
        return cls
    owner = {f.name: _where(base) for f in dataclasses.fields(base)}
    for add in additions:
        if not dataclasses.is_dataclass(add):
            raise ValueError(f"{_where(add)}: config keys of a task must be a dataclass")
        for f in dataclasses.fields(add):
            if f.name in owner:
                raise ValueError(f"{_where(add)}: config key {f.name} is defined by {owner[f.name]} already")
            owner[f.name] = _where(add)
    # fields are collected along the reversed MRO: base's first, then the additions in the order given
    cls = dataclasses.make_dataclass(base.__name__, [], bases=(_Extended, *reversed(additions), base),
                                     namespace={"__ext_key__": key, "__doc__": base.__doc__})
    cls.__module__ = __name__
    cls.__qualname__ = base.__qualname__
    _CLASSES[key] = cls
    return cls


def section_types(root: type, additions: Iterable[Tuple[str, type]]) -> Dict[str, type]:
    """{section: extended class} for the sections of `root` (TrainConfig) that `additions` ((section, dataclass),
    in order) add keys to. ValueError when a section is not one of root's."""
    hints = typing.get_type_hints(root)
    by_section: Dict[str, List[type]] = {}
    for section, cls in additions:
        if not dataclasses.is_dataclass(hints.get(section)):
            raise ValueError(f"{_where(cls)}: {section!r} is not a config section "
                             f"(one of {', '.join(n for n, t in hints.items() if dataclasses.is_dataclass(t))})")
        if cls not in by_section.setdefault(section, []):
            by_section[section].append(cls)
    return {s: extended(hints[s], adds) for s, adds in by_section.items()}


def default_config(root: type, types: Mapping[str, type]) -> Any:
    """`root()` with the extended sections: every key at its default."""
    return root(**{s: cls() for s, cls in types.items()})


def schema(root: type, types: Mapping[str, type]):
    """The OmegaConf schema (struct DictConfig) of `root` with the extended sections."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(root)
    for s, cls in types.items():
        node[s] = OmegaConf.structured(cls)
    return node


def walk(root: type, types: Mapping[str, type] = None, prefix: str = "") -> Iterator[Tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) of every field of `root`, depth-first, sections included (before their keys);
    `types` replaces the class of top-level sections (the extended ones)."""
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        tp = (types or {}).get(f.name, hints[f.name]) if not prefix else hints[f.name]
        key = prefix + f.name
        yield key, f, tp
        if dataclasses.is_dataclass(tp):
            yield from walk(tp, None, key + ".")


def choice_errors(cfg: Any, prefix: str = "") -> Iterator[str]:
    """`key: value is not one of a, b` for every field of `cfg` (a config object, sections searched too) whose
    `choices` metadata does not hold its value."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        options = f.metadata.get("choices")
        if options is not None and value not in options:
            yield f"{prefix}{f.name}: {value!r} is not one of {', '.join(map(str, options))}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from choice_errors(value, f"{prefix}{f.name}.")
