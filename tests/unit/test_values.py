"""``values.frozen``: the same value semantics as a frozen dataclass, without its imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Optional

import pytest

from supervisor.values import FrozenInstanceError, frozen, replace
from tests.conftest import ROOT


@frozen
class Point:
    x: int
    y: int = 0
    label: Optional[str] = None


@frozen
class Point3(Point):
    z: int = 0


@dataclasses.dataclass(frozen=True)
class DataclassPoint:
    x: int
    y: int = 0
    label: Optional[str] = None


def test_fields_are_positional_or_keyword_with_defaults() -> None:
    assert Point(1).y == 0 and Point(1).label is None
    assert Point(1, 2, "a") == Point(x=1, y=2, label="a") == Point(1, label="a", y=2)


def test_it_behaves_as_the_frozen_dataclass_it_stands_for() -> None:
    for args, kwargs in [((1,), {}), ((1, 2), {"label": "a"}), ((), {"x": 5, "y": 6})]:
        ours, theirs = Point(*args, **kwargs), DataclassPoint(*args, **kwargs)
        assert repr(ours) == repr(theirs).replace("DataclassPoint", "Point")
        assert hash(ours) == hash(Point(*args, **kwargs))
        assert (ours.x, ours.y, ours.label) == (theirs.x, theirs.y, theirs.label)


def test_equality_is_by_value_and_by_class() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != Point3(1, 2)  # a subclass is another kind of value
    assert Point(1, 2) != (1, 2, None)
    assert len({Point(1, 2), Point(1, 2), Point(2, 1)}) == 2


def test_fields_cannot_be_assigned_or_deleted() -> None:
    point = Point(1, 2)
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'x' of Point"):
        point.x = 3  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        point.other = 3  # type: ignore[attr-defined]
    with pytest.raises(FrozenInstanceError, match="cannot delete field 'y'"):
        del point.y  # type: ignore[misc]
    assert isinstance(FrozenInstanceError("x"), AttributeError)


def test_wrong_arguments_are_refused_with_the_field_named() -> None:
    with pytest.raises(TypeError, match="needs 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="has no field 'w'"):
        Point(1, w=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="got 'x' twice"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="at most 3 positional"):
        Point(1, 2, "a", 4)  # type: ignore[call-arg]


def test_a_subclass_adds_its_fields_after_its_bases() -> None:
    point = Point3(1, 2, "a", 3)
    assert (point.x, point.y, point.label, point.z) == (1, 2, "a", 3)
    assert repr(point) == "Point3(x=1, y=2, label='a', z=3)"


def test_a_mutable_default_is_refused() -> None:
    with pytest.raises(TypeError, match="mutable default would be shared"):

        @frozen
        class Bad:
            items: list[int] = []


def test_replace_copies_with_some_fields_changed() -> None:
    point = Point3(1, 2, "a", 3)
    moved = replace(point, y=20, z=30)
    assert moved == Point3(1, 20, "a", 30)
    assert point == Point3(1, 2, "a", 3)  # the original is untouched
    with pytest.raises(TypeError, match="has no field 'w'"):
        replace(point, w=1)


def test_methods_have_the_class_in_their_qualified_name() -> None:
    assert Point.__init__.__qualname__ == "Point.__init__"
    assert Point3.__repr__.__qualname__ == "Point3.__repr__"


def test_importing_it_imports_nothing_heavy() -> None:
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); before = set(sys.modules); "
              "import supervisor.values; "
              "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True,
                            text=True, check=True, timeout=60).stdout.split()
    assert set(loaded) <= {"__future__", "supervisor", "supervisor.values"}, loaded
