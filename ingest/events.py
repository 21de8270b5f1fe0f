"""Interaction events (impressions, clicks, carts, purchases, ratings...) into an append-only index.

Each input row becomes one event document in ``<prefix>-events`` whose ``_id`` is a hash of what
the event *is* (user, item, type, instant, request id, value), so ingesting the same file twice
writes nothing new: the second run's ``create`` operations come back as 409 and are counted as
duplicates. Rows that cannot be used never stop a run: they are counted and written to the
dead-letter file with the file, line, field and reason.

Example:
    >>> parse_timestamp("2024-06-01T02:00:00+02:00") == parse_timestamp(1717200000)
    True
    >>> EventTypes().weight("purchase")
    3.0
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from vecrank.errors import VecrankError
from vecrank.ingest.bulk import bulk_with_retries
from vecrank.ingest.deadletter import DeadLetters
from vecrank.ingest.eventspec import DATE_FORMAT, NUMBER, EventBounds, EventTypes, ms_to_datetime, parse_timestamp
from vecrank.ingest.indices import create_index_if_missing
from vecrank.ingest.records import BadRecord, Record, normalise_id, read_records
from vecrank.ingest.users import RefreshStates, rebuild_users, update_users
from vecrank.interactions import is_interaction
from vecrank.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = [
    "DATE_FORMAT",
    "EVENT_FIELDS",
    "MAX_ID_BYTES",
    "EventBounds",
    "EventSummary",
    "EventTypes",
    "ensure_events_index",
    "event_id",
    "events_mapping",
    "ingest_events",
    "iter_events",
    "ms_to_datetime",
    "parse_event",
    "parse_timestamp",
]

logger = logging.getLogger(__name__)

#: The logical fields of an input row; ``columns`` maps them onto a file's own column names.
EVENT_FIELDS = ("user", "item", "type", "value", "timestamp", "request_id", "position", "arm", "model_version")

_MAX_POSITION = 2**31 - 1  # the events mapping stores position as an ES integer
#: The longest user or item id, in UTF-8 bytes: both become Elasticsearch document ids (users,
#: items), which cannot be longer.
MAX_ID_BYTES = 512
_MGET_CHUNK = 1000
_KNOWN_ITEMS_LIMIT = 2_000_000  # ids kept in memory; the cache starts over past this


# --------------------------------------------------------------------------------------------
# The events index
# --------------------------------------------------------------------------------------------


def events_mapping() -> dict[str, Any]:
    """The explicit, strict mapping of the events index.

    Returns:
        The ``mappings`` body: timestamps are ES ``date`` fields holding epoch milliseconds.
    """
    keyword = {"type": "keyword"}
    return {
        "dynamic": "strict",
        "properties": {
            "event_id": keyword,
            "user_id": keyword,
            "item_id": keyword,
            "type": keyword,
            "value": {"type": "float"},
            "timestamp": {"type": "date", "format": DATE_FORMAT},
            "request_id": keyword,
            "position": {"type": "integer"},
            "arm": keyword,
            "model_version": keyword,
            "ingested_at": {"type": "date", "format": DATE_FORMAT},
        },
    }


def ensure_events_index(client: Elasticsearch, settings: Settings) -> str:
    """The events index's name (``settings.index("events")``), the index created with
    :func:`events_mapping` if it does not exist yet."""
    return create_index_if_missing(client, settings.index("events"), events_mapping())


# --------------------------------------------------------------------------------------------
# Parsing rows
# --------------------------------------------------------------------------------------------


def _iso(millis: int) -> str:
    return ms_to_datetime(millis).isoformat(timespec="seconds").replace("+00:00", "Z")


def event_id(
    user_id: str, item_id: str, event_type: str, timestamp_ms: int, request_id: str | None, value: float | None
) -> str:
    """The event's identity: a SHA-1 over what the event is, so replays map onto the same id.

    Args:
        user_id: The user.
        item_id: The item.
        event_type: The type (``click``...).
        timestamp_ms: The instant in epoch milliseconds, so every spelling of it agrees.
        request_id: The serving request it belongs to, if any.
        value: The value (a rating...), if any; ``4`` and ``"4.0"`` are the same value.

    Returns:
        40 hex digits.
    """
    # A JSON array cannot be confused across fields, unlike joining with a separator.
    key = json.dumps(
        [user_id, item_id, event_type, int(timestamp_ms), request_id, None if value is None else float(value)],
        ensure_ascii=False,
    )
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> float | None:
    """A finite float from a number or numeric text; ``None`` when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def parse_event(
    record: Record,
    *,
    event_types: EventTypes,
    columns: Mapping[str, str] | None = None,
    default_type: str | None = None,
    bounds: EventBounds | None = None,
    now_ms: int | None = None,
) -> dict[str, Any] | BadRecord:
    """Turns one input row into an event document, or says what is wrong with it.

    Ids longer than :data:`MAX_ID_BYTES` in UTF-8, timestamps and ratings outside ``bounds``
    are refused here, so that ingest and the HTTP service refuse the same rows.

    Args:
        record: A row from :func:`vecrank.ingest.records.read_records`.
        event_types: The accepted types.
        columns: Logical field (:data:`EVENT_FIELDS`) -> the row's column name, for the fields
            whose column is named differently.
        default_type: The type of rows that have no type of their own (a ratings file).
        bounds: The plausible timestamps and ratings (default :class:`EventBounds()`).
        now_ms: The present, for ``bounds.max_future_s`` (default: the clock).

    Returns:
        The event document (``event_id``, ``user_id``, ``item_id``, ``type``, ``timestamp`` in
        epoch ms, and whichever of ``value``, ``request_id``, ``position``, ``arm``,
        ``model_version`` are present), or a :class:`BadRecord` whose ``field`` is the row's own
        column name.

    Example:
        >>> row = Record("r.csv", 2, {"userId": "1", "movieId": "31", "rating": "2.5",
        ...                           "timestamp": "1260759144"})
        >>> doc = parse_event(row, event_types=EventTypes(), default_type="rating",
        ...                   columns={"user": "userId", "item": "movieId", "value": "rating"})
        >>> doc["user_id"], doc["item_id"], doc["type"], doc["value"], doc["timestamp"]
        ('1', '31', 'rating', 2.5, 1260759144000)
    """
    names = {name: name for name in EVENT_FIELDS} | dict(columns or {})
    data = record.data

    def bad(logical: str | None, reason: str, detail: str | None = None) -> BadRecord:
        return BadRecord(record.source, record.line, names.get(logical) if logical else None, reason, data, detail)

    ids: dict[str, str] = {}
    for logical in ("user", "item"):
        text, (problem, detail) = normalise_id(data.get(names[logical]))
        if problem == "invalid id":
            return bad(logical, f"bad {logical}", detail)
        if text is None:
            return bad(logical, f"missing {logical}")
        size = len(text.encode("utf-8"))
        if size > MAX_ID_BYTES:
            return bad(logical, f"bad {logical}", f"the id is {size} bytes in UTF-8; at most {MAX_ID_BYTES}")
        ids[logical] = text

    event_type = _optional_text(data.get(names["type"])) or default_type
    if event_type is None:
        return bad("type", "missing type")
    if event_type not in event_types.weights:
        return bad("type", "unknown event type", f"{event_type!r} is not one of: {', '.join(event_types.names)}")

    raw_value = data.get(names["value"])
    value: float | None = None
    if raw_value is not None and not (isinstance(raw_value, str) and not raw_value.strip()):
        value = _number(raw_value)
        if value is None:
            return bad("value", "non-numeric value", f"{raw_value!r} is not a finite number")
    elif event_type == event_types.rating:
        return bad("value", "missing value", "a rating event needs its rating in value")
    bounds = bounds or EventBounds()
    if value is not None and event_type == event_types.rating:
        low, high = bounds.rating_range
        if not low <= value <= high:
            return bad("value", "implausible rating", f"{raw_value!r} is outside {low:g} to {high:g}")

    raw_time = data.get(names["timestamp"])
    if raw_time is None or (isinstance(raw_time, str) and not raw_time.strip()):
        return bad("timestamp", "missing timestamp")
    try:
        timestamp = parse_timestamp(raw_time)
    except ValueError as exc:
        return bad("timestamp", "bad timestamp", str(exc))
    if timestamp < bounds.min_timestamp_ms:
        return bad("timestamp", "implausible timestamp", f"{raw_time!r} is before {_iso(bounds.min_timestamp_ms)}")
    latest = (int(time.time() * 1000) if now_ms is None else now_ms) + round(bounds.max_future_s * 1000)
    if timestamp > latest:
        return bad(
            "timestamp",
            "implausible timestamp",
            f"{raw_time!r} is more than {bounds.max_future_s:g} s in the future (after {_iso(latest)})",
        )

    position: int | None = None
    raw_position = data.get(names["position"])
    if raw_position is not None and not (isinstance(raw_position, str) and not raw_position.strip()):
        number = _number(raw_position)
        if number is None or not number.is_integer() or not 0 <= number <= _MAX_POSITION:
            return bad("position", "bad position", f"{raw_position!r} is not an integer from 0 to {_MAX_POSITION}")
        position = int(number)

    request_id = _optional_text(data.get(names["request_id"]))
    doc: dict[str, Any] = {
        "event_id": event_id(ids["user"], ids["item"], event_type, timestamp, request_id, value),
        "user_id": ids["user"],
        "item_id": ids["item"],
        "type": event_type,
        "timestamp": timestamp,
    }
    optional = {
        "value": value,
        "request_id": request_id,
        "position": position,
        "arm": _optional_text(data.get(names["arm"])),
        "model_version": _optional_text(data.get(names["model_version"])),
    }
    doc.update({key: val for key, val in optional.items() if val is not None})
    return doc


