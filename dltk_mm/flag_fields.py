"""Command-line flags derived from frozen dataclass fields, and dataclasses built back from them.

A configuration dataclass (e.g. :class:`dltk_mm.training.config.TrainConfig`) holds each option's
default, type and documentation once. This module turns its fields into absl flags and parsed flag
values back into an instance, so that a command line never restates a default:

* :func:`leaf_fields` lists the dotted names (``"pipeline.augmentation.noise_sigma"``) of every
  non-dataclass field, recursing into fields whose type is itself a dataclass;
* :class:`FlagSpec` binds one flag to one or more of those fields (one ``--num_classes`` for
  ``network.num_classes`` and ``pipeline.num_classes``); :func:`derive_specs` makes one per field,
  named after the field's last part (with a prefix per sub-dataclass where names would collide),
  its help text taken from the class docstring's ``Attributes:`` section;
* :func:`define_flags` defines them (type, parser and default read from the field),
  :func:`flag_values` reads them back as ``{dotted name: value}``, :func:`build` and
  :func:`replace` make instances from such mappings and :func:`to_args` writes an instance as
  ``--name=value`` strings that parse back to it.

Text syntax, derived from the field's type: booleans are absl boolean flags (``--x`` / ``--nox``);
tuples are comma-separated (``--filters=16,64,128``; a fixed-length tuple also takes one value,
repeated: ``--patch_size=64`` is ``(64, 64, 64)``; an element of type ``Any`` may be an
``x``-separated triple: ``--strides=1,2,1x2x2``); an optional field takes ``none``.

This module is generic: it imports nothing from dltk_mm except the errors.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import flags

from dltk_mm.errors import ConfigurationError

_NONE_TEXT = "none"


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One absl flag bound to dataclass fields.

    Attributes:
        name: flag name (without ``--``).
        paths: dotted field names the flag sets (all to the same value).
        help: help text.
        choices: allowed values of a string field (an enum flag); None = any.
    """

    name: str
    paths: tuple[str, ...]
    help: str
    choices: tuple[str, ...] | None = None


