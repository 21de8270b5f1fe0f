"""Streaming catalog readers and item validation.

Readers yield one :class:`Record` per input record, or a :class:`BadRecord` where the input is
broken, and never load the whole file: a catalog larger than memory streams through with memory
bounded by the largest single record (plus one Parquet batch). Bad input never raises; the
caller routes :class:`BadRecord` values to the dead-letter file and goes on.

Example:
    >>> from vecrank.ingest.template import TextTemplate
    >>> rec = Record("items.jsonl", 1, {"id": 7, "title": "Alien", "year": 1979})
    >>> row = validate_item(rec, id_field="id", template=TextTemplate("{title} ({year})"))
    >>> row.id, row.text, row.fields
    ('7', 'Alien (1979)', {'title': 'Alien', 'year': 1979})
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from vecrank.ingest.fieldtypes import FieldTypeError, apply_field_types, template_view
from vecrank.ingest.template import TextTemplate

__all__ = [
    "BadRecord",
    "Deduplicator",
    "ItemRow",
    "Record",
    "content_hash",
    "read_records",
    "validate_item",
]

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet")
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
STDIN = "-"
_STDIN_SOURCE = "<stdin>"
_PARQUET_BATCH_ROWS = 1024
_TRUE_VALUES = frozenset({"true", "1", "yes", "y", "t", "on"})
_FALSE_VALUES = frozenset({"false", "0", "no", "n", "f", "off", ""})

Raw = str | dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Record:
    """One parsed input record.

    Attributes:
        source: The file it came from (``"<stdin>"`` for standard input).
        line: 1-based physical line (JSONL), line where the row starts counting the header as
            line 1 (CSV), or 1-based row number (Parquet).
        data: The record's fields.
    """

    source: str
    line: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadRecord:
    """An input record that cannot be used, and why.

    Attributes:
        source: The file it came from.
        line: Where it is, with the same meaning as :attr:`Record.line`; 0 when the whole
            file is unreadable (a corrupt Parquet footer).
        field: The offending field, where one field is to blame.
        reason: A short, fixed category such as ``"malformed JSON"`` or ``"missing id"``, so
            that dead letters can be counted per reason.
        raw: What was read: the raw text for reader errors, the parsed record for validation
            errors, ``None`` where nothing usable was read.
        detail: The specifics (parser message, expected and actual dimensions...).
    """

    source: str
    line: int
    field: str | None
    reason: str
    raw: Raw
    detail: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ItemRow:
    """A validated item, ready to embed and index.

    Attributes:
        id: The item id, normalised to ``str``.
        text: The rendered template text (empty for deletions).
        fields: The record's other fields (without id, vector and tombstone fields).
        vector: A precomputed float32 vector from the input, or ``None``.
        deleted: ``True`` for a tombstone: delete the item instead of indexing it.
        content_hash: :func:`content_hash` of what gets indexed (empty for deletions).
        source: The file it came from.
        line: Where it is in that file.
    """

    id: str
    text: str
    fields: dict[str, Any]
    vector: np.ndarray | None
    deleted: bool
    content_hash: str
    source: str
    line: int


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def read_records(path: str | Path, *, format: str | None = None) -> Iterator[Record | BadRecord]:
    """Streams the records of a JSONL, CSV or Parquet file.

    The path and format are checked now, so a wrong path or format fails before the first
    record; the records themselves are read lazily.

    Args:
        path: The file, or ``"-"`` for standard input (JSONL unless ``format`` says ``"csv"``).
        format: ``"jsonl"``, ``"csv"`` or ``"parquet"``; inferred from the suffix when omitted
            (``.jsonl``/``.ndjson``/``.json``, ``.csv``, ``.parquet``/``.pq``).

    Returns:
        An iterator of :class:`Record` and :class:`BadRecord` in file order. Blank lines are
        skipped.

    Raises:
        ValueError: Unknown format or suffix, or Parquet from standard input.
        FileNotFoundError: The file does not exist.
        IsADirectoryError: The path is a directory.
        ImportError: A Parquet file and pyarrow is not installed.

    Example:
        >>> for item in read_records("catalog.csv"):  # doctest: +SKIP
        ...     print(item.line, item.data if isinstance(item, Record) else item.reason)
    """
    fmt = _resolve_format(path, format)
    if str(path) == STDIN:
        if fmt == "parquet":
            raise ValueError("Parquet cannot be read from standard input; pass a file path")
        return _read_stream(sys.stdin.buffer, _STDIN_SOURCE, fmt)
    file = Path(path)
    # exists(), not is_file(): a named pipe such as <(zcat catalog.jsonl.gz) must be readable.
    if not file.exists():
        raise FileNotFoundError(f"catalog file not found: {file}")
    if file.is_dir():
        raise IsADirectoryError(f"catalog path is a directory, not a file: {file}")
    if fmt == "parquet":
        return _iter_parquet(file, _import_parquet())
    return _read_file(file, fmt)


def _resolve_format(path: str | Path, format: str | None) -> str:
    if format is not None:
        fmt = format.lower()
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        return fmt
    if str(path) == STDIN:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        known = ", ".join(_SUFFIX_FORMATS)
        raise ValueError(
            f"cannot tell the format of {path} from its suffix (known: {known}); "
            "pass format='jsonl', 'csv' or 'parquet'"
        )
    return _SUFFIX_FORMATS[suffix]


def _read_file(file: Path, fmt: str) -> Iterator[Record | BadRecord]:
    # Binary, so each line's bytes are decoded on their own and one bad byte costs one line.
    with file.open("rb") as stream:
        yield from _read_stream(stream, str(file), fmt)


def _read_stream(stream: IO[bytes], source: str, fmt: str) -> Iterator[Record | BadRecord]:
    if fmt == "csv":
        return _iter_csv(stream, source)
    return _iter_jsonl(stream, source)


def _decode(raw: bytes, line_no: int) -> str:
    """Strict UTF-8 of one line without its line ending (and without a BOM on line 1)."""
    if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    return raw.decode("utf-8").rstrip("\r\n")


def _utf8_detail(exc: UnicodeDecodeError) -> str:
    bad = exc.object[exc.start : exc.end]
    return f"byte(s) {bad.hex(' ')} at offset {exc.start}: {exc.reason}"


def _iter_jsonl(stream: Iterable[bytes], source: str) -> Iterator[Record | BadRecord]:
    first_content = True
    for line_no, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            text = _decode(raw, line_no)
        except UnicodeDecodeError as exc:
            lossy = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield BadRecord(source, line_no, None, "invalid UTF-8", lossy, _utf8_detail(exc))
            first_content = False
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            if first_content and text.lstrip().startswith("["):
                # A pretty-printed JSON array: every later line would be an error too.
                yield BadRecord(
                    source,
                    line_no,
                    None,
                    "JSON array, not JSON Lines",
                    None,
                    "write one object per line, e.g. jq -c '.[]' file.json",
                )
                return
            yield BadRecord(source, line_no, None, "malformed JSON", text, exc.msg + f" at column {exc.colno}")
            first_content = False
            continue
        first_content = False
        if not isinstance(value, dict):
            yield BadRecord(source, line_no, None, "not a JSON object", text, f"got a JSON {_json_type(value)}")
            continue
        yield Record(source, line_no, value)


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class _LineFeeder:
    """Feeds decoded lines to ``csv.reader`` and remembers what the current row was made of.

    ``csv.reader`` needs text with line endings kept (quoted fields may span lines), but a line
    that is not valid UTF-8 must not stop the file: it is fed decoded with replacements and
    recorded in ``bad`` so the row that contains it becomes a :class:`BadRecord`.
    """

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._lines = enumerate(stream, start=1)
        self.bad: dict[int, str] = {}  # physical line -> decode error, for the current row
        self.taken: list[str] = []  # the current row's text, for dead letters

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line_no, raw = next(self._lines)
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.bad[line_no] = _utf8_detail(exc)
            text = raw.decode("utf-8", "backslashreplace")
        self.taken.append(text)
        return text

    def start_row(self) -> None:
        self.bad.clear()
        self.taken.clear()

    def row_text(self) -> str:
        return "".join(self.taken).rstrip("\r\n")


def _iter_csv(stream: Iterable[bytes], source: str) -> Iterator[Record | BadRecord]:
    feeder = _LineFeeder(stream)
    # strict: a stray quote is an error to report, not a value to guess at.
    reader = csv.reader(feeder, strict=True)
    header: list[str] | None = None
    while True:
        feeder.start_row()
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRecord(source, start, None, "malformed CSV", feeder.row_text() or None, str(exc))
            if header is None:
                return
            continue
        if _is_blank(row):
            continue
        if feeder.bad:
            line, detail = next(iter(feeder.bad.items()))
            where = "" if line == start else f" (physical line {line})"
            yield BadRecord(source, start, None, "invalid UTF-8", feeder.row_text(), detail + where)
            if header is None:
                return  # without a readable header no row can be interpreted
            continue
        if header is None:
            header, problem = _check_header(row)
            if problem is not None:
                yield BadRecord(source, start, problem[0], "bad CSV header", feeder.row_text(), problem[1])
                return
            continue
        yield _csv_row(source, start, header, row, feeder)


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _check_header(row: list[str]) -> tuple[list[str], tuple[str | None, str] | None]:
    names = [name.strip() for name in row]
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            return names, (None, f"column {position} has no name")
        if name in seen:
            return names, (name, f"column name {name!r} appears twice")
        seen.add(name)
    return names, None


def _csv_row(source: str, start: int, header: list[str], row: list[str], feeder: _LineFeeder) -> Record | BadRecord:
    if len(row) != len(header):
        missing = header[len(row)] if len(row) < len(header) else None
        return BadRecord(
            source,
            start,
            missing,
            "wrong number of fields",
            feeder.row_text(),
            f"expected {len(header)} fields (header), got {len(row)}",
        )
    # CSV has no null: an empty cell is how a missing value is written.
    return Record(source, start, {name: (value if value != "" else None) for name, value in zip(header, row)})


def _import_parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional dependency, imported on use
    except ImportError as exc:
        raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from exc
    return pq


def _iter_parquet(file: Path, pq: Any) -> Iterator[Record | BadRecord]:
    source = str(file)
    try:
        parquet = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow's errors share no base class we can name without it
        yield BadRecord(source, 0, None, "unreadable Parquet", None, str(exc))
        return
    row_no = 0
    try:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for data in batch.to_pylist():
                row_no += 1
                yield Record(source, row_no, data)
    except Exception as exc:  # a corrupt page: report where it stopped, keep what was read
        yield BadRecord(source, row_no + 1, None, "unreadable Parquet", None, str(exc))
    finally:
        parquet.close()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_item(
    record: Record,
    *,
    id_field: str,
    template: TextTemplate,
    vector_field: str | None = None,
    dims: int | None = None,
    tombstone_field: str | None = None,
    field_types: Mapping[str, str] | None = None,
) -> ItemRow | BadRecord:
    """Checks one catalog record and turns it into an :class:`ItemRow`.

    Checks, in order: the id (present, non-empty, a string or integer; surrounding whitespace
    is stripped), the tombstone flag, the declared field types (each declared field converted
    to its type, see :mod:`vecrank.ingest.fieldtypes`), the rendered text (non-empty), and a
    precomputed vector when ``vector_field`` is given and present (a list of finite numbers, or
    such a list as a JSON string as CSV files carry it, not all zeros, ``dims`` long when
    ``dims`` is given).

    The text and the content hash are made from the converted values (the text shows dates as
    ISO 8601), so ``"1995"`` and ``1995`` in an integer field give the same item.

    Args:
        record: The record from :func:`read_records`.
        id_field: The field holding the item id.
        template: Renders the text to embed.
        vector_field: The field holding a precomputed embedding, if the catalog has one.
        dims: The expected vector length; unchecked when ``None``.
        tombstone_field: A field that marks deletions; truthy values (``true``, ``"true"``,
            ``1``, ``"1"``, ``"yes"``...) make a deletion row that needs no text.
        field_types: Declared field types (name -> Elasticsearch type); a value that cannot be
            converted makes a bad record naming the field. Deletion rows are not converted.

    Returns:
        The :class:`ItemRow`, or a :class:`BadRecord` naming the field and the reason.

    Example:
        >>> t = TextTemplate("{title}")
        >>> validate_item(Record("f.jsonl", 3, {"title": "x"}), id_field="id", template=t).reason
        'missing id'
    """

    def bad(field_name: str | None, reason: str, detail: str | None = None) -> BadRecord:
        return BadRecord(record.source, record.line, field_name, reason, record.data, detail)

    data = record.data
    item_id, id_problem = normalise_id(data.get(id_field))
    if item_id is None:
        return bad(id_field, *id_problem)
    own = {id_field, vector_field, tombstone_field}
    fields = {k: v for k, v in data.items() if k not in own}

    if tombstone_field is not None:
        deleted = _parse_flag(data.get(tombstone_field))
        if deleted is None:
            return bad(tombstone_field, "invalid tombstone", f"{data.get(tombstone_field)!r} is neither true nor false")
        if deleted:
            return ItemRow(item_id, "", fields, None, True, "", record.source, record.line)

    shown: Mapping[str, Any] = data
    if field_types:
        try:
            data = apply_field_types(data, field_types, skip=own)
        except FieldTypeError as exc:
            return bad(exc.field, exc.reason, exc.detail)
        fields = {k: v for k, v in data.items() if k not in own}
        shown = template_view(data, field_types)

    text = template.render(shown)
    if not text:
        names = template.fields
        return bad(
            names[0] if len(names) == 1 else None, "empty text", f"template fields all empty: {', '.join(names)}"
        )

    vector = None
    if vector_field is not None and data.get(vector_field) is not None:
        vector, problem = _parse_vector(data[vector_field], dims)
        if vector is None:
            return bad(vector_field, *problem)

    return ItemRow(
        item_id, text, fields, vector, False, content_hash(text, fields, vector=vector), record.source, record.line
    )


def normalise_id(value: Any) -> tuple[str | None, tuple[str, str | None]]:
    """An id as text (``12.0`` -> ``"12"``, spaces stripped), or None with (reason, detail).

    The reason is ``"missing id"``, ``"empty id"`` or ``"invalid id"``; catalog item ids and the
    user and item ids of events follow this one rule.
    """
    if value is None:
        return None, ("missing id", None)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None, ("invalid id", f"expected a string or integer, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, ("invalid id", f"{value!r} is not a usable id")
        # 12.0 is how JSON exporters and dataframes often spell the integer id 12.
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        text = str(value).strip()
    if not text:
        return None, ("empty id", None)
    return text, ("", None)


def _parse_flag(value: Any) -> bool | None:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE_VALUES:
            return True
        if lowered in _FALSE_VALUES:
            return False
    return None


def _parse_vector(value: Any, dims: int | None) -> tuple[np.ndarray | None, tuple[str, str | None]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, ("invalid vector", "a string that is not a JSON list of numbers")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return None, ("invalid vector", f"expected a list of numbers, got {type(value).__name__}")
    if not value:
        return None, ("invalid vector", "empty list")
    for position, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            return None, ("invalid vector", f"element {position} is {type(number).__name__}, " "not a number")
    vector = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        return None, ("non-finite vector", "vector contains NaN or infinity")
    if np.any(np.abs(vector) > np.finfo(np.float32).max):
        return None, ("non-finite vector", "a value overflows float32")
    vector32 = vector.astype(np.float32)
    if dims is not None and vector32.shape[0] != dims:
        return None, ("wrong vector dimensions", f"expected {dims}, got {vector32.shape[0]}")
    if not np.any(vector32):
        # Cosine similarity is undefined for it and Elasticsearch rejects it at index time.
        return None, ("zero vector", "all elements are 0")
    return vector32, ("", None)


def content_hash(text: str, fields: Mapping[str, Any], *, vector: np.ndarray | None = None) -> str:
    """A fingerprint of everything that gets indexed for an item.

    SHA-256 over canonical JSON (sorted keys, no whitespace) of the text and fields, so any
    change to a value changes the hash and key order does not. Values JSON cannot hold
    (dates from Parquet...) are hashed by their ``str``.

    Args:
        text: The rendered text.
        fields: The other indexed fields.
        vector: A precomputed vector, when the item brings one: it is indexed too.

    Returns:
        64 lowercase hex characters.

    Example:
        >>> content_hash("a", {"x": 1, "y": 2}) == content_hash("a", {"y": 2, "x": 1})
        True
    """
    canonical = json.dumps(
        {"text": text, "fields": fields}, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    digest = hashlib.sha256(canonical.encode("utf-8"))
    if vector is not None:
        digest.update(b"\x00vector\x00")
        digest.update(np.asarray(vector, dtype="<f4").tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------


class Deduplicator:
    """Reports item ids that occur more than once in one input.

    It only reports; which occurrence wins ("last wins" when indexing by id) is the caller's
    business. Memory is one dict entry per distinct id.

    Args:
        max_samples: How many ``(id, first_line, later_line)`` examples to keep.

    Example:
        >>> d = Deduplicator()
        >>> d.add("a", 1), d.add("b", 2), d.add("a", 5)
        (False, False, True)
        >>> d.duplicates, d.samples
        (1, [('a', 1, 5)])
    """

    def __init__(self, max_samples: int = 100) -> None:
        self.max_samples = max_samples
        self.duplicates = 0
        self.samples: list[tuple[str, int, int]] = []
        self._first_line: dict[str, int] = {}

    def add(self, item_id: str, line: int) -> bool:
        """Records one occurrence.

        Args:
            item_id: The normalised item id.
            line: Where this occurrence is.

        Returns:
            ``True`` if the id was seen before in this input.
        """
        first = self._first_line.get(item_id)
        if first is None:
            self._first_line[item_id] = line
            return False
        self.duplicates += 1
        if len(self.samples) < self.max_samples:
            self.samples.append((item_id, first, line))
        return True

    @property
    def unique(self) -> int:
        """How many distinct ids were seen."""
        return len(self._first_line)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._first_line

    def __len__(self) -> int:
        return len(self._first_line)