# --------------------------------------------------------------------------------------------
# Ingesting
# --------------------------------------------------------------------------------------------


@dataclass
class EventSummary:
    """What one :func:`ingest_events` run did.

    Attributes:
        read: Rows read (good and bad).
        written: New events indexed.
        duplicates_skipped: Events already in the index (same event id), not written again.
        unknown_items: Events whose item is not in the items index (dead-lettered unless allowed).
        failed: Malformed rows plus events Elasticsearch rejected.
        by_type: Written events per type.
        reasons: Dead letters per reason (``unknown item`` included).
        users_updated: User documents written (one per user per batch).
        users_rebuilt: User documents rebuilt from the events index because a batch met events
            already stored (a retry or a rerun: they may never have reached their users).
        dead_letter_path: Where the dead letters went, if anywhere.
        seconds: Wall time of the run.
    """

    read: int = 0
    written: int = 0
    duplicates_skipped: int = 0
    unknown_items: int = 0
    failed: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    users_updated: int = 0
    users_rebuilt: int = 0
    dead_letter_path: str | None = None
    seconds: float = 0.0

    def reconciles(self) -> bool:
        """Whether every row read is accounted for exactly once."""
        return self.read == self.written + self.duplicates_skipped + self.unknown_items + self.failed

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (for ``--json``)."""
        return {
            "read": self.read,
            "written": self.written,
            "duplicates_skipped": self.duplicates_skipped,
            "unknown_items": self.unknown_items,
            "failed": self.failed,
            "by_type": dict(self.by_type),
            "reasons": dict(self.reasons),
            "users_updated": self.users_updated,
            "users_rebuilt": self.users_rebuilt,
            "dead_letter_path": self.dead_letter_path,
            "seconds": round(self.seconds, 3),
            "reconciles": self.reconciles(),
        }


class _KnownItems:
    """Which item ids exist in the items alias, asked with ``mget`` in chunks and remembered.

    Only found ids are cached: an item missing now may be added by the next catalog ingest.
    """

    def __init__(self, client: Elasticsearch, index: str) -> None:
        self._client = client
        self._index = index
        self._known: set[str] = set()

    def unknown(self, ids: Iterable[str]) -> set[str]:
        todo = sorted({i for i in ids if i not in self._known})
        if len(self._known) + len(todo) > _KNOWN_ITEMS_LIMIT:
            self._known.clear()  # bounded memory beats a perfect hit rate
        missing: set[str] = set()
        for start in range(0, len(todo), _MGET_CHUNK):
            chunk = todo[start : start + _MGET_CHUNK]
            docs = self._client.mget(index=self._index, ids=chunk, source=False)["docs"]
            for doc in docs:
                if "error" in doc:
                    reason = doc["error"].get("reason") if isinstance(doc["error"], dict) else doc["error"]
                    raise VecrankError(f"cannot look up item {doc['_id']!r} in {self._index}: {reason}")
                (self._known.add if doc.get("found") else missing.add)(doc["_id"])
        return missing


@dataclass
class _Pending:
    doc: dict[str, Any]
    source: str
    line: int


def ingest_events(
    client: Elasticsearch,
    settings: Settings,
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    default_type: str | None = None,
    event_types: EventTypes | None = None,
    bounds: EventBounds | None = None,
    dead_letter_path: str | Path | None = None,
    allow_unknown_items: bool = False,
    update_users: bool = True,
    refresh_states: RefreshStates | None = None,
    max_history: int = 200,
    batch_size: int = 1000,
    format: str | None = None,
    max_retries: int = 5,
    initial_backoff: float = 1.0,
    max_backoff: float = 30.0,
    progress: bool | None = None,
) -> EventSummary:
    """Reads an event file (JSONL or CSV) and appends its events to the events index.

    Rows stream through in batches of ``batch_size``: each batch is validated, its items looked
    up in the items alias, written with bulk ``create`` (so an event already present is a 409,
    counted in ``duplicates_skipped``), and its newly written events merged into the users'
    histories. Memory stays bounded by one batch plus the cache of known item ids.

    Args:
        client: The Elasticsearch client.
        settings: Names the indices (events, items, users).
        path: The file, or ``"-"`` for standard input.
        columns: Logical field -> column name where the file names it differently, e.g.
            ``{"user": "userId", "item": "movieId", "value": "rating"}``. Logical fields:
            :data:`EVENT_FIELDS`.
        default_type: The type of rows without one, e.g. ``"rating"`` for a ratings file.
        event_types: Accepted types and weights (default :class:`EventTypes()`).
        bounds: The plausible timestamps and ratings (default :class:`EventBounds()`); rows
            outside are dead-lettered (``POST /events`` applies ``ServeConfig.event_bounds``).
        dead_letter_path: JSONL file the bad rows are appended to; ``None`` only counts them.
        allow_unknown_items: Write events whose item is not in the items index instead of
            dead-lettering them (then the items index need not exist).
        update_users: Merge written events into the users index (see
            :func:`vecrank.ingest.users.update_users`).
        refresh_states: Called with each batch's touched users once their histories are merged,
            to recompute their stored states (the CLI and the service pass
            :func:`vecrank.rank.store.refresh_profiles`); None leaves the states as they are.
        max_history: History length kept per user.
        batch_size: Rows per batch and per bulk request.
        format: ``"jsonl"`` or ``"csv"``; inferred from the suffix when omitted.
        max_retries: Bulk retries of documents rejected with 429 (too many requests).
        initial_backoff: Seconds before the first retry; doubled each time.
        max_backoff: Cap on the wait between retries, in seconds.
        progress: Show a tqdm bar; default only when stderr is a terminal.

    Returns:
        The :class:`EventSummary`; ``summary.reconciles()`` holds unless the run was interrupted.

    Raises:
        VecrankError: The items index does not exist and ``allow_unknown_items`` is false.
        ValueError: Bad ``columns`` keys, ``default_type`` or ``batch_size``.
        FileNotFoundError: No such file.
    """
    event_types = event_types or EventTypes()
    columns = dict(columns or {})
    unknown_keys = set(columns) - set(EVENT_FIELDS)
    if unknown_keys:
        raise ValueError(
            f"columns: unknown field(s) {', '.join(sorted(unknown_keys))}; " f"known: {', '.join(EVENT_FIELDS)}"
        )
    if default_type is not None and default_type not in event_types.weights:
        raise ValueError(f"default_type {default_type!r} is not one of: {', '.join(event_types.names)}")
    if batch_size < 1 or max_history < 1:
        raise ValueError("batch_size and max_history must be >= 1")

    items_alias = settings.index("items")
    if not allow_unknown_items and not client.indices.exists(index=items_alias):
        raise VecrankError(
            f"items index {items_alias} does not exist: ingest the catalog first, " "or allow unknown items"
        )
    records = read_records(path, format=format)  # checks path and format before anything is written
    events_index = ensure_events_index(client, settings)
    known = None if allow_unknown_items else _KnownItems(client, items_alias)

    summary = EventSummary(dead_letter_path=str(dead_letter_path) if dead_letter_path else None)
    started = time.monotonic()
    show = sys.stderr.isatty() if progress is None else progress
    bulk_options = {
        "chunk_size": batch_size,
        "max_retries": max_retries,
        "initial_backoff": initial_backoff,
        "max_backoff": max_backoff,
    }
    with DeadLetters(dead_letter_path) as dead, _progress_bar(show) as bar:

        def flush(pending: list[_Pending]) -> None:
            _flush(
                client,
                settings,
                events_index,
                pending,
                known,
                dead,
                summary,
                item_column=columns.get("item", "item"),
                update_users=update_users,
                refresh_states=refresh_states,
                max_history=max_history,
                bulk_options=bulk_options,
            )

        batch: list[_Pending] = []
        for record in records:
            summary.read += 1
            bar.update(1)
            parsed = (
                record
                if isinstance(record, BadRecord)
                else parse_event(
                    record, event_types=event_types, columns=columns, default_type=default_type, bounds=bounds
                )
            )
            if isinstance(parsed, BadRecord):
                summary.failed += 1
                dead.add(parsed)
                continue
            batch.append(_Pending(parsed, record.source, record.line))
            if len(batch) >= batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        summary.reasons.update(dead.counts)
    if summary.written:  # make them visible to the next command (a signals refresh) at once
        client.indices.refresh(index=events_index)
    summary.seconds = time.monotonic() - started
    logger.info(
        "Events from %s: %d read, %d written, %d duplicates, %d unknown items, %d failed (%.1fs)",
        path,
        summary.read,
        summary.written,
        summary.duplicates_skipped,
        summary.unknown_items,
        summary.failed,
        summary.seconds,
    )
    if not summary.reconciles():  # a bookkeeping bug, not a data problem: say so loudly
        logger.error("Event counts do not reconcile: %s", summary.to_dict())
    return summary


def _progress_bar(show: bool) -> Any:
    return tqdm(unit=" events", disable=not show, desc="events")


def _flush(
    client: Elasticsearch,
    settings: Settings,
    index: str,
    batch: list[_Pending],
    known: _KnownItems | None,
    dead: DeadLetters,
    summary: EventSummary,
    *,
    item_column: str,
    update_users: bool,
    refresh_states: RefreshStates | None,
    max_history: int,
    bulk_options: dict[str, Any],
) -> None:
    """Writes one batch: item check, bulk create, then the users' histories."""

    if known is not None:
        missing = known.unknown(p.doc["item_id"] for p in batch)
        if missing:
            kept = []
            for pending in batch:
                if pending.doc["item_id"] in missing:
                    summary.unknown_items += 1
                    dead.add_failure(
                        source=pending.source,
                        line=pending.line,
                        field=item_column,
                        reason="unknown item",
                        detail=f"item {pending.doc['item_id']!r} is not in {settings.index('items')}",
                        record=pending.doc,
                    )
                else:
                    kept.append(pending)
            batch = kept
    if not batch:
        return

    ingested_at = int(time.time() * 1000)
    actions = [
        (
            {
                "_op_type": "create",
                "_index": index,
                "_id": p.doc["event_id"],
                "_source": {**p.doc, "ingested_at": ingested_at},
            },
            p,
        )
        for p in batch
    ]
    created: list[dict[str, Any]] = []
    repeated: list[dict[str, Any]] = []
    for outcome in bulk_with_retries(client, actions, **bulk_options):
        pending = outcome.origin
        if outcome.ok:
            summary.written += 1
            summary.by_type[pending.doc["type"]] += 1
            created.append(pending.doc)
        elif outcome.status == 409:  # `create` of an event id that is already stored
            summary.duplicates_skipped += 1
            repeated.append(pending.doc)
        else:
            summary.failed += 1
            dead.add_failure(
                source=pending.source,
                line=pending.line,
                field=None,
                reason=outcome.reason,
                detail=outcome.detail,
                record=pending.doc,
            )
    if update_users:
        written, rebuilt = apply_to_users(
            client, settings, created, repeated, max_history=max_history, refresh_states=refresh_states
        )
        summary.users_updated += written
        summary.users_rebuilt += rebuilt


