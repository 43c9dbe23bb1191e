"""Arguments converted by the executor's annotations (go-job converts them too).

Text from a command line (jobctl) or a JSON payload arrives as str, int, float, bool,
dict and list; an executor declares what it wants.  schedule_job() converts each
argument whose parameter is annotated, before it pickles them:

- int, float, bool <- str ("1", "2.5", "true"/"false"/"yes"/"no"/"1"/"0"); float <- int
- str <- int or float (go-job's 123 -> "123")
- a dataclass, a TypedDict or a class with annotated fields <- a dict or a JSON object
  in a str (fields converted by their own annotations, recursively)
- list[X], tuple[X, ...], dict[str, X] <- a JSON array / object in a str, items converted
- datetime <- an ISO 8601 str;  X | None: None stays None
A value already of the annotated type, an unannotated parameter, and any annotation
without a rule here (Any, a Protocol, numpy types...) take the value as it is.  A value
that a rule applies to but that does not convert raises ArgumentBindingError naming the
parameter.

Owns: the conversion plan of an executor (made once per Job) and the rules.  Never
does: bind arguments to parameters (job.py) or pickle them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .errors import ArgumentBindingError

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}
_NO_RULE = object()  # an annotation this module leaves alone


class _Unconvertible(ValueError):
    pass


def _to_bool(v: Any) -> bool:
    if isinstance(v, str):
        low = v.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise _Unconvertible(f"{v!r} is not a boolean (true/false, yes/no, 1/0)")


def _json(v: Any, want: type) -> Any:
    """A str holding JSON of type `want` (dict or list) -> that value; else v."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError as e:
            raise _Unconvertible(f"{v!r} is not JSON: {e}") from None
        if not isinstance(v, want):
            raise _Unconvertible(f"JSON {type(v).__name__} where a {want.__name__} is needed")
    return v


