"""dltk_mm.flag_fields: absl flags derived from dataclass fields, and instances built back."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from absl import flags

from dltk_mm import flag_fields
from dltk_mm.errors import ConfigurationError


@dataclasses.dataclass(frozen=True)
class Inner:
    """Toy nested options.

    Attributes:
        size: a cube side or a (z, y, x) triple.
        rate: a rate; none disables.
    """

    size: tuple[int, int, int] = (4, 4, 4)
    rate: float | None = 0.5

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate < 0:
            raise ConfigurationError(f"rate must be >= 0, got {self.rate}")


@dataclasses.dataclass(frozen=True)
class Outer:
    """Toy options.

    Attributes:
        name: a required name.
        steps: how many steps
            (continued on a second line).
        names: ordered names.
        strides: integers or x-separated triples.
        kernel: one size or a triple.
        fast: go fast.
        inner: nested options, see :class:`Inner`.
        other: a second nested copy.
    """

    name: str
    steps: int = 10
    names: tuple[str, ...] = ("a", "b")
    strides: tuple[Any, ...] = (1, 2)
    kernel: int | tuple[int, int, int] = 3
    fast: bool = False
    inner: Inner = dataclasses.field(default_factory=Inner)
    other: Inner = dataclasses.field(default_factory=Inner)


def _specs() -> tuple[flag_fields.FlagSpec, ...]:
    return flag_fields.derive_specs(Outer, prefixes={"other": "other_"},
                                    choices={"name": ("x", "y")})


def _parse(*args: str, required: bool = True) -> flags.FlagValues:
    fv = flags.FlagValues()
    flag_fields.define_flags(fv, Outer, _specs(), mark_required=required)
    fv(["prog", *args])
    return fv


def test_every_leaf_field_gets_a_flag_named_after_it_with_its_docstring() -> None:
    specs = {spec.name: spec for spec in _specs()}
    assert set(specs) == {"name", "steps", "names", "strides", "kernel", "fast", "size", "rate",
                          "other_size", "other_rate"}
    assert specs["other_rate"].paths == ("other.rate",)
    assert specs["steps"].help == "how many steps (continued on a second line)."
    assert specs["size"].help == "a cube side or a (z, y, x) triple."


def test_flags_build_the_dataclass_with_its_defaults() -> None:
    fv = _parse("--name=x")
    assert fv["steps"].default == 10 and fv["size"].default == (4, 4, 4)
    assert flag_fields.build(Outer, flag_fields.flag_values(fv, _specs())) == Outer(name="x")


def test_text_syntax_follows_the_field_types() -> None:
    fv = _parse("--name=y", "--steps=3", "--names=c", "--strides=1,2x1x1", "--kernel=3,3,1",
                "--fast", "--size=8", "--rate=none", "--other_size=2,4,8")
    built = flag_fields.build(Outer, flag_fields.flag_values(fv, _specs()))
    assert built == Outer(name="y", steps=3, names=("c",), strides=(1, (2, 1, 1)),
                          kernel=(3, 3, 1), fast=True, inner=Inner(size=(8, 8, 8), rate=None),
                          other=Inner(size=(2, 4, 8)))
    assert _parse("--name=x", "--kernel=5").kernel == 5


def test_round_trip_through_arguments() -> None:
    value = Outer(name="y", steps=3, names=("c", "d"), strides=(1, (2, 1, 1)), kernel=(3, 3, 1),
                  fast=True, inner=Inner(size=(8, 6, 4), rate=None))
    args = flag_fields.to_args(value, _specs())
    assert "--nofast" not in args and "--fast" in args and "--rate=none" in args
    fv = _parse(*args)
    assert flag_fields.build(Outer, flag_fields.flag_values(fv, _specs())) == value
    changed = flag_fields.to_args(value, _specs(), only_changed_from=Outer(name="y"))
    assert changed == ["--steps=3", "--names=c,d", "--strides=1,2x1x1", "--kernel=3,3,1",
                       "--fast", "--size=8,6,4", "--rate=none"]


@pytest.mark.parametrize("args", [["--name=z"], ["--name=x", "--steps=many"],
                                  ["--name=x", "--size=1,2"], ["--name=x", "--unknown=1"]])
def test_malformed_values_are_flag_errors(args: list[str]) -> None:
    with pytest.raises(flags.Error):
        _parse(*args)


def test_fields_without_default_are_required_unless_told() -> None:
    with pytest.raises(flags.IllegalFlagValueError):
        _parse("--steps=2")
    fv = _parse("--steps=2", required=False)
    assert flag_fields.flag_values(fv, _specs(), only_present=True) == {"steps": 2}


def test_only_present_keeps_a_flag_given_at_its_default() -> None:
    fv = _parse("--name=x", "--steps=10", "--rate=0.25")
    assert flag_fields.flag_values(fv, _specs(), only_present=True) == {
        "name": "x", "steps": 10, "inner.rate": 0.25}


def test_replace_and_build_take_dotted_names_and_validate() -> None:
    base = Outer(name="x", inner=Inner(size=(2, 2, 2)))
    changed = flag_fields.replace(base, {"inner.rate": 1.0, "steps": 4})
    assert changed == Outer(name="x", steps=4, inner=Inner(size=(2, 2, 2), rate=1.0))
    assert flag_fields.replace(base, {"other": Inner(rate=None)}).other == Inner(rate=None)
    assert flag_fields.replace(base, {"strides": [1, [2, 1, 1]]}).strides == (1, (2, 1, 1))
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) \['sise'\]"):
        flag_fields.replace(base, {"inner.sise": 3})
    with pytest.raises(ConfigurationError, match="rate must be"):
        flag_fields.replace(base, {"inner.rate": -1.0})
    assert flag_fields.build(Outer, {"name": "y", "other.size": (1, 1, 1)}) == Outer(
        name="y", other=Inner(size=(1, 1, 1)))
    with pytest.raises(ConfigurationError, match=r"missing required option\(s\) \['name'\]"):
        flag_fields.build(Outer, {"steps": 1})


def test_merged_and_excluded_fields() -> None:
    specs = flag_fields.derive_specs(Outer, prefixes={"other": "other_"},
                                     merge={"inner.size": ("other.size",)},
                                     exclude=("other.rate",))
    names = {spec.name: spec.paths for spec in specs}
    assert names["size"] == ("inner.size", "other.size")
    assert "other_size" not in names and "other_rate" not in names
    fv = flags.FlagValues()
    flag_fields.define_flags(fv, Outer, specs)
    fv(["prog", "--name=x", "--size=6"])
    built = flag_fields.build(Outer, flag_fields.flag_values(fv, specs))
    assert built.inner.size == built.other.size == (6, 6, 6)


def test_colliding_names_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="--size would set both"):
        flag_fields.derive_specs(Outer)
