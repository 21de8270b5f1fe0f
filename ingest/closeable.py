"""A base for objects that hold a file or a connection: ``with`` closes them."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closeable:
    """A context manager whose exit is :meth:`close` (which subclasses define, idempotent)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
