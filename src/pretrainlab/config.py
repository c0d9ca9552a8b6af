"""Frozen dataclass configs built from plain dictionaries (YAML recipes + command-line overrides)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from pretrainlab.errors import PretrainlabError, unknown_name_message

C = TypeVar("C")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Converts YAML values to the annotated type: lists to tuples, dicts to nested dataclasses."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return build_config(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where) if len(options) == 1 else value
    if origin is tuple and isinstance(value, list | tuple):
        args = typing.get_args(annotation)
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis or len(set(args)) == 1) else None
        return tuple(_coerce(v, inner, where) if inner else v for v in value)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
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
    return key.split("."), yaml.safe_load(raw)


def set_nested(values: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        values = values.setdefault(key, {})
    values[path[-1]] = value
