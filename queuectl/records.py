"""The base of queuectl's frozen, keyword-only records (``Job``, ``NewJob``, ``Settings``, ...).

``@dataclass`` writes and compiles six methods per class when its module is imported: about
1 ms a class, which was most of the start-up cost of ``queuectl enqueue`` (every ``queuectl``
process imports the records). Here each record lists its fields in ``__slots__`` and writes its
own ``__init__``; equality, hashing, ``repr`` and immutability come from this base, reading the
fields from ``__slots__``. They behave as the frozen dataclasses did, apart from
``dataclasses.fields()`` and ``replace()``.
"""

from __future__ import annotations

from typing import Any

__all__ = ("FrozenRecordError", "Record", "set_field")

#: How ``__init__`` sets a field of a frozen record: ``set_field(self, "id", id)``.
set_field = object.__setattr__


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
