"""Typed config sections built from plain dicts, with one-line errors for every mistake.

A section is a dataclass. Each field's annotation is its type (int, float, bool, str,
Literal[...], X | None, list[X], or another section); `bounded(...)` adds a numeric
range. `parse(cls, raw, path)` turns a dict from YAML into an instance and raises
`BadInput` naming the dotted key for an unknown key (suggesting the nearest valid one),
a wrong type or a value out of range. Sections may define `validate(self, path)` for
checks that involve several fields. This module imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, Union

from dlcli.errors import BadInput
from dlcli.registry import Registry, suggest


def bounded(default: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> Any:
    """A dataclass field whose numeric value must lie in [low, high] (or open ends)."""
    bound = (low, high, low_open, high_open)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"bound": bound})
    return dataclasses.field(default=default, metadata={"bound": bound})


MAX_SEED = 2**32 - 1  # JAX keys hold 32 bits of a seed: 2**32 would repeat seed 0


def seed_field(default: int = 0) -> Any:
    """A random seed: an integer in [0, MAX_SEED]."""
    return bounded(default, low=0, high=MAX_SEED)


def folder_name(default: str) -> Any:
    """A string field that names a folder inside another (a run under runs/, a sweep
    under sweeps/): checked by `check_folder_name`."""
    return dataclasses.field(default=default, metadata={"folder_name": True})


_NOT_IN_A_FOLDER_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_NAME_LENGTH = 200


def check_folder_name(value: str, path: str) -> None:
    """`BadInput` unless `value` names exactly one folder inside its parent: not empty,
    not . or .., no slash, backslash or control character (NUL, newline), no spaces at
    either end, at most `MAX_NAME_LENGTH` characters. So nothing named after it is
    written outside the folder the user chose."""
    if (value.strip(". ") and value == value.strip() and len(value) <= MAX_NAME_LENGTH
            and not _NOT_IN_A_FOLDER_NAME.search(value)):
        return
    safe = _NOT_IN_A_FOLDER_NAME.sub("_", value).strip(". _")[:MAX_NAME_LENGTH] or "my_experiment"
    raise BadInput(f"{path} {value!r} cannot name a folder (one folder name: not empty, not . or .., no slash, "
                   f"backslash or control character, at most {MAX_NAME_LENGTH} characters); use e.g. {safe!r}")


def choose(registry: Registry, default_name: str) -> Any:
    """A section whose class is picked from `registry` by its `name` key."""
    return dataclasses.field(
        default_factory=lambda: registry.get(default_name)(), metadata={"registry": registry}
    )


def section(cls: type) -> Any:
    """A nested section with its defaults."""
    return dataclasses.field(default_factory=cls)


def parse(cls: type, raw: Any, path: str) -> Any:
    """Build a `cls` instance from the dict `raw`; `path` is the dotted key for errors."""
    where = path or "the config"
    if not isinstance(raw, dict):
        raise BadInput(f"{where} must be a mapping of keys to values, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in known:
            full = _join(path, str(key))
            candidates = [_join(path, k) for k in known]
            raise BadInput(f"unknown config key {full!r}{suggest(full, candidates)}; valid keys here: {', '.join(known)}")
    values = {}
    for name, fld in known.items():
        if name not in raw:
            continue
        key_path = _join(path, name)
        registry = fld.metadata.get("registry")
        if registry is not None:
            values[name] = parse_choice(registry, raw[name], key_path, fld.default_factory().name)
        else:
            values[name] = _coerce(hints[name], raw[name], key_path)
        _check_bound(fld, values[name], key_path)
        if fld.metadata.get("folder_name"):
            check_folder_name(values[name], key_path)
    instance = cls(**values)
    if hasattr(instance, "validate"):
        instance.validate(path)
    return instance


def parse_choice(registry: Registry, raw: Any, path: str, default_name: str) -> Any:
    """Parse a section whose class is chosen from `registry` by `raw['name']`
    (`default_name` when the section names none)."""
    if not isinstance(raw, dict):
        raise BadInput(f"{path} must be a mapping with a 'name' key, got {_show(raw)}")
    raw = {"name": default_name, **raw}
    if not isinstance(raw["name"], str):
        raise BadInput(f"{path}.name must be a string, got {_show(raw['name'])}")
    cls = _named(registry, raw["name"], path)
    return parse(cls, raw, path)


def _named(registry: Registry, name: str, path: str) -> type:
    try:
        return registry.get(name)
    except BadInput as err:
        raise BadInput(f"{path}.name: {err}") from None


def to_dict(obj: Any) -> Any:
    """A section as plain dicts and lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise BadInput(f"{path} must not be empty (null); give {_describe(tp)}")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except BadInput as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise BadInput(f"{path} must be {_describe(tp)}, got {_show(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            valid = ", ".join(map(str, choices))
            raise BadInput(f"{path} must be one of: {valid}; got {_show(value)}{suggest(str(value), list(map(str, choices)))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise BadInput(f"{path} must be a list of {_describe(item_tp)}, got {_show(value)}")
        return [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path)
    if tp is dict:
        if not isinstance(value, dict):
            raise BadInput(f"{path} must be a mapping, got {_show(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise BadInput(f"{path} must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise BadInput(f"{path} must be an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"{path} must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise BadInput(f"{path} must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise BadInput(f"{path} must be a string, got {_show(value)}")
        return value
    raise TypeError(f"config type {tp!r} at {path} is not supported")


def _check_bound(fld: dataclasses.Field, value: Any, path: str) -> None:
    bound = fld.metadata.get("bound")
    if bound is None or value is None:
        return
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        check_range(item, path if not isinstance(value, list) else f"{path}[{i}]", *bound)


def check_range(value: float, path: str, low: float | None, high: float | None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise `BadInput` unless low <= value <= high (strict where the end is open)."""
    if low is not None and (value < low or (low_open and value == low)):
        raise BadInput(f"{path} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise BadInput(f"{path} must be {'<' if high_open else '<='} {high}, got {value}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp) if t is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