def _fields_of(cls: type) -> dict[str, Any] | None:
    """Field annotations of a dataclass, TypedDict or class with annotated fields."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = getattr(cls, "__annotations__", None) or {}
    return hints or None


def converter(ann: Any) -> Callable[[Any], Any] | None:
    """A function converting a value to annotation `ann`, or None (no rule: as is)."""
    if ann is inspect.Parameter.empty or ann is Any or ann is object:
        return None
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(members) != 1:
            return None  # int | str: which one is meant cannot be told
        inner = converter(members[0])
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(ann)
        if origin is tuple:  # tuple[X, ...] converts its items; a fixed shape does not
            variadic = len(args) == 2 and args[1] is Ellipsis
            item = converter(args[0]) if variadic else None
        else:
            item = converter(args[0]) if args else None
        return _collection(origin, item)
    if origin is dict:
        args = typing.get_args(ann)
        value = converter(args[1]) if len(args) == 2 else None
        return lambda v: _mapping(_json(v, dict), value)
    if not isinstance(ann, type):
        return None
    if ann is bool:
        return lambda v: v if type(v) is bool else _to_bool(v)
    if ann is int:
        return lambda v: v if type(v) is int else _scalar(int, v, (str,))
    if ann is float:
        return lambda v: v if type(v) is float else _scalar(float, v, (str, int))
    if ann is str:
        return lambda v: v if type(v) is str else _scalar(str, v, (int, float))
    if ann is datetime:
        return lambda v: datetime.fromisoformat(v) if isinstance(v, str) else v
    if typing.is_typeddict(ann):
        fields = _plan(_fields_of(ann) or {})
        return lambda v: _mapping_fields(_json(v, dict), fields)
    if dataclasses.is_dataclass(ann) or (
        ann.__module__ != "builtins" and _fields_of(ann) is not None
    ):
        fields = _plan(_fields_of(ann) or {})
        return lambda v: v if isinstance(v, ann) else _build(ann, _json(v, dict), fields)
    return None


def _scalar(kind: type, v: Any, sources: tuple) -> Any:
    if isinstance(v, bool) or not isinstance(v, sources):
        return v  # no rule from this type: as it is
    try:
        return kind(v.strip() if isinstance(v, str) else v)
    except ValueError:
        raise _Unconvertible(f"{v!r} is not a valid {kind.__name__}") from None


def _collection(kind: type, item: Callable | None) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        v = _json(v, list)
        if not isinstance(v, (list, tuple, set, frozenset)):
            return v
        items = v if item is None else [item(x) for x in v]
        return items if kind is list and type(items) is list else kind(items)

    return convert


def _mapping(v: Any, value: Callable | None) -> Any:
    if value is None or not isinstance(v, dict):
        return v
    return {k: value(x) for k, x in v.items()}


def _plan(hints: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    return {name: conv for name, ann in hints.items() if (conv := converter(ann)) is not None}


def _mapping_fields(v: Any, fields: dict[str, Callable]) -> Any:
    if not isinstance(v, dict):
        return v
    return {k: fields[k](x) if k in fields else x for k, x in v.items()}


def _build(cls: type, v: Any, fields: dict[str, Callable]) -> Any:
    if not isinstance(v, dict):
        return v
    try:
        return cls(**_mapping_fields(v, fields))
    except TypeError as e:
        raise _Unconvertible(f"{v!r} does not make a {cls.__name__}: {e}") from None


class Conversions:
    """The conversion plan of one executor: per parameter, its converter."""

    def __init__(self, signature: inspect.Signature, hints: dict[str, Any]):
        self.positional: list[tuple[str, Callable | None]] = []
        self.star: tuple[str, Callable] | None = None  # *args
        self.keyword: dict[str, Callable] = {}
        self.double_star: tuple[str, Callable] | None = None  # **kwargs
        for p in signature.parameters.values():
            conv = converter(hints.get(p.name, p.annotation))
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.positional.append((p.name, conv))
            elif p.kind is p.VAR_POSITIONAL and conv is not None:
                self.star = (p.name, conv)
            elif p.kind is p.VAR_KEYWORD and conv is not None:
                self.double_star = (p.name, conv)
            if conv is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                self.keyword[p.name] = conv

    @classmethod
    def of(cls, executor: Any, signature: inspect.Signature | None) -> Conversions | None:
        """The plan of `executor`, or None when no parameter has a rule (the common
        case for untyped code: then scheduling pays nothing)."""
        if signature is None:
            return None
        try:
            hints = typing.get_type_hints(executor)
        except Exception:  # an annotation that does not resolve: take them as written
            hints = {}
        plan = cls(signature, hints)
        if not (any(c for _, c in plan.positional) or plan.star or plan.keyword
                or plan.double_star):  # fmt: skip
            return None
        return plan

    def apply(self, kind: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """args/kwargs converted (new objects only where something changed)."""
        name = "?"
        try:
            if args:
                out = []
                positional = self.positional
                for i, v in enumerate(args):
                    if i < len(positional):
                        name, conv = positional[i]
                    elif self.star is not None:
                        name, conv = self.star
                    else:
                        conv = None
                    out.append(v if conv is None else conv(v))
                args = tuple(out)
            if kwargs:
                new = {}
                for k, v in kwargs.items():
                    name = k
                    conv = self.keyword.get(k)
                    if conv is None and self.double_star is not None and k not in self.keyword:
                        conv = self.double_star[1]
                    new[k] = v if conv is None else conv(v)
                kwargs = new
        except _Unconvertible as e:
            raise ArgumentBindingError(
                f"job {kind!r}: argument {name!r} cannot be converted: {e}"
            ) from None
        except (ValueError, TypeError) as e:  # a dataclass's own check, fromisoformat
            raise ArgumentBindingError(
                f"job {kind!r}: argument {name!r} cannot be converted: {type(e).__name__}: {e}"
            ) from None
        return args, kwargs


__all__ = ["Conversions", "converter"]
