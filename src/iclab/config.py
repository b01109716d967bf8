"""Frozen-dataclass configs: build from plain data, validate, override, save.

Every config in iclab is a frozen dataclass whose fields carry type hints
(``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``,
``tuple[X, ...]`` or another config dataclass). This module turns YAML or
``--set key.sub=value`` strings into such objects with one clear error per
mistake: the dotted key, what was given, and what is allowed. Change a built
config only with :func:`dataclasses.replace` (or :func:`with_overrides`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

import yaml

from iclab.errors import ConfigError

T = TypeVar("T")


class FieldError(ConfigError):
    """Raised by a config's ``__post_init__``; :func:`build` adds the dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


def require(condition: bool, field: str, message: str) -> None:
    """Raise :class:`FieldError` for ``field`` unless ``condition`` holds."""
    if not condition:
        raise FieldError(field, message)


def require_positive(config: Any, *names: str) -> None:
    """Every named field (a number or a tuple of numbers) must be > 0 and tuples non-empty."""
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        require(len(values) > 0, name, "must not be empty")
        bad = [v for v in values if not v > 0]
        require(not bad, name, f"must be positive, got {value!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``tp``; convert where lossless."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: got {value!r}; allowed: {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(f"{where}: got {value!r}; allowed: {', '.join(repr(a) for a in allowed)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: got {value!r}; allowed: {_type_name(tp)}")
        (item_tp, *_) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: got {value!r}; allowed: {_type_name(tp)}")
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}); allowed: {_type_name(tp)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unknown_key_message(key: str, allowed: list[str], where: str) -> str:
    """One line naming an unknown key, its closest valid spelling, and the valid keys."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}{key}: unknown key{hint}; valid keys: {', '.join(allowed)}"


_KIND_OF_VALUE = {"str": "a string", "int": "a number", "float": "a number", "bool": "true / false", "list": "a list"}


def section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The mapping under ``name`` in ``data`` ({} when absent or null: every default); a one-line error when it is a
    value (a string, number or list) instead."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        example = f"{name}: {{name: {value}}}" if name == "task" and isinstance(value, str) else f"{name}: {{key: value}}"
        raise ConfigError(f"{name}: is a section of settings, a mapping (in YAML `{example}`, or --set {name}.key=value), "
                          f"not {_KIND_OF_VALUE.get(type(value).__name__, 'a ' + type(value).__name__)}; got {value!r}")
    return dict(value)


def build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, validating every field.

    ``where`` is the dotted path of ``data`` inside a larger config, used in
    error messages (``model.n_heads: ...``).
    """
    prefix = f"{where}." if where else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(unknown_key_message(str(key), list(fields), prefix))
    kwargs = {key: _coerce(value, hints[key], prefix + key) for key, value in data.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: required key is missing")
    try:
        return cls(**kwargs)
    except FieldError as err:
        raise ConfigError(f"{prefix}{err.field}: {err.detail}") from None


def to_dict(obj: Any) -> Any:
    """A config as plain data (dicts, lists, scalars) for YAML and JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.n_layers=4"`` -> (["model", "n_layers"], 4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.sub=value, e.g. model.n_layers=4")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating inner mappings."""
    node = data
    for i, part in enumerate(path[:-1]):
        inner = node.get(part)
        if inner is None:
            inner = node[part] = {}
        elif not isinstance(inner, dict):
            raise ConfigError(f"{'.'.join(path[: i + 1])}: is a value, not a section")
        node = inner
    node[path[-1]] = value


def with_overrides(config: T, overrides: list[str]) -> T:
    """A copy of ``config`` with ``--set``-style overrides applied and re-validated."""
    data = to_dict(config)
    for text in overrides:
        path, value = parse_override(text)
        set_path(data, path, value)
    return build(type(config), data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear one-line error for a missing file, a folder, a file that is not UTF-8 text,
    malformed YAML, a key given twice, or a top level that is not a mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not a text (UTF-8) file; a config is YAML text") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(to_dict(data), sort_keys=False)


def config_hash(config: Any) -> str:
    """A short stable hash of a config's content (names run directories, detects changes)."""
    text = json.dumps(to_dict(config), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