def apply_to_users(
    client: Elasticsearch,
    settings: Settings,
    created: Sequence[Mapping[str, Any]],
    repeated: Sequence[Mapping[str, Any]] = (),
    *,
    max_history: int = 200,
    refresh_states: RefreshStates | None = None,
) -> tuple[int, int]:
    """Bring the users of a stored batch up to date: the interactions just ``created`` are merged
    into their histories (idempotent by event id); the users of ``repeated`` interactions (events
    that were already stored: a retry or a rerun, whose first attempt may have stopped before its
    users) are rebuilt from the events index (:func:`vecrank.ingest.users.rebuild_users`); then
    every touched user's state is recomputed with ``refresh_states`` (rank's
    :func:`vecrank.rank.store.refresh_profiles`, passed in by the caller: ingest does not import
    rank), so the next recommendation sees these events. Impressions are not history and touch
    no user. Returns (users merged, users rebuilt)."""
    fresh = [dict(d) for d in created if is_interaction(d)]
    again = {str(d["user_id"]) for d in repeated if is_interaction(d)}
    merged = update_users(client, settings, fresh, max_history=max_history) if fresh else 0
    rebuilt = rebuild_users(client, settings, again, max_history=max_history) if again else 0
    touched = {str(d["user_id"]) for d in fresh} | again
    if touched and refresh_states is not None:
        refresh_states(client, settings, touched)
    return merged, rebuilt