# --------------------------------------------------------------------------------------------
# Fields and their types
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def leaf_fields(cls: type, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Every non-dataclass field of ``cls`` and of its dataclass-typed fields, recursively.

    Returns:
        ``{dotted name: (type, default)}`` in field order; the default is
        ``dataclasses.MISSING`` for a field without one.
    """
    hints = _hints(cls)
    leaves: dict[str, tuple[Any, Any]] = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        name = f"{prefix}{field.name}"
        if _is_dataclass_type(kind):
            leaves.update(leaf_fields(kind, name + "."))
        else:
            leaves[name] = (kind, _field_default(field))
    return leaves


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field name: text}`` from the ``Attributes:`` section of a Google-style class docstring."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)*)", doc, re.MULTILINE)
    if not match:
        return {}
    docs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in match.group(1).splitlines():
        entry = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: ?(.*)$", line)
        if entry:
            current = docs.setdefault(entry.group(1), [])
            current.append(entry.group(2).strip())
        elif current is not None and line.strip():
            current.append(line.strip())
    return {name: _plain(" ".join(parts)) for name, parts in docs.items()}


def _plain(text: str) -> str:
    """Docstring markup -> terminal text: ``:class:`~a.B``` -> ``B``, double backquotes dropped."""
    text = re.sub(r":mod:`~?([^`]+)`", r"\1", text)
    text = re.sub(r":\w+:`~?(?:[\w.]*\.)?([^`.]+)`", r"\1", text)
    return text.replace("``", "")


def _nested_docs(cls: type, prefix: str = "") -> dict[str, str]:
    hints = _hints(cls)
    docs = {f"{prefix}{name}": text for name, text in attribute_docs(cls).items()}
    for field in dataclasses.fields(cls):
        if _is_dataclass_type(hints[field.name]):
            docs.update(_nested_docs(hints[field.name], f"{prefix}{field.name}."))
    return docs


def derive_specs(
    cls: type,
    *,
    prefixes: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
    merge: Mapping[str, Sequence[str]] | None = None,
    exclude: Iterable[str] = (),
    helps: Mapping[str, str] | None = None,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> tuple[FlagSpec, ...]:
    """One :class:`FlagSpec` per leaf field of ``cls`` (see :func:`leaf_fields`).

    Args:
        cls: the configuration dataclass.
        prefixes: sub-dataclass path -> prefix of its fields' flag names, e.g.
            ``{"inference": "validation_"}`` gives ``--validation_overlap``.
        names: dotted field name -> flag name, overriding the derived one.
        merge: dotted field name -> other fields the same flag also sets.
        exclude: dotted field names without a flag (also those merged into another's flag).
        helps: dotted field name -> help text, replacing the docstring's.
        choices: dotted field name -> allowed values (an enum flag).

    Raises:
        ConfigurationError: when two fields would get the same flag name, or a field has no help.
    """
    prefixes, names, merge = prefixes or {}, names or {}, merge or {}
    helps, choices = helps or {}, choices or {}
    docs = _nested_docs(cls)
    skipped = set(exclude) | {p for others in merge.values() for p in others}
    specs: dict[str, FlagSpec] = {}
    for path in leaf_fields(cls):
        if path in skipped:
            continue
        parent, _, leaf = path.rpartition(".")
        name = names.get(path, prefixes.get(parent, "") + leaf)
        text = helps.get(path, docs.get(path))
        if not text:
            raise ConfigurationError(f"{cls.__name__}.{path} has no documentation for its flag")
        if name in specs:
            raise ConfigurationError(f"flag --{name} would set both {specs[name].paths[0]} and "
                                     f"{path}; give one a prefix or a name")
        option = tuple(choices[path]) if path in choices else None
        specs[name] = FlagSpec(name, (path, *merge.get(path, ())), text, option)
    return tuple(specs.values())


# --------------------------------------------------------------------------------------------
# Text <-> value, from the type
def _split_optional(kind: Any) -> tuple[Any, bool]:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return functools.reduce(operator.or_, rest), True
    return kind, False


def _parse_atom(text: str) -> Any:
    text = text.strip()
    if "x" in text and not text.lower().startswith("0x"):
        return tuple(_parse_atom(part) for part in text.split("x"))
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _parse_scalar(kind: Any, text: str) -> Any:
    if kind is Any:
        return _parse_atom(text)
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return lowered in ("true", "1")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is str:
        return text
    raise ValueError(f"no text syntax for type {kind}")


def _parse_tuple(kind: Any, parts: list[str]) -> tuple[Any, ...]:
    args = typing.get_args(kind)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_parse_scalar(args[0], p) for p in parts)
    if len(parts) == 1 and len(set(args)) == 1:
        parts = parts * len(args)
    if len(parts) != len(args):
        raise ValueError(f"expected {len(args)} comma-separated values, got {len(parts)}")
    return tuple(_parse_scalar(a, p) for a, p in zip(args, parts, strict=True))


def parse_text(kind: Any, text: str) -> Any:
    """The value of a field of type ``kind`` written as ``text`` (see the module docstring).

    Raises:
        ValueError: when the text does not fit the type.
    """
    kind, optional = _split_optional(kind)
    if optional and text.strip().lower() == _NONE_TEXT:
        return None
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    if typing.get_origin(kind) is tuple:
        return _parse_tuple(kind, parts)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(kind):
            try:
                return parse_text(option, text)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors))
    return _parse_scalar(kind, text)


def format_value(value: Any) -> str:
    """The text :func:`parse_text` reads back as ``value``."""
    if value is None:
        return _NONE_TEXT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join("x".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
                        for v in value)
    return str(value)


class _FieldParser(flags.ArgumentParser):
    """absl parser of one field's text syntax (values that are not text pass through)."""

    def __init__(self, kind: Any, choices: tuple[str, ...] | None) -> None:
        self.kind = kind
        self.choices = choices

    def parse(self, argument: Any) -> Any:
        value = parse_text(self.kind, argument) if isinstance(argument, str) else argument
        if isinstance(value, list):
            value = tuple(value)
        if self.choices is not None and value is not None and value not in self.choices:
            raise ValueError(f"value should be one of {'|'.join(self.choices)}, got {value!r}")
        return value

    def flag_type(self) -> str:
        return "enum" if self.choices else "field"


class _FieldSerializer(flags.ArgumentSerializer):
    def serialize(self, value: Any) -> str:
        return format_value(value)


# --------------------------------------------------------------------------------------------
# Flags
def define_flags(fv: flags.FlagValues, cls: type, specs: Iterable[FlagSpec],
                 defaults: Any = None, mark_required: bool = True) -> None:
    """Defines one flag per spec in ``fv``; fields without a default become required flags.

    Args:
        fv: the flag registry.
        cls: the configuration dataclass the specs' paths belong to.
        specs: the flags (e.g. from :func:`derive_specs`).
        defaults: an instance of ``cls`` whose values are the flags' defaults; None = the
            dataclass defaults.
        mark_required: make the flags of fields without a default required (False: they
            default to None, e.g. to read only the flags a user gave).
    """
    leaves = leaf_fields(cls)
    required = []
    for spec in specs:
        kind, default = leaves[spec.paths[0]]
        if defaults is not None:
            default = get_path(defaults, spec.paths[0])
        text = spec.help + (f" One of: {', '.join(spec.choices)}." if spec.choices else "")
        if _split_optional(kind)[1]:
            text += f" (--{spec.name}={_NONE_TEXT}: None)"
        if default is dataclasses.MISSING:
            required.append(spec.name)
            default = None
        if kind is bool:
            flags.DEFINE_bool(spec.name, default, text, flag_values=fv)
        else:
            flags.DEFINE(_FieldParser(kind, spec.choices), spec.name, default, text,
                         flag_values=fv, serializer=_FieldSerializer())
    if required and mark_required:
        flags.mark_flags_as_required(required, flag_values=fv)


def flag_values(fv: flags.FlagValues, specs: Iterable[FlagSpec],
                only_present: bool = False) -> dict[str, Any]:
    """``{dotted field name: value}`` of parsed flags.

    Args:
        fv: parsed flags.
        specs: the flags to read.
        only_present: read only the flags given on the command line or in a flagfile (to layer
            them over an existing configuration).
    """
    values: dict[str, Any] = {}
    for spec in specs:
        if only_present and not fv[spec.name].present:
            continue
        for path in spec.paths:
            values[path] = fv[spec.name].value
    return values


def to_args(instance: Any, specs: Iterable[FlagSpec], only_changed_from: Any = None) -> list[str]:
    """``--name=value`` strings that give ``instance`` back through the specs' flags.

    Args:
        instance: a configuration.
        specs: its flags.
        only_changed_from: another configuration; flags of fields equal there are left out.
    """
    args = []
    for spec in specs:
        value = get_path(instance, spec.paths[0])
        if only_changed_from is not None and get_path(only_changed_from, spec.paths[0]) == value:
            continue
        if isinstance(value, bool):
            args.append(f"--{spec.name}" if value else f"--no{spec.name}")
        else:
            args.append(f"--{spec.name}={format_value(value)}")
    return args


# --------------------------------------------------------------------------------------------
# Instances from dotted names
def get_path(instance: Any, path: str) -> Any:
    """The value of the dotted field ``path`` of a dataclass instance."""
    value = instance
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in values.items():
        head, dot, rest = path.partition(".")
        if dot:
            nested.setdefault(head, {})
            if not isinstance(nested[head], dict):
                raise ConfigurationError(f"{head} is given both whole and as {path}")
            nested[head][rest] = value
        else:
            nested[head] = value
    return nested


def _frozen(value: Any) -> Any:
    """Lists (e.g. from JSON) -> tuples, recursively, so that equal settings compare equal."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _check_names(cls: type, names: Iterable[str], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ConfigurationError(f"{where}: unknown option(s) {unknown}; known options are "
                                 f"{sorted(known)}")


def _construct(cls: type, base: Any, values: Mapping[str, Any], where: str) -> Any:
    nested = _nest(values)
    _check_names(cls, nested, where)
    hints = _hints(cls)
    arguments = {}
    for name, value in nested.items():
        kind = hints[name]
        if _is_dataclass_type(kind) and isinstance(value, Mapping):
            inner = getattr(base, name) if base is not None else None
            value = _construct(kind, inner, value, f"{where}.{name}")
        arguments[name] = _frozen(value)
    if base is None:
        missing = [f.name for f in dataclasses.fields(cls)
                   if _field_default(f) is dataclasses.MISSING and f.name not in arguments]
        if missing:
            raise ConfigurationError(f"{where}: missing required option(s) {missing}")
        return cls(**arguments)
    return dataclasses.replace(base, **arguments)


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """A new ``cls`` from ``{dotted field name: value}``; fields not named keep their defaults.

    Raises:
        ConfigurationError: for an unknown field name (naming the known ones), and whatever the
            dataclass's own validation raises.
    """
    return _construct(cls, None, values, cls.__name__)


def replace(instance: Any, values: Mapping[str, Any]) -> Any:
    """A copy of ``instance`` with ``{dotted field name: value}`` changed (and validated again).

    A value for a dataclass-typed field may be an instance or a mapping of its fields; lists
    become tuples.

    Raises:
        ConfigurationError: for an unknown field name (naming the known ones), and whatever the
            dataclass's own validation raises.
    """
    return _construct(type(instance), instance, values, type(instance).__name__)


def specs_by_name(specs: Iterable[FlagSpec]) -> dict[str, FlagSpec]:
    """``{flag name: spec}``."""
    return {spec.name: spec for spec in specs}

