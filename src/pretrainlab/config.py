"""Frozen dataclass configs built from plain dictionaries (YAML recipes + command-line overrides)."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

from pretrainlab.errors import PretrainlabError, unknown_name_message

C = TypeVar("C")


EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def _wrong(where: str, wanted: str, value: Any) -> PretrainlabError:
    return PretrainlabError(f"option {where} must be {wanted}, got {value!r}")


def _coerce_scalar(value: Any, annotation: Any, where: str) -> Any:
    """Checks a YAML scalar against int, float, bool or str (ints count as floats, whole floats as ints)."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is float and isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads "5e-4" (no dot) as text; every user means the number
    if annotation is float and numeric:
        return float(value)
    if annotation is int and numeric and float(value).is_integer():
        return int(value)
    if (annotation is bool and isinstance(value, bool)) or (annotation is str and isinstance(value, str)):
        return value
    raise _wrong(where, TYPE_WORDS[annotation], value)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Converts YAML values to the annotated type (lists to tuples, dicts to nested dataclasses), refusing a
    value of the wrong kind with a one-line error: `temperature=abc`, `views=3`, `crop_scale=0.2`."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, dict):
            return build_config(annotation, value, where)
        if isinstance(value, annotation):
            return value
        raise PretrainlabError(f"option {where} is a group of options, not one value (got {value!r}); set its "
                               f"members, e.g. {where}.NAME=VALUE")
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where) if len(options) == 1 else value
    if origin is tuple or annotation is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list | tuple):
            raise _wrong(where, "a list such as [0.2, 1.0]", value)
        fixed = bool(args) and Ellipsis not in args
        if fixed and len(value) != len(args):
            raise _wrong(where, f"a list of {len(args)} values", value)
        return tuple(_coerce(v, args[i] if fixed else args[0], where) if args else v for i, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _wrong(where, "a group of key: value pairs", value)
        return value
    if annotation in TYPE_WORDS:
        return _coerce_scalar(value, annotation, where)
    return value


def build_config(config_class: type[C], values: dict[str, Any] | None, where: str = "config") -> C:
    """Builds `config_class(**values)`, rejecting unknown keys with the list of valid ones."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for key in values:
        if key not in fields:
            raise PretrainlabError(unknown_name_message(f"{where} option", key, fields))
    hints = typing.get_type_hints(config_class)
    coerced = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    try:
        return config_class(**coerced)
    except (TypeError, ValueError) as error:
        raise PretrainlabError(f"invalid {where}: {error}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A YAML-friendly dictionary (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses `a.b=value` (value read as YAML: numbers, booleans, lists) into (["a", "b"], value)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise PretrainlabError(f"an option must look like key=value (e.g. temperature=0.2), got '{text}'")
    try:
        return key.split("."), yaml.safe_load(raw)
    except yaml.YAMLError as error:
        problem = str(getattr(error, "problem", None) or "not valid YAML")
        raise PretrainlabError(f"option {key}: cannot read '{raw}' ({problem}); give a YAML value such as 0.2, "
                               "true, text or [1, 2]") from None


def set_nested(values: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        values = values.setdefault(key, {})
    values[path[-1]] = value
