"""The base of queuectl's frozen, keyword-only records (``Job``, ``NewJob``, ``Settings``, ...).

A record is written once, as a class body of annotated fields with their defaults; the
``@record`` decorator gives it ``__slots__`` and a keyword-only ``__init__``, and the class
body stays the one table of its fields (``fields(Job)``), from which the rest derives.

Why not ``@dataclass``: it writes and compiles six methods per class when its module is
imported, about 1 ms a class, which was most of the start-up cost of ``queuectl enqueue``.
Here ``__init__`` is one shared loop over the fields, equality, hashing and ``repr`` come
from the ``Record`` base, and type checkers see a frozen keyword-only dataclass
(``dataclass_transform``). They behave as frozen dataclasses apart from
``dataclasses.fields()`` and ``replace()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = ("FieldInfo", "FrozenRecordError", "Record", "field", "fields", "record", "set_field")

#: How ``__init__`` sets a field of a frozen record: ``set_field(self, "id", id)``.
set_field = object.__setattr__

_R = TypeVar("_R", bound="Record")
_MISSING: Any = object()


class FrozenRecordError(AttributeError):
    """A field of a frozen record was assigned or deleted."""


class Record:
    """Frozen: ``__init__`` sets each field once with ``set_field``. Subclasses declare ``__slots__``."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenRecordError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenRecordError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"

    # copy and pickle: restore the fields without going through the frozen __setattr__.
    def __getstate__(self) -> tuple[Any, ...]:
        return self._values()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            set_field(self, name, value)


class FieldInfo:
    """One field of a record: its name, its annotation (as written), default and metadata."""

    __slots__ = ("annotation", "default", "meta", "name")

    def __init__(self, name: str, annotation: str, default: Any, meta: Mapping[str, Any]) -> None:
        self.name = name
        self.annotation = annotation
        self.default = default
        self.meta = meta

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def __repr__(self) -> str:
        return f"FieldInfo({self.name!r}: {self.annotation})"


class _Spec:
    __slots__ = ("default", "meta")

    def __init__(self, default: Any, meta: dict[str, Any]) -> None:
        self.default = default
        self.meta = meta


def field(default: Any = _MISSING, **meta: Any) -> Any:
    """A field with a default and metadata read through ``fields()``: ``field(default=b"", detail=True)``."""
    return _Spec(default, meta)


if TYPE_CHECKING:
    from typing import dataclass_transform
else:

    def dataclass_transform(**_options: object) -> Callable[[Any], Any]:
        return lambda decorator: decorator


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
def record(cls: type[_R]) -> type[_R]:
    """Make ``cls`` a frozen record of the fields its body annotates, in that order."""
    # Not inspect.get_annotations(): importing inspect costs `queuectl enqueue` milliseconds.
    annotations: dict[str, str] = dict(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
    namespace = {
        key: value
        for key, value in cls.__dict__.items()
        if key not in annotations and key not in ("__dict__", "__weakref__")
    }
    table: list[FieldInfo] = []
    for name, annotation in annotations.items():
        given = cls.__dict__.get(name, _MISSING)
        spec = given if isinstance(given, _Spec) else _Spec(given, {})
        table.append(FieldInfo(name, str(annotation), spec.default, spec.meta))
    names = tuple(info.name for info in table)
    order = tuple((info.name, info.default) for info in table)
    known = frozenset(names)
    qualname = cls.__qualname__

    def __init__(self: Record, **values: Any) -> None:
        for name, default in order:
            value = values.get(name, default)
            if value is _MISSING:
                raise TypeError(f"{qualname}() missing keyword argument {name!r}")
            set_field(self, name, value)
        if len(values) > len(order) or not known.issuperset(values):
            unexpected = ", ".join(repr(name) for name in values if name not in known)
            raise TypeError(f"{qualname}() got unexpected keyword arguments: {unexpected}")

    __init__.__qualname__ = f"{qualname}.__init__"
    namespace["__slots__"] = names
    namespace["__init__"] = __init__
    namespace["__record_fields__"] = tuple(table)
    made: type[_R] = type(cls.__name__, cls.__bases__, namespace)
    return made


def fields(cls: type[Record] | Record) -> tuple[FieldInfo, ...]:
    """The fields of a ``@record`` class (or of a record's class), in order."""
    table: tuple[FieldInfo, ...] = getattr(cls, "__record_fields__", ())
    return table
