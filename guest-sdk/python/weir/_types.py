"""Type hints as input validation and as JSON Schema.

A task's parameters are read from the input object by name and checked against their hints, so
that a wrong input fails at once, naming the field, instead of deep inside the task. Only what JSON
can carry is understood: None, bool, int, float, str, list, tuple, dict with str keys, Optional
and Union, Literal, Enum, dataclasses and Any.
"""

import dataclasses
import enum
import types
import typing
from typing import Any


class InputError(Exception):
    """The input does not fit the parameters; `path` names the field (`b`, `rows[2].name`)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def describe(hint: Any) -> str:
    """How a hint reads in an error message: `an integer`, `a list of strings`..."""
    if hint is Any or hint is typing.Any:
        return "anything"
    if hint is type(None) or hint is None:
        return "null"
    if hint is bool:
        return "a boolean"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is list or origin is list or hint is tuple or origin is tuple:
        return "an array"
    if hint is dict or origin is dict:
        return "an object"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if dataclasses.is_dataclass(hint):
        return f"an object ({hint.__name__})"
    return getattr(hint, "__name__", str(hint))


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def convert(value: Any, hint: Any, path: str) -> Any:
    """Checks a JSON value against a hint and returns it as the hinted Python type."""
    if hint is Any or hint is typing.Any or hint is None and value is None:
        return value
    if hint is type(None) or hint is None:
        if value is None:
            return None
        raise InputError(path, f"expected null, got {json_kind(value)}")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return convert(value, args[0], path)
    if origin in (typing.Union, types.UnionType):
        # None first, so that Optional[X] given null never tries X.
        if value is None and type(None) in args:
            return None
        for option in args:
            try:
                return convert(value, option, path)
            except InputError:
                continue
        raise InputError(path, f"expected {describe(hint)}, got {json_kind(value)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is list or origin is list:
        if isinstance(value, list):
            item = args[0] if args else Any
            return [convert(v, item, _join(path, i)) for i, v in enumerate(value)]
    elif hint is tuple or origin is tuple:
        if isinstance(value, list):
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                item = args[0] if args else Any
                return tuple(convert(v, item, _join(path, i)) for i, v in enumerate(value))
            if len(value) != len(args):
                raise InputError(path, f"expected an array of {len(args)} items, got {len(value)}")
            return tuple(convert(v, a, _join(path, i)) for i, (v, a) in enumerate(zip(value, args)))
    elif hint is dict or origin is dict:
        if isinstance(value, dict):
            item = args[1] if len(args) == 2 else Any
            return {k: convert(v, item, _join(path, k)) for k, v in value.items()}
    elif origin is typing.Literal:
        # type() as well as ==, so that true does not match Literal[1].
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        for member in hint:
            if member.value == value:
                return member
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return build_dataclass(hint, value, path)
    else:
        # A hint this module does not understand: accept the value as JSON gave it.
        return value
    raise InputError(path, f"expected {describe(hint)}, got {json_kind(value)}")


def build_dataclass(cls: Any, value: dict, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise InputError(path, unknown_message(unknown[0], list(fields)))
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = convert(value[name], hints.get(name, Any), _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if is_optional(hints.get(name, Any)):
                kwargs[name] = None
            else:
                raise InputError(path, f"missing field `{name}`")
    return cls(**kwargs)


def is_optional(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def unknown_message(field: str, expected: list) -> str:
    if not expected:
        return f"unknown field `{field}`, the task takes no parameters"
    names = [f"`{name}`" for name in expected]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"unknown field `{field}`, expected {listed}"


def schema(hint: Any) -> dict:
    """The JSON Schema of a hint; {} (anything) for hints this module does not understand."""
    if hint is Any or hint is typing.Any:
        return {}
    if hint is type(None) or hint is None:
        return {"type": "null"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return schema(args[0])
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [schema(a) for a in args]}
    if hint is list or origin is list:
        return {"type": "array", "items": schema(args[0])} if args else {"type": "array"}
    if hint is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "items": schema(args[0])} if args else {"type": "array"}
        return {"type": "array", "prefixItems": [schema(a) for a in args], "minItems": len(args), "maxItems": len(args)}
    if hint is dict or origin is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": schema(args[1])}
        return {"type": "object"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        properties = {}
        required = []
        for f in dataclasses.fields(hint):
            if not f.init:
                continue
            properties[f.name] = schema(hints.get(f.name, Any))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and not is_optional(hints.get(f.name, Any)):
                required.append(f.name)
        return object_schema(properties, required)
    return {}


def object_schema(properties: dict, required: list) -> dict:
    result = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        result["required"] = required
    return result


def to_json_value(value: Any) -> Any:
    """A task's return value as plain JSON data: dataclasses and enums are unfolded."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_json_value(value.value)
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    return value