def rebuild(
    client: Elasticsearch,
    settings: Settings,
    user_ids: Iterable[str],
    *,
    max_history: int = 200,
    refresh_states: RefreshStates | None = None,
) -> int:
    """``vecrank users rebuild``: each user's history from the events index, then their state
    with ``refresh_states`` (:func:`apply_to_users`'s repair path for any users). Returns how many
    were rebuilt."""
    ids = sorted({str(u) for u in user_ids})
    rebuilt = rebuild_users(client, settings, ids, max_history=max_history)
    if ids and refresh_states is not None:
        refresh_states(client, settings, ids)
    return rebuilt


def iter_events(
    client: Elasticsearch, settings: Settings, *, query: Mapping[str, Any] | None = None, size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Streams stored events (their ``_source``) matching ``query``, in no particular order.

    Args:
        client: The Elasticsearch client.
        settings: Names the events index.
        query: An Elasticsearch query; all events when omitted.
        size: Events per scroll page.

    Returns:
        An iterator of event documents.
    """
    from elasticsearch.helpers import scan  # elasticsearch takes 0.7 s to import; parsing events needs none of it

    body = {"query": dict(query) if query else {"match_all": {}}}
    for hit in scan(client, index=settings.index("events"), query=body, size=size):
        yield hit["_source"]
