"""Typed, versioned results, and the one :class:`Head` value.

Every analysis part of a study returns a frozen dataclass deriving from
:class:`Result`; claims, figures and the report read its attributes, never
string keys. A result is stored as JSON by :func:`encode` and read back by
:func:`decode`, which follows the dataclass's type hints (nested results,
lists, tuples, dicts, ``X | None``, :class:`Head`, enums, NumPy arrays), so a
result read from a cache is the same value the computation returned.

``SCHEMA`` is a result type's version: bump it whenever a field is added,
removed or changes meaning. A cached result carries the schema it was written
with (:meth:`Result.schema`), and a cache of another schema is recomputed,
never adapted.

A head is ``Head(layer, head)``, written ``"L{layer}H{head}"`` everywhere text
is needed: JSON, figure labels, the CLI and claims (TransformerLens' notation).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from enum import Enum
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

import numpy as np

from iclab.errors import IclabError

T = TypeVar("T")

_HEAD_TEXT = re.compile(r"^L(\d+)H(\d+)$")


class _LayerHead(typing.NamedTuple):
    layer: int
    head: int


class Head(_LayerHead):
    """One attention head: ``layer`` and ``head`` (the query head under grouped-query attention), both from 0.
    A named pair, so it unpacks (``layer, h = head``), sorts, and indexes a [L, H, ...] tensor as ``t[head]``; its one
    text form is ``L{layer}H{head}``."""

    __slots__ = ()

    def __new__(cls, layer: int, head: int) -> "Head":
        if not (isinstance(layer, (int, np.integer)) and isinstance(head, (int, np.integer))) or layer < 0 or head < 0:
            raise IclabError(f"a head is two integers >= 0 (layer, head), got {layer!r}, {head!r}")
        return super().__new__(cls, int(layer), int(head))

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, text: str) -> "Head":
        """``"L3H1"`` -> ``Head(3, 1)``; anything else is refused with the expected form."""
        match = _HEAD_TEXT.match(str(text).strip())
        if match is None:
            raise IclabError(f"head {text!r}: expected L<layer>H<head>, e.g. L1H3")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, value: Any) -> "Head":
        """A head from a Head, its text form, or a (layer, head) pair."""
        if isinstance(value, Head):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        layer, head = value
        return cls(int(layer), int(head))


def heads(values: typing.Iterable[Any]) -> list[Head]:
    """Heads from any mix of :meth:`Head.of`'s forms."""
    return [Head.of(v) for v in values]


class Result:
    """Base of every part result (subclasses are frozen dataclasses). ``SCHEMA``: the type's version."""

    SCHEMA: ClassVar[int] = 1

    @classmethod
    def schema(cls) -> str:
        """The name and version written next to a cached result, e.g. ``"iclab.analysis.x.Fit/2"``."""
        return f"{cls.__module__}.{cls.__qualname__}/{cls.SCHEMA}"

    def to_json(self) -> Any:
        return encode(self)

    @classmethod
    def from_json(cls: type[T], data: Any) -> T:
        return decode(cls, data)


class SchemaError(ValueError):
    """Stored JSON that does not fit a result type (written by another schema): recompute it."""


def encode(value: Any) -> Any:
    """A result (or any value inside one) as JSON-able data: dataclasses as dicts of their fields, heads and dict keys
    as text, tuples as lists, arrays as nested lists, enums as their values."""
    if isinstance(value, Head):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_key_text(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _key_text(key: Any) -> str:
    if isinstance(key, (str, Head, Enum)):
        return str(key.value if isinstance(key, Enum) else key)
    if isinstance(key, (int, float, np.integer, np.floating)) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"a result's dict key must be text, a number, a Head or an enum, got {type(key).__name__}")


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(tp: Any, data: Any) -> Any:
    """``data`` (from :func:`encode`) as a value of type ``tp``; :class:`SchemaError` when it does not fit."""
    if tp is Any or tp is object:
        return data
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return decode(arg, data)
            except SchemaError as err:
                errors.append(str(err))
        raise SchemaError(f"{data!r} fits none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if data not in args:
            raise SchemaError(f"{data!r} is not one of {args}")
        return data
    if origin in (list, tuple, dict) or tp in (list, tuple, dict):
        return _decode_container(origin or tp, args, data)
    if tp is Head:
        try:
            return Head.parse(data)
        except IclabError as err:
            raise SchemaError(str(err)) from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(data)
        except ValueError as err:
            raise SchemaError(str(err)) from None
    if tp is np.ndarray:
        return np.asarray(data, dtype=float)
    if tp is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        raise SchemaError(f"expected a number, got {data!r}")
    if tp in (int, str, bool):
        if type(data) is not tp:
            raise SchemaError(f"expected {tp.__name__}, got {data!r}")
        return data
    if tp is type(None):
        if data is not None:
            raise SchemaError(f"expected null, got {data!r}")
        return None
    raise SchemaError(f"cannot decode type {tp}")


def _decode_container(origin: type, args: tuple, data: Any) -> Any:
    if origin is dict:
        if not isinstance(data, dict):
            raise SchemaError(f"expected an object, got {type(data).__name__}")
        key_type, value_type = args or (str, Any)
        return {_decode_key(key_type, k): decode(value_type, v) for k, v in data.items()}
    if not isinstance(data, list):
        raise SchemaError(f"expected a list, got {type(data).__name__}")
    if origin is list:
        item = args[0] if args else Any
        return [decode(item, v) for v in data]
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        return tuple(decode(item, v) for v in data)
    if len(args) != len(data):
        raise SchemaError(f"expected {len(args)} items, got {len(data)}")
    return tuple(decode(a, v) for a, v in zip(args, data))


def _decode_key(tp: Any, key: str) -> Any:
    if tp in (str, Any):
        return key
    if tp is int:
        return int(key)
    if tp is float:
        return float(key)
    return decode(tp, key)


def _decode_dataclass(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise SchemaError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    unknown = set(data) - names
    missing = {f.name for f in fields if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if unknown or missing:
        raise SchemaError(f"{cls.__name__}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
    return cls(**{name: decode(hints[name], value) for name, value in data.items()})


__all__ = ["Head", "Result", "SchemaError", "decode", "encode", "heads"]
