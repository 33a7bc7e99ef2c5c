"""One registry style for the whole library: explicit ``register`` calls, no package scanning.

Every extensible table in hf_prune (pruning methods, architecture families, CLI commands) is a
:class:`Registry`. Entries are added by an explicit call at import time of the module that owns the
table (for example ``hf_prune/methods/__init__.py``), so reading that one file tells you everything
that is registered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with clear errors for unknown or duplicate names.

    Args:
        kind: What the entries are (``"pruning method"``, ``"architecture"``); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T, *, overwrite: bool = False) -> T:
        """Add ``obj`` under ``name``.

        Args:
            name: The key users type (``"magnitude"``).
            obj: The registered object.
            overwrite: Replace an existing entry instead of raising.

        Returns:
            ``obj``, so the call can be used as an expression.

        Raises:
            ValueError: If ``name`` is already registered and ``overwrite`` is False.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(
                f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it."
            )
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> T:
        """Look up ``name``.

        Args:
            name: A registered key.

        Returns:
            The registered object.

        Raises:
            ValueError: If ``name`` is unknown; the message lists the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise ValueError(f"Unknown {self.kind} {name!r}. Known: {known}.") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """Return ``(name, object)`` pairs sorted by name."""
        return sorted(self._entries.items())
