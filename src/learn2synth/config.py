"""Configuration machinery: nested dataclasses from YAML files and ``--set a.b=c`` overrides, with clear errors.

A configuration schema is a tree of dataclasses. Values are checked against the type annotations, ranges are
declared next to the field, cross-field checks go in an optional ``validate(self)`` method::

    @dataclass
    class Optim:
        lr: float = field(default=1e-3, metadata={"range": (0, None), "open": "low"})  # lr > 0
        name: Literal["sgd", "adam"] = "adam"

        def validate(self):
            if self.name == "sgd" and self.lr > 1:
                raise ConfigError("lr", "must be <= 1 with sgd")  # key relative to this dataclass

``load_config(Schema, "exp.yaml", ["optim.lr=1e-3"], base=preset(PRESETS, "mild"))`` merges dataclass defaults
< ``base`` (e.g. a named preset) < the YAML file < the overrides, and every mistake becomes a ``ConfigError``
naming the dotted key (``optim.lrr: unknown key (did you mean 'lr'?)``) or an ``InputError`` naming the file and line.

Supported annotations: ``int`` (integral floats such as ``1e4`` accepted), ``float`` (ints accepted), ``bool``,
``str``, ``pathlib.Path``, ``Any``, ``Optional``/unions, ``Literal``, ``list[T]``, ``tuple[T, ...]``,
``tuple[A, B]``, ``dict[K, V]`` and nested dataclasses, in any combination. Resolving string annotations needs
the dataclasses to be defined at module level.

Ranges: ``metadata={"range": (low, high)}`` is the closed interval ``low <= value <= high``; ``None`` leaves a
side unbounded; ``"open": "low" | "high" | "both"`` makes that bound strict. The range applies to a number and
to every number inside a list, tuple or dict value; NaN is outside every range. ``"interval": True`` asks a list
for a ``[low, high]`` pair with ``low <= high`` (a list of such pairs: each one).

YAML is read with YAML 1.2 rules for floats and booleans: ``1e-3`` is a float (PyYAML alone reads a string)
and ``yes``/``no``/``on``/``off`` stay strings (only ``true``/``false`` are booleans). Duplicate keys are errors.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from learn2synth.errors import ConfigError, InputError

__all__ = ["from_dict", "check_config", "to_dict", "load_yaml", "dump_yaml", "parse_override", "apply_overrides",
           "merge", "preset", "layered", "load_config"]

T = TypeVar("T")

# the ranges most fields use (see "Ranges" above)
POSITIVE = {"range": (0, None), "open": "low"}
NON_NEGATIVE = {"range": (0, None)}
FRACTION = {"range": (0, 1)}
INTERVAL = {"interval": True}  # [low, high] with low <= high
_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and booleans, refusing duplicate keys and self-containing aliases."""

    def __init__(self, stream):
        super().__init__(stream)
        self._open_anchors = []  # anchors of the nodes being composed, to refuse `a: &x [*x]`

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is inside its own anchor",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        self._open_anchors.append(event.anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open_anchors.pop()

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, _BOOL_12, list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings any YAML 1.1 or 1.2 reader would take for a number or boolean."""


_Dumper.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))
# PyYAML writes U+0085 raw inside single quotes and reads it back as a line break: use double quotes, which escape it
_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style='"' if "\x85" in text else None))


def from_dict(cls: type[T], data: Mapping, where: str = "") -> T:
    """Build the dataclass ``cls`` from nested plain data, checking keys, types, ranges and ``validate``.

    Parameters
    ----------
    cls : type
        A dataclass whose fields may be other dataclasses.
    data : Mapping
        Plain data, e.g. from ``load_yaml``. Absent keys take the field's default; a partial mapping for a
        nested dataclass fills in from that field's default value.
    where : str
        Dotted prefix of ``data`` in a larger configuration, used in error messages.

    Returns
    -------
    cls
        The configuration.

    Raises
    ------
    ConfigError
        Naming the dotted key: unknown key (with the closest valid key), missing required key, wrong type,
        value out of range, or a ``validate`` failure.

    Examples
    --------
    >>> @dataclasses.dataclass
    ... class Train:
    ...     steps: int = 100
    >>> from_dict(Train, {"steps": 5})
    Train(steps=5)
    >>> from_dict(Train, {"stpes": 5}, where="train")
    Traceback (most recent call last):
    ...
    learn2synth.errors.ConfigError: train.stpes: unknown key (did you mean 'steps'?)
    """
    config = _build(cls, data, where)
    check_config(config, where)
    return config


def check_config(config: Any, where: str = "") -> None:
    """Check declared ranges and call ``validate()`` hooks, nested dataclasses first.

    ``from_dict`` calls it; call it on configurations built in code. A ``validate`` method raises
    ``ConfigError(key, problem)`` with ``key`` relative to its dataclass (or ``None``); the dotted prefix is
    added here.
    """
    for field in dataclasses.fields(config):
        key = _join(where, field.name)
        if field.metadata.get("interval"):
            _check_interval(getattr(config, field.name), key)
        for item_key, item in _walk(getattr(config, field.name), key):
            if _is_instance(item):
                check_config(item, item_key)
            elif "range" in field.metadata and _is_number(item):
                _check_range(item, item_key, field.metadata)
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as error:
            key = (where or None) if error.key is None else _join(where, error.key)
            raise ConfigError(key, error.problem) from None


def to_dict(config: Any) -> dict:
    """Convert a dataclass configuration to plain types: dicts, lists, str, int, float, bool, None.

    The result is safe for ``yaml.safe_dump`` and ``torch.load(weights_only=True)``, and
    ``from_dict(type(config), to_dict(config)) == config``. Tuples become lists and paths strings.
    """
    return {field.name: _plain(getattr(config, field.name)) for field in dataclasses.fields(config) if field.init}


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML file whose top level is a mapping; an empty file gives ``{}``.

    Raises
    ------
    InputError
        Naming the file (and the line and column of a syntax error): missing, unreadable, not text, invalid
        YAML, duplicate key, or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "is a folder, not a YAML file" if path.is_dir() else "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not a text file (not UTF-8)") from None
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InputError(path, f"{at}invalid YAML: {error.problem or error.context or error}") from None
    except yaml.YAMLError as error:
        raise InputError(path, f"invalid YAML: {error}") from None
    except ValueError as error:  # a value PyYAML recognizes but cannot build, e.g. the date 2001-02-30
        raise InputError(path, f"invalid value: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, f"expected a mapping of keys to values at the top level, got {_show(data)}")
    return data


def dump_yaml(data: Mapping) -> str:
    """Write plain data (``to_dict``'s output) as YAML that ``load_yaml`` reads back identically."""
    return yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"a.b.c=value"`` into ``("a.b.c", value)``, reading the value as YAML.

    Examples
    --------
    >>> parse_override("train.lr=1e-3")
    ('train.lr', 0.001)
    >>> parse_override("sizes=[64, 64]")
    ('sizes', [64, 64])
    """
    key, equals, raw = text.partition("=")
    key = key.strip()
    if not equals:
        raise ConfigError(key or None, f"an override needs the form key=value (e.g. train.lr=1e-3), got {text!r}")
    if not key or not all(key.split(".")) or key != "".join(key.split()):
        raise ConfigError(None, f"{text!r}: the key of an override is dotted names without spaces, e.g. train.lr")
    try:
        return key, yaml.load(raw, Loader=_Loader)
    except (yaml.YAMLError, ValueError) as error:
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(key, f"cannot read the value {raw!r} as YAML: {problem}") from None


def apply_overrides(data: Mapping, overrides: Iterable[str]) -> dict:
    """Return a copy of ``data`` with each ``"a.b.c=value"`` override applied in order.

    Missing sections are created; a mapping value is merged into an existing mapping, anything else replaces
    the old value. Unknown keys are left for ``from_dict`` to report.
    """
    result = merge({}, data)
    for text in overrides:
        key, value = parse_override(text)
        *parents, last = key.split(".")
        node = result
        for depth, part in enumerate(parents):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(".".join(parents[: depth + 1]),
                                  f"is {_show(child)}, not a section, so {key} cannot be set")
            node = child
        old = node.get(last)
        node[last] = merge(old, value) if isinstance(old, dict) and isinstance(value, Mapping) else value
    return result


def preset(presets: Mapping[str, Mapping], name: str, key: str = "preset") -> dict:
    """A copy of ``presets[name]``, the plain data a named preset sets (the ``base`` of :func:`load_config`);
    an unknown name is a ``ConfigError`` naming ``key`` and the choices."""
    if name not in presets:
        raise ConfigError(key, f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return merge({}, presets[name])


def layered(path: str | os.PathLike | None = None, overrides: Iterable[str] = (), base: Mapping | None = None) -> dict:
    """Plain data of ``base`` (e.g. a :func:`preset`) < the YAML file ``path`` < ``overrides`` ("a.b=value")."""
    data = merge({}, base or {})
    if path is not None:
        data = merge(data, load_yaml(path))
    return apply_overrides(data, overrides)


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                base: Mapping | None = None) -> T:
    """Build a configuration from dataclass defaults < ``base`` < the YAML file ``path`` < ``overrides``.

    Parameters
    ----------
    cls : type
        The configuration dataclass.
    path : str or os.PathLike, optional
        YAML file.
    overrides : iterable of str
        ``"a.b.c=value"`` strings, applied in order (``--set`` on the command line).
    base : Mapping, optional
        Plain data below the file, e.g. a preset.
    """
    return from_dict(cls, layered(path, overrides, base))


def _build(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(where or None, f"expected a mapping of keys to values, got {_show(data)}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(where, key), _unknown_key_problem(key, list(fields)))
    hints = get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name in data:
            value, default = data[name], _default(field)
            if _is_instance(default) and isinstance(value, Mapping):
                value = merge(to_dict(default), value)  # a partial section keeps the field's own default
            kwargs[name] = _coerce(hints[name], value, key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required key is missing")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (int to float, list to tuple, ...)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, key)
        for option in options:
            try:
                return _coerce(option, value, key)
            except ConfigError:
                pass
    elif origin is Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        return _fail_choice(args, value, key)
    elif dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if _is_number(value):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(key, "number too large for a float (above 1.8e308)") from None
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, PurePath) or (isinstance(value, str) and value):
            return tp(value)
    elif tp in (list, tuple) or origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            return _coerce_sequence(origin or tp, args, value, key)
    elif tp is dict or origin is dict:
        if isinstance(value, Mapping):
            key_type, item_type = args or (Any, Any)
            return {_coerce(key_type, k, _join(key, k)): _coerce(item_type, v, _join(key, k))
                    for k, v in value.items()}
    else:
        raise TypeError(f"{key}: unsupported type annotation {tp!r} in the configuration schema")
    raise ConfigError(key, f"expected {_describe(tp)}, got {_show(value)}")


def _coerce_sequence(kind: type, args: tuple, value: list | tuple, key: str) -> list | tuple:
    if kind is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} items, got {len(value)}: {_show(value)}")
        item_types = args
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [_coerce(item_type, item, f"{key}[{i}]")
             for i, (item_type, item) in enumerate(zip(item_types, value, strict=True))]
    return tuple(items) if kind is tuple else items


def _fail_choice(choices: tuple, value: Any, key: str) -> None:
    problem = f"must be one of {', '.join(_show(choice) for choice in choices)}, got {_show(value)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
        problem += f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(key, problem)


def _check_interval(value: Any, key: str) -> None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        for i, row in enumerate(value):
            _check_interval(row, f"{key}[{i}]")
        return
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)
            and value[0] <= value[1]):
        raise ConfigError(key, f"must be [low, high] with low <= high, got {_show(value)}")


def _check_range(value: float, key: str, metadata: Mapping) -> None:
    low, high = metadata["range"]
    open_side = metadata.get("open")
    if open_side not in (None, "low", "high", "both"):
        raise TypeError(f"{key}: metadata 'open' must be 'low', 'high' or 'both', got {open_side!r}")
    low_open, high_open = open_side in ("low", "both"), open_side in ("high", "both")
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    if above and below:  # NaN fails both comparisons
        return
    if high is None:
        rule = f"{'>' if low_open else '>='} {low}"
    elif low is None:
        rule = f"{'<' if high_open else '<='} {high}"
    else:
        rule = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ConfigError(key, f"must be {rule}, got {_show(value)}")


def _unknown_key_problem(key: Any, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (valid keys: {', '.join(valid)})" if valid else "unknown key (this section has no keys)"


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        return " or ".join("null" if arg is type(None) else _describe(arg) for arg in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    if tp in (list, tuple) or origin in (list, tuple):
        return "a list"
    return "a mapping"  # dict or dataclass: the only other annotations that reach here


def _plain(value: Any) -> Any:
    if _is_instance(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot convert {type(value).__name__} to a plain configuration value")


def merge(base: Mapping, update: Mapping) -> dict:
    """Deep merge into new plain dicts: mappings merge key by key, anything else in ``update`` replaces.

    >>> merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]})
    {'a': {'b': 1, 'c': 3}, 'd': [2]}
    """
    merged = {key: merge({}, value) if isinstance(value, Mapping) else copy.deepcopy(value)
              for key, value in base.items()}
    for key, value in update.items():
        old = merged.get(key)
        if isinstance(value, Mapping):
            merged[key] = merge(old if isinstance(old, dict) else {}, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _walk(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """The value and everything inside its lists, tuples and dicts, with dotted keys."""
    yield key, value
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk(item, f"{key}[{i}]")
    elif isinstance(value, Mapping):
        for sub_key, item in value.items():
            yield from _walk(item, _join(key, sub_key))


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return None if field.default_factory is dataclasses.MISSING else field.default_factory()


def _is_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _join(where: str | None, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python converts to text
        return f"a {type(value).__name__} too large to print"
    return text if len(text) <= 80 else text[:77] + "..."
