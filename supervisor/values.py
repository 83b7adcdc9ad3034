"""Frozen value classes that cost nothing to import.

Owns: ``@frozen``, a small stand-in for ``@dataclass(frozen=True)`` for the
modules on the path from exec to spawning the child. ``dataclasses`` imports
``inspect``, ``re`` and more (about 10 ms before the child could start);
this builds the same ``__init__``, ``__repr__``, ``__eq__`` and ``__hash__``
from the class annotations, and refuses assignment afterwards. Type checkers
see it as a frozen dataclass (PEP 681). Modules that run after the spawn use
``dataclasses`` itself.
"""

from __future__ import annotations

# Not ``from typing import TYPE_CHECKING``: importing typing costs 4 ms here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar, dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_: object) -> object:
        return lambda decorator: decorator


class FrozenInstanceError(AttributeError):
    pass


_MISSING = object()


@dataclass_transform(frozen_default=True)
def frozen(cls: type[T]) -> type[T]:
    """Make ``cls`` an immutable value with keyword-or-positional fields."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        # A class's own annotations only (getattr would also find a base's).
        own = klass.__dict__.get("__annotations__")  # noqa: RUF063
        if own is None and klass is cls:
            own = getattr(cls, "__annotations__", {})  # 3.14 computes them lazily
        for name in own or {}:
            if name not in names:
                names.append(name)
    defaults = {name: getattr(cls, name) for name in names if hasattr(cls, name)}
    for name, value in defaults.items():
        if isinstance(value, (list, dict, set)):
            raise TypeError(f"{cls.__name__}.{name}: a mutable default would be shared")

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__} takes at most {len(names)} positional arguments")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names:
                raise TypeError(f"{cls.__name__} has no field {name!r}")
            if name in values:
                raise TypeError(f"{cls.__name__} got {name!r} twice")
            values[name] = value
        for name in names:
            value = values.get(name, defaults.get(name, _MISSING))
            if value is _MISSING:
                raise TypeError(f"{cls.__name__} needs {name!r}")
            object.__setattr__(self, name, value)

    def _fields(self: Any) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in names)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{cls.__name__}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(_fields(self) == _fields(other))

    def __hash__(self: Any) -> int:
        return hash(_fields(self))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r} of {cls.__name__}")

    def __delattr__(self: Any, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r} of {cls.__name__}")

    methods: dict[str, Callable[..., Any]] = {
        "__init__": __init__,
        "__repr__": __repr__,
        "__eq__": __eq__,
        "__hash__": __hash__,
        "__setattr__": __setattr__,
        "__delattr__": __delattr__,
    }
    for name, method in methods.items():
        method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, method)
    cls._field_names = tuple(names)  # type: ignore[attr-defined]
    return cls


def replace(value: T, **changes: Any) -> T:
    """A copy of a ``@frozen`` value with some fields changed."""
    names: tuple[str, ...] = value._field_names  # type: ignore[attr-defined]
    fields = {name: getattr(value, name) for name in names}
    fields.update(changes)
    return type(value)(**fields)
