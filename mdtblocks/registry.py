"""A registry of kinds: ``kind`` -> a function that rebuilds a part (objective, token rule, extra loss) from its record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, Callable[[Mapping[str, Any]], T]], Generic[T]):
    """``kind`` -> ``from_record``; parts from outside the package register the same way.

    Args:
        what: the part's name in messages (``"objective"``, ``"token rule"``).
    """

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, kind: str, from_record: Callable[[Mapping[str, Any]], T]) -> None:
        """Make :meth:`build` rebuild records of ``kind`` with ``from_record``."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        self[kind] = from_record

    def build(self, record: Mapping[str, Any]) -> T:
        """The part a record describes; a record without a kind, or of an unknown kind, is refused with the known ones."""
        if not isinstance(record, Mapping) or "kind" not in record:
            raise ValueError(f"a {self.what} record is a mapping with a 'kind' entry, got {record!r}")
        kind = record["kind"]
        if kind not in self:
            raise ValueError(f"unknown {self.what} kind {kind!r}; known: {sorted(self)}")
        return self[kind](record)
