"""The users index: each user's latest interactions, kept up to date as events arrive.

One document per user (``_id`` = user id) with ``history``: the last N interactions, newest
first, each ``{event_id, item_id, type, value, timestamp}`` (timestamp in epoch ms), plus the
total ``n_events``, ``last_event_at`` and ``updated_at``. The history is stored, not indexed
(``enabled: false``): it is read whole by id to build profiles, never searched.

Example:
    >>> merged = merge_history(None, [{"event_id": "a", "user_id": "u", "item_id": "i1",
    ...                                "type": "click", "timestamp": 1000}], max_history=5, now_ms=2000)
    >>> merged["n_events"], merged["history"][0]["item_id"], merged["last_event_at"]
    (1, 'i1', 1000)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from vecrank.errors import VecrankError
from vecrank.ingest.eventspec import DATE_FORMAT
from vecrank.ingest.indices import create_index_if_missing
from vecrank.interactions import IMPRESSION
from vecrank.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

__all__ = [
    "RefreshStates",
    "ensure_users_index",
    "event_users",
    "get_history",
    "merge_history",
    "rebuild_users",
    "update_users",
    "users_mapping",
]

logger = logging.getLogger(__name__)

_HISTORY_KEYS = ("event_id", "item_id", "type", "value", "timestamp")
_CONFLICT_ATTEMPTS = 5
_MGET_CHUNK = 1000
_REBUILD_CHUNK = 100  # users per msearch when rebuilding

#: Recomputes and stores the states of the named users from their histories; returns how many
#: (:func:`vecrank.rank.store.refresh_profiles`). Ingest keeps the histories and rank owns what is
#: computed from them, so the caller that imports both (the CLI, the service) passes it in.
RefreshStates = Callable[["Elasticsearch", Settings, Iterable[str]], int]


def users_mapping() -> dict[str, Any]:
    """The users index mapping.

    ``dynamic`` is ``false`` rather than ``strict`` so that profile vectors written later by the
    ranking side (stored for reading, not for kNN) are kept in ``_source`` without a mapping
    change; the fields declared here are the ones that are searched or aggregated.

    Returns:
        The ``mappings`` body.
    """
    return {
        "dynamic": False,
        "properties": {
            "user_id": {"type": "keyword"},
            "history": {"type": "object", "enabled": False},
            "profile": {"type": "object", "enabled": False},  # vecrank.rank.profiles, read whole
            "n_events": {"type": "long"},
            "last_event_at": {"type": "date", "format": DATE_FORMAT},
            "updated_at": {"type": "date", "format": DATE_FORMAT},
        },
    }


def ensure_users_index(client: Elasticsearch, settings: Settings) -> str:
    """The users index's name (``settings.index("users")``), the index created with
    :func:`users_mapping` if it does not exist yet."""
    return create_index_if_missing(client, settings.index("users"), users_mapping())


def _history_entry(event: Mapping[str, Any]) -> dict[str, Any]:
    return {key: event.get(key) for key in _HISTORY_KEYS}


def _newest_first(entry: Mapping[str, Any]) -> tuple[int, str]:
    # The event id breaks ties between events at the same millisecond, so the order is stable.
    return (int(entry["timestamp"]), str(entry["event_id"]))


def merge_history(
    current: Mapping[str, Any] | None, events: Iterable[Mapping[str, Any]], *, max_history: int, now_ms: int
) -> dict[str, Any]:
    """One user's document after adding ``events`` to ``current`` (a pure function).

    Events already in the history (same ``event_id``) are not added or counted again. The
    history is sorted newest first (ties by event id) and cut to ``max_history``.

    Args:
        current: The user's stored document, or ``None`` for a new user.
        events: Event documents of this user (``event_id``, ``item_id``, ``type``, ``value``,
            ``timestamp`` in epoch ms, ``user_id``).
        max_history: How many interactions to keep.
        now_ms: ``updated_at``, in epoch ms.

    Returns:
        The new document.
    """
    current = current or {}
    history = [dict(entry) for entry in current.get("history") or []]
    seen = {entry["event_id"] for entry in history}
    user_id = current.get("user_id")
    fresh = []
    for event in events:
        user_id = user_id or event.get("user_id")
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        fresh.append(_history_entry(event))
    history.extend(fresh)
    history.sort(key=_newest_first, reverse=True)
    newest = [int(e["timestamp"]) for e in fresh]
    if current.get("last_event_at") is not None:
        newest.append(int(current["last_event_at"]))
    return {
        "user_id": user_id,
        "history": history[:max_history],
        "n_events": int(current.get("n_events") or 0) + len(fresh),
        "last_event_at": max(newest) if newest else None,
        "updated_at": now_ms,
    }


def update_users(
    client: Elasticsearch, settings: Settings, events: list[dict[str, Any]], max_history: int = 200
) -> int:
    """Merges new events into their users' documents.

    Read-modify-write in Python (the cluster may have no scripting): ``mget`` the users, merge
    with :func:`merge_history`, and write back with optimistic concurrency (``if_seq_no`` /
    ``if_primary_term``, or ``create`` for new users). A user changed by a concurrent writer in
    between comes back as a conflict and is read and merged again.

    Args:
        client: The Elasticsearch client.
        settings: Names the users index (created if missing).
        events: Newly written event documents (as :func:`vecrank.ingest.events.parse_event`
            makes them); pass each event once, since ``n_events`` counts what it is given
            unless the event is still in the stored history.
        max_history: How many interactions to keep per user.

    Returns:
        How many user documents were written.

    Raises:
        VecrankError: A user document could not be written (other than a conflict), or
            conflicts persisted after several attempts.
    """
    if not events:
        return 0
    index = ensure_users_index(client, settings)
    by_user: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append(event)

    def merge(todo: list[str]) -> tuple[int, list[str], list[str]]:
        stored = _fetch_users(client, index, todo)
        now_ms = int(time.time() * 1000)
        actions = []
        for user_id in todo:
            source, seq_no, primary_term = stored.get(user_id, (None, None, None))
            doc = merge_history(source, by_user[user_id], max_history=max_history, now_ms=now_ms)
            action: dict[str, Any] = {"_index": index, "_id": user_id, "_source": doc}
            if source is None:
                action["_op_type"] = "create"
            else:
                action.update(_op_type="index", if_seq_no=seq_no, if_primary_term=primary_term)
            actions.append(action)
        return _write(client, actions)

    return _until_settled(index, sorted(by_user), merge, "written")


def rebuild_users(client: Elasticsearch, settings: Settings, user_ids: Iterable[str], *, max_history: int = 200) -> int:
    """Sets each user's document to exactly what the events index implies: the newest
    ``max_history`` interactions (impressions are not history), their count and the newest one's
    time; the other fields (profile, state) are kept.

    The repair path: whatever interrupted an earlier batch (a timeout after the bulk, a killed
    process), the events are in the events index, and this brings their users up to date; it is
    idempotent. The events index is refreshed first, so that what was just written is read; each
    write is conditional on the user document read before the events (``if_seq_no``), so a
    concurrent merge is never overwritten by an older read: a conflict reads again.

    Returns:
        How many user documents were written.

    Raises:
        VecrankError: A user document could not be written, or kept changing concurrently.
    """
    todo = sorted({str(u) for u in user_ids})
    if not todo:
        return 0
    index, events = ensure_users_index(client, settings), settings.index("events")
    if not client.indices.exists(index=events):
        return 0
    client.indices.refresh(index=events)

    def rebuild(todo: list[str]) -> tuple[int, list[str], list[str]]:
        written, conflicts, errors = 0, [], []
        for start in range(0, len(todo), _REBUILD_CHUNK):
            chunk = todo[start : start + _REBUILD_CHUNK]
            stored = _fetch_users(client, index, chunk)  # before the events: see the docstring
            searches: list[dict[str, Any]] = []
            for user_id in chunk:
                searches += [
                    {"index": events},
                    {
                        "size": max_history,
                        "track_total_hits": True,
                        "_source": list(_HISTORY_KEYS),
                        "query": {
                            "bool": {
                                "filter": [{"term": {"user_id": user_id}}],
                                "must_not": [{"term": {"type": IMPRESSION}}],
                            }
                        },
                        "sort": [{"timestamp": "desc"}, {"event_id": "desc"}],
                    },
                ]
            responses = client.msearch(searches=searches)["responses"]
            now_ms = int(time.time() * 1000)
            actions = []
            for user_id, resp in zip(chunk, responses):
                if "error" in resp:
                    raise VecrankError(f"cannot read the events of user {user_id!r} from {events}: {resp['error']}")
                history = [_history_entry(h["_source"]) for h in resp["hits"]["hits"]]
                doc = {
                    "user_id": user_id,
                    "history": history,
                    "n_events": int(resp["hits"]["total"]["value"]),
                    "last_event_at": int(history[0]["timestamp"]) if history else None,
                    "updated_at": now_ms,
                }
                if user_id in stored:
                    _, seq_no, primary_term = stored[user_id]
                    actions.append(
                        {
                            "_op_type": "update",
                            "_index": index,
                            "_id": user_id,
                            "doc": doc,
                            "if_seq_no": seq_no,
                            "if_primary_term": primary_term,
                        }
                    )
                elif history:
                    actions.append({"_op_type": "create", "_index": index, "_id": user_id, "_source": doc})
            done, chunk_conflicts, chunk_errors = _write(client, actions)
            written += done
            conflicts += chunk_conflicts
            errors += chunk_errors
        return written, conflicts, errors

    return _until_settled(index, todo, rebuild, "rebuilt")


def event_users(client: Elasticsearch, settings: Settings) -> list[str]:
    """Every user id in the events index (a composite aggregation, page by page)."""
    events = settings.index("events")
    if not client.indices.exists(index=events):
        return []
    users: list[str] = []
    after = None
    while True:
        composite: dict[str, Any] = {"size": 1000, "sources": [{"user": {"terms": {"field": "user_id"}}}]}
        if after is not None:
            composite["after"] = after
        resp = client.search(index=events, size=0, aggs={"users": {"composite": composite}})
        agg = resp["aggregations"]["users"]
        users += [b["key"]["user"] for b in agg["buckets"]]
        after = agg.get("after_key")
        if not agg["buckets"] or after is None:
            return users


def _until_settled(
    index: str, todo: list[str], attempt: Callable[[list[str]], tuple[int, list[str], list[str]]], done: str
) -> int:
    """Runs ``attempt`` on the users ``todo`` and again on those that conflicted, at most
    :data:`_CONFLICT_ATTEMPTS` times; how many user documents were written in all.

    ``attempt`` writes its users conditionally and returns (how many were written, the ids that
    conflicted, the errors); any error raises, naming what was not ``done`` ("written", "rebuilt")."""
    written = 0
    for _attempt in range(_CONFLICT_ATTEMPTS):
        count, conflicts, errors = attempt(todo)
        written += count
        if errors:
            raise VecrankError(
                f"{len(errors)} user document(s) in {index} could not be {done}; " f"first: {errors[0]}"[:1000]
            )
        if not conflicts:
            return written
        logger.debug("%d user(s) changed concurrently; trying them again", len(conflicts))
        todo = sorted(conflicts)
    raise VecrankError(
        f"users {', '.join(todo[:5])} in {index} kept changing concurrently; "
        f"gave up after {_CONFLICT_ATTEMPTS} attempts"
    )


def _write(client: Elasticsearch, actions: list[dict[str, Any]]) -> tuple[int, list[str], list[str]]:
    """Conditional user writes: (how many were written, the ids that conflicted, the errors)."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch.helpers import streaming_bulk

    written, conflicts, errors = 0, [], []
    for ok, result in streaming_bulk(
        client, actions, raise_on_error=False, max_retries=5, initial_backoff=1.0, max_backoff=30.0
    ):
        info = next(iter(result.values()))
        if ok:
            written += 1
        elif info.get("status") == 409:
            conflicts.append(info["_id"])
        else:
            errors.append(f"{info['_id']}: {info.get('error')}")
    return written, conflicts, errors


