"""Dead letters: records that could not be ingested, kept as JSONL for inspection and replay.

Each line is ``{"source", "line", "field", "reason", "detail", "record", "at"}``; ``record`` is
the raw text or the parsed record, ``at`` the UTC time. Every write is flushed, so the file is
complete up to the last failure even if the process is killed.

Example:
    >>> from vecrank.ingest.records import BadRecord
    >>> with DeadLetters(None) as dead:
    ...     dead.add(BadRecord("items.jsonl", 3, "id", "missing id", {"title": "x"}))
    ...     dict(dead.counts)
    {'missing id': 1}
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from vecrank.ingest.closeable import Closeable
from vecrank.ingest.records import BadRecord

__all__ = ["DeadLetters"]

logger = logging.getLogger(__name__)


class DeadLetters(Closeable):
    """Appends failed records to a JSONL file and counts them per reason.

    Args:
        path: The JSONL file, appended to (parent folders are created); ``None`` only counts.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.counts: Counter[str] = Counter()
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    @property
    def total(self) -> int:
        """How many dead letters were recorded."""
        return sum(self.counts.values())

    def add(self, bad: BadRecord) -> None:
        """Records a :class:`~vecrank.ingest.records.BadRecord`."""
        self.add_failure(
            source=bad.source, line=bad.line, reason=bad.reason, field=bad.field, detail=bad.detail, record=bad.raw
        )

    def add_failure(
        self,
        *,
        source: str,
        line: int,
        reason: str,
        field: str | None = None,
        detail: str | None = None,
        record: str | dict[str, Any] | None = None,
    ) -> None:
        """Records a failure found after validation (a bulk rejection, for example).

        Args:
            source: The input file.
            line: Where the record is in it.
            reason: A short, fixed category; counts are kept per reason.
            field: The offending field, if one is to blame.
            detail: The specifics (an Elasticsearch error message...).
            record: The raw text or the parsed record.
        """
        if self._file is None and self.path is not None:
            raise ValueError(f"dead-letter file {self.path} is closed")
        self.counts[reason] += 1
        if self._file is None:
            return
        entry = {
            "source": source,
            "line": line,
            "field": field,
            "reason": reason,
            "detail": detail,
            "record": record,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        # default=str: Parquet records may hold dates and decimals; the line must still be written.
        self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file; calling it again does nothing."""
        if self._file is not None:
            self._file.close()
            self._file = None
            if self.total:
                logger.info("%d dead letter(s) written to %s", self.total, self.path)

    def __repr__(self) -> str:
        return f"DeadLetters({str(self.path) if self.path else None!r}, total={self.total})"