def _fetch_users(client: Elasticsearch, index: str, ids: list[str]) -> dict[str, tuple[dict[str, Any], int, int]]:
    found: dict[str, tuple[dict[str, Any], int, int]] = {}
    for start in range(0, len(ids), _MGET_CHUNK):
        response = client.mget(index=index, ids=ids[start : start + _MGET_CHUNK])
        for doc in response["docs"]:
            if "error" in doc:
                raise VecrankError(f"cannot read user {doc['_id']!r} from {index}: {doc['error']}")
            if doc.get("found"):
                found[doc["_id"]] = (doc["_source"], doc["_seq_no"], doc["_primary_term"])
    return found


def get_history(client: Elasticsearch, settings: Settings, user_id: str) -> list[dict[str, Any]]:
    """A user's stored interactions, newest first.

    Args:
        client: The Elasticsearch client.
        settings: Names the users index.
        user_id: The user.

    Returns:
        ``[{event_id, item_id, type, value, timestamp}, ...]`` (timestamp in epoch ms); empty
        for an unknown user or when the users index does not exist yet.
    """
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import NotFoundError

    try:
        doc = client.get(index=settings.index("users"), id=str(user_id), source_includes=["history"])
    except NotFoundError:
        return []
    return list((doc.get("_source") or {}).get("history") or [])
