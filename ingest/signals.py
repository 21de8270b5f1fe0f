"""Behavioural signals on the items: impressions, clicks, smoothed CTR, windowed popularity,
trend and ranks, ratings.

:func:`refresh_signals` aggregates the events index *as of* an instant and writes the result
into each item's ``signals`` object. Every number is computed from events with
``timestamp <= as_of`` only, the global CTR prior included, so that a refresh as of a past
instant reproduces exactly what was knowable then: offline evaluation with a time split relies
on it. :func:`vecrank.ingest.signals_table.signals_table` computes the same numbers in numpy from an
:class:`~vecrank.interactions.Interactions` log, for replays that read many past instants.

Example:
    >>> smoothed_ctr(clicks=3, impressions=10, prior_strength=20.0, global_ctr=0.1)
    0.16666666666666666
    >>> sorted(signals_mapping()["properties"])[:5]
    ['clicks', 'ctr', 'first_interaction', 'impressions', 'interactions']
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest.eventspec import DATE_FORMAT, EventTypes, ms_to_datetime, parse_timestamp
from vecrank.interactions import DAY_MS
from vecrank.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


__all__ = [
    "SignalsSummary",
    "events_until_query",
    "global_counts_body",
    "item_signals",
    "item_signals_aggs",
    "rank_signals",
    "refresh_signals",
    "signals_as_of",
    "signals_from_bucket",
    "signals_mapping",
    "smoothed_ctr",
]

logger = logging.getLogger(__name__)

DEFAULT_WINDOWS = (1, 7, 30, 365)
_PIT_KEEP_ALIVE = "5m"
# The two windows behind ``trend`` and the ranks.
TREND_RECENT_DAYS, TREND_BASE_DAYS = 7, 30


def has_trend(windows: Sequence[int]) -> bool:
    return TREND_RECENT_DAYS in windows and TREND_BASE_DAYS in windows


def signals_mapping(windows: Sequence[int] = DEFAULT_WINDOWS) -> dict[str, Any]:
    """The mapping of the ``signals`` object inside an items document.

    Fields: ``impressions``, ``clicks``, ``ctr`` (smoothed), ``popularity_<N>d`` per window; with
    the 7- and 30-day windows, ``trend`` (recent popularity against the 30-day rate:
    ``log1p(popularity_7d) - log1p(popularity_30d * 7 / 30)``, a negative popularity counting
    as 0) and ``trending_rank``; with the 30-day window, ``popular_rank``; then
    ``interactions`` (the all-time count of interaction events, every type but impressions:
    what the cold-item exposure policy, :class:`vecrank.rank.exposure.ColdSlots`, reads),
    ``first_interaction``, ``last_interaction``, ``rating_mean``, ``rating_count``.

    Args:
        windows: Popularity windows in days; each gives a ``popularity_<N>d`` field.

    Returns:
        ``{"properties": {...}}``, to be placed under ``mappings.properties.signals``.

    Example:
        >>> [f for f in signals_mapping((1, 7))["properties"] if "rank" in f or f == "trend"]
        []
        >>> [f for f in signals_mapping((7, 30))["properties"] if "rank" in f or f == "trend"]
        ['trend', 'popular_rank', 'trending_rank']
    """
    days = check_windows(windows)
    properties: dict[str, Any] = {
        "impressions": {"type": "long"},
        "clicks": {"type": "long"},
        "ctr": {"type": "float"},
    }
    for n in days:
        properties[f"popularity_{n}d"] = {"type": "float"}
    if has_trend(days):
        properties["trend"] = {"type": "float"}
    if TREND_BASE_DAYS in days:
        properties["popular_rank"] = {"type": "long"}
    if has_trend(days):
        properties["trending_rank"] = {"type": "long"}
    properties |= {
        "interactions": {"type": "long"},
        "first_interaction": {"type": "date", "format": DATE_FORMAT},
        "last_interaction": {"type": "date", "format": DATE_FORMAT},
        "rating_mean": {"type": "float"},
        "rating_count": {"type": "long"},
    }
    return {"properties": properties}


def check_windows(windows: Sequence[int]) -> list[int]:
    days = list(windows)
    if not days or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in days):
        raise ValueError(f"windows must be whole numbers of days >= 1, not {windows!r}")
    if len(set(days)) != len(days):
        raise ValueError(f"windows repeat a value: {windows!r}")
    return days


# --------------------------------------------------------------------------------------------
# Query bodies (pure)
# --------------------------------------------------------------------------------------------


def events_until_query(as_of_ms: int) -> dict[str, Any]:
    """Events at or before ``as_of_ms`` (inclusive): the only events any signal may see.

    Example:
        >>> events_until_query(1000)
        {'range': {'timestamp': {'lte': 1000, 'format': 'epoch_millis'}}}
    """
    return {"range": {"timestamp": {"lte": int(as_of_ms), "format": "epoch_millis"}}}


def _type_filters(types: Sequence[str]) -> dict[str, Any]:
    return {"filters": {"filters": {name: {"term": {"type": name}} for name in types}}}


def popularity_types(event_types: EventTypes) -> list[str]:
    """The types that count in popularity: non-zero weight, impressions excluded."""
    return [name for name in event_types.names if name != event_types.impression and event_types.weight(name) != 0]


def global_counts_body(as_of_ms: int, event_types: EventTypes) -> dict[str, Any]:
    """Search body for the totals behind the CTR prior: impressions and clicks up to as_of.

    Args:
        as_of_ms: The refresh instant, epoch ms.
        event_types: Names the impression and click types.

    Returns:
        Keyword arguments for ``client.search``.
    """
    return {
        "size": 0,
        "track_total_hits": True,
        "query": events_until_query(as_of_ms),
        "aggs": {"by_type": _type_filters([event_types.impression, event_types.click])},
    }


def _windows_agg(as_of_ms: int, event_types: EventTypes, windows: Sequence[int]) -> dict[str, Any] | None:
    counted = popularity_types(event_types)
    if not counted:
        return None
    return {
        "date_range": {
            "field": "timestamp",
            "format": "epoch_millis",  # else a bound like 5000 would be read as a year
            "keyed": True,
            # No upper bound: the query already stops at as_of (inclusive), whereas a
            # date_range "to" would be exclusive.
            "ranges": [{"key": f"{days}d", "from": int(as_of_ms) - days * DAY_MS} for days in check_windows(windows)],
        },
        "aggs": {"by_type": _type_filters(counted)},
    }


def _composite_body(
    as_of_ms: int,
    sub_aggs: dict[str, Any],
    *,
    page_size: int,
    after: dict[str, Any] | None,
    item_ids: Sequence[str] | None,
) -> dict[str, Any]:
    composite: dict[str, Any] = {"size": page_size, "sources": [{"item": {"terms": {"field": "item_id"}}}]}
    if after:
        composite["after"] = after
    query = events_until_query(as_of_ms)
    if item_ids is not None:
        query = {"bool": {"filter": [query, {"terms": {"item_id": list(item_ids)}}]}}
    return {"size": 0, "query": query, "aggs": {"items": {"composite": composite, "aggs": sub_aggs}}}


def item_signals_aggs(
    as_of_ms: int,
    event_types: EventTypes,
    *,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    page_size: int = 500,
    after: dict[str, Any] | None = None,
    item_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One page of the per-item aggregation, as keyword arguments for ``client.search``.

    A composite aggregation over ``item_id`` (paged with ``after``) with, per item: counts of
    impressions and clicks, per-window counts of each popularity type (windows are
    ``[as_of - N days, as_of]``, both ends included), the number of non-impression events (the
    ``interactions`` filter's ``doc_count``) with their earliest and latest timestamps, and the
    mean and count of rating values.

    Args:
        as_of_ms: The refresh instant, epoch ms; the query keeps only events up to it.
        event_types: Type names and which types count in popularity.
        windows: Popularity windows in days.
        page_size: Items per page.
        after: The previous page's ``after_key``.
        item_ids: Only these items (a read of a few items' signals as of a past instant).

    Returns:
        ``{"size": 0, "query": ..., "aggs": {"items": {"composite": ..., "aggs": ...}}}``.
    """
    sub_aggs: dict[str, Any] = {
        "by_type": _type_filters([event_types.impression, event_types.click]),
        # Being shown an item is not interacting with it. The filter's doc_count is the
        # item's interaction count (signals.interactions).
        "interactions": {
            "filter": {"bool": {"must_not": [{"term": {"type": event_types.impression}}]}},
            "aggs": {"first": {"min": {"field": "timestamp"}}, "last": {"max": {"field": "timestamp"}}},
        },
    }
    windows_agg = _windows_agg(as_of_ms, event_types, windows)
    if windows_agg is not None:
        sub_aggs["windows"] = windows_agg
    if event_types.rating is not None:
        sub_aggs["rating"] = {
            "filter": {"term": {"type": event_types.rating}},
            "aggs": {"mean": {"avg": {"field": "value"}}, "n": {"value_count": {"field": "value"}}},
        }
    return _composite_body(as_of_ms, sub_aggs, page_size=page_size, after=after, item_ids=item_ids)


def _popularity_aggs(
    as_of_ms: int, event_types: EventTypes, *, windows: Sequence[int], page_size: int, after: dict[str, Any] | None
) -> dict[str, Any]:
    """Every item's windowed popularity and nothing else: what the ranks need of all items."""
    windows_agg = _windows_agg(as_of_ms, event_types, windows)
    return _composite_body(
        as_of_ms, {"windows": windows_agg} if windows_agg else {}, page_size=page_size, after=after, item_ids=None
    )


def reset_candidates_query() -> dict[str, Any]:
    """Items whose signals a refresh writes when they have no events: every item, so that an
    item without events reads the same (zero counts) whether or not it ever had any."""
    return {"match_all": {}}


# --------------------------------------------------------------------------------------------
# From aggregations to signals (pure)
# --------------------------------------------------------------------------------------------


def smoothed_ctr(clicks: float, impressions: float, prior_strength: float, global_ctr: float) -> float:
    """Click-through rate shrunk toward ``global_ctr`` as if ``prior_strength`` impressions were
    added at that rate: ``(clicks + k * g) / (impressions + k)``.

    With no impressions and no prior the rate is undefined; ``global_ctr`` is returned.
    """
    denominator = impressions + prior_strength
    if denominator <= 0:
        return float(global_ctr)
    return (clicks + prior_strength * global_ctr) / denominator


# The derived numbers are computed by these numpy functions wherever they are computed (one
# item's bucket, the refresh's ranks, signals_table): np.log1p and math.log1p differ in the last
# bit on about 1% of inputs, and parity with the refresh is exact, not approximate.


def trend_of(recent: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``log1p(popularity_7d) - log1p(popularity_30d * 7 / 30)``; negative popularity (negative
    event types) counts as 0, as the rankers' log1p transform clips it."""
    rate = base * TREND_RECENT_DAYS / TREND_BASE_DAYS
    return np.log1p(np.maximum(recent, 0.0)) - np.log1p(np.maximum(rate, 0.0))


def _excess(recent: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``popularity_7d - popularity_30d * 7 / 30``: what trending_rank orders by."""
    return recent - base * TREND_RECENT_DAYS / TREND_BASE_DAYS


def _ranks(score: np.ndarray) -> np.ndarray:
    """1-based ranks by ``score`` descending among the entries with ``score > 0`` (NaN for the
    others); ties keep array order, so the entries must be in ascending item id order."""
    ranks = np.full(len(score), np.nan)
    eligible = np.flatnonzero(score > 0)
    order = eligible[np.argsort(-score[eligible], kind="stable")]
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def rank_columns(recent: np.ndarray | None, base: np.ndarray | None) -> dict[str, np.ndarray]:
    """``popular_rank`` (needs ``base``) and ``trending_rank`` (needs both), aligned with the
    inputs, which hold every item with events in ascending id order."""
    columns: dict[str, np.ndarray] = {}
    if base is not None:
        columns["popular_rank"] = _ranks(base)
        if recent is not None:
            columns["trending_rank"] = _ranks(_excess(recent, base))
    return columns


def _count(aggs: dict[str, Any], name: str) -> int:
    return int(aggs.get("buckets", {}).get(name, {}).get("doc_count", 0))


def _popularity(bucket: dict[str, Any], days: int, event_types: EventTypes) -> float:
    per_type = bucket.get("windows", {}).get("buckets", {}).get(f"{days}d", {}).get("by_type", {})
    return float(sum(event_types.weight(name) * _count(per_type, name) for name in popularity_types(event_types)))


def signals_from_bucket(
    bucket: dict[str, Any],
    *,
    as_of_ms: int,
    event_types: EventTypes,
    windows: Sequence[int],
    prior_strength: float,
    global_ctr: float,
) -> dict[str, Any]:
    """The ``signals`` object of one item from its composite-aggregation bucket.

    The ranks depend on every item and are not set here: :func:`rank_signals` adds them once
    all items' signals are known.

    Args:
        bucket: One bucket of :func:`item_signals_aggs`' ``items`` aggregation.
        as_of_ms: The refresh instant, epoch ms.
        event_types: Weights and type names.
        windows: Popularity windows in days.
        prior_strength: Pseudo-impressions of the CTR prior.
        global_ctr: The prior's rate.

    Returns:
        The signals, timestamps in epoch ms, without ``popular_rank`` and ``trending_rank``.
    """
    impressions = _count(bucket["by_type"], event_types.impression)
    clicks = _count(bucket["by_type"], event_types.click)
    signals: dict[str, Any] = {
        "impressions": impressions,
        "clicks": clicks,
        "ctr": smoothed_ctr(clicks, impressions, prior_strength, global_ctr),
    }
    for days in windows:
        signals[f"popularity_{days}d"] = _popularity(bucket, days, event_types)
    if has_trend(windows):
        signals["trend"] = float(
            trend_of(
                np.array([signals[f"popularity_{TREND_RECENT_DAYS}d"]]),
                np.array([signals[f"popularity_{TREND_BASE_DAYS}d"]]),
            )[0]
        )
    first = bucket["interactions"]["first"]["value"]
    last = bucket["interactions"]["last"]["value"]
    rating = bucket.get("rating", {})
    rating_count = int(rating.get("n", {}).get("value") or 0)
    signals |= {
        "interactions": int(bucket["interactions"]["doc_count"]),
        "first_interaction": int(first) if first is not None else None,
        "last_interaction": int(last) if last is not None else None,
        "rating_mean": rating["mean"]["value"] if rating_count else None,
        "rating_count": rating_count,
    }
    return signals


def rank_signals(signals: Mapping[str, dict[str, Any]], windows: Sequence[int]) -> None:
    """Sets ``popular_rank`` and ``trending_rank`` (as configured) on each item's signals, in
    place, ranking the items of ``signals`` among themselves: pass every item with events.

    Example:
        >>> s = {"b": {"popularity_7d": 1.0, "popularity_30d": 3.0},
        ...      "a": {"popularity_7d": 3.0, "popularity_30d": 3.0}}
        >>> rank_signals(s, (7, 30))
        >>> s["a"]["popular_rank"], s["b"]["popular_rank"], s["a"]["trending_rank"], s["b"]["trending_rank"]
        (1, 2, 1, 2)
    """
    windows = check_windows(windows)
    ids = sorted(signals)

    def column(days: int) -> np.ndarray | None:
        if days not in windows:
            return None
        return np.array([signals[i][f"popularity_{days}d"] for i in ids], dtype=np.float64)

    for name, ranks in rank_columns(column(TREND_RECENT_DAYS), column(TREND_BASE_DAYS)).items():
        for item_id, rank in zip(ids, ranks.tolist(), strict=True):
            signals[item_id][name] = None if rank != rank else int(rank)


def reset_signals(*, as_of_ms: int, windows: Sequence[int], prior_strength: float, global_ctr: float) -> dict[str, Any]:
    """The signals of an item with no events up to as_of: zero counts (``interactions`` 0), CTR
    at the prior, no ranks, no interaction dates."""
    signals: dict[str, Any] = {
        "impressions": 0,
        "clicks": 0,
        "ctr": smoothed_ctr(0, 0, prior_strength, global_ctr),
    }
    signals |= {f"popularity_{days}d": 0.0 for days in windows}
    if has_trend(windows):
        signals["trend"] = 0.0
    if TREND_BASE_DAYS in windows:
        signals["popular_rank"] = None
    if has_trend(windows):
        signals["trending_rank"] = None
    signals |= {
        "interactions": 0,
        "first_interaction": None,
        "last_interaction": None,
        "rating_mean": None,
        "rating_count": 0,
    }
    return signals


# --------------------------------------------------------------------------------------------
# Refresh
# --------------------------------------------------------------------------------------------


@dataclass
class SignalsSummary:
    """What one :func:`refresh_signals` did.

    Attributes:
        as_of: The instant the signals describe (UTC).
        events_seen: Events with ``timestamp <= as_of``.
        global_ctr: Clicks / impressions over those events (0 without impressions).
        items_updated: Items with events whose signals were written (unchanged ones included).
        items_reset: Items with signals from an earlier refresh but no events now, reset.
        items_unchanged: Of the two above, those whose signals were already identical.
        items_missing: Items with events that are not in the items index (skipped).
        failed: Updates Elasticsearch rejected for another reason (logged).
        seconds: Wall time.
    """

    as_of: datetime
    events_seen: int = 0
    global_ctr: float = 0.0
    items_updated: int = 0
    items_reset: int = 0
    items_unchanged: int = 0
    items_missing: int = 0
    failed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (for ``--json``)."""
        return {
            "as_of": self.as_of.isoformat(timespec="milliseconds"),
            "events_seen": self.events_seen,
            "global_ctr": self.global_ctr,
            "items_updated": self.items_updated,
            "items_reset": self.items_reset,
            "items_unchanged": self.items_unchanged,
            "items_missing": self.items_missing,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
        }


def _as_of_ms(as_of: datetime | str | int | float | None) -> int:
    if as_of is None:
        return int(time.time() * 1000)
    if isinstance(as_of, datetime):
        moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        return parse_timestamp(moment.isoformat())
    return parse_timestamp(as_of)


_Search = Callable[[dict[str, Any]], Any]


@contextmanager
def _events_search(client: Elasticsearch, events_index: str) -> Iterator[_Search | None]:
    """A search over one point in time of the events index (None when there is no such index).

    Every search of a refresh or a read goes through it: events indexed meanwhile (late ones may
    still have timestamps <= as_of) must not make the prior and the item pages disagree.
    """
    if not client.indices.exists(index=events_index):
        yield None
        return
    pit = client.open_point_in_time(index=events_index, keep_alive=_PIT_KEEP_ALIVE)["id"]

    def search(body: dict[str, Any]) -> Any:
        nonlocal pit
        response = client.search(pit={"id": pit, "keep_alive": _PIT_KEEP_ALIVE}, **body)
        pit = response.get("pit_id", pit)
        return response

    try:
        yield search
    finally:
        client.close_point_in_time(id=pit)


def _global_counts(search: _Search, as_of_ms: int, event_types: EventTypes) -> tuple[int, float]:
    """Events up to as_of, and the CTR prior: their clicks / impressions (0 without impressions)."""
    totals = search(global_counts_body(as_of_ms, event_types))
    impressions = _count(totals["aggregations"]["by_type"], event_types.impression)
    clicks = _count(totals["aggregations"]["by_type"], event_types.click)
    return int(totals["hits"]["total"]["value"]), clicks / impressions if impressions else 0.0


def _buckets(search: _Search, body: Callable[[dict[str, Any] | None], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every bucket of a paged composite aggregation; ``body(after)`` builds each page."""
    after = None
    while True:
        items = search(body(after))["aggregations"]["items"]
        yield from items["buckets"]
        after = items.get("after_key")
        if not items["buckets"] or after is None:
            return


def _collect_signals(
    search: _Search,
    *,
    as_of_ms: int,
    event_types: EventTypes,
    windows: list[int],
    prior_strength: float,
    global_ctr: float,
    page_size: int,
    item_ids: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Item id -> signals (ranks aside) of every item with events up to as_of (or of ``item_ids``)."""
    return {
        bucket["key"]["item"]: signals_from_bucket(
            bucket,
            as_of_ms=as_of_ms,
            event_types=event_types,
            windows=windows,
            prior_strength=prior_strength,
            global_ctr=global_ctr,
        )
        for bucket in _buckets(
            search,
            lambda after: item_signals_aggs(
                as_of_ms, event_types, windows=windows, page_size=page_size, after=after, item_ids=item_ids
            ),
        )
    }


def refresh_signals(
    client: Elasticsearch,
    settings: Settings,
    *,
    as_of: datetime | str | int | float | None = None,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    prior_strength: float = 20.0,
    event_types: EventTypes | None = None,
    page_size: int = 500,
) -> SignalsSummary:
    """Recomputes every item's ``signals`` from the events up to ``as_of``.

    This is a full recompute, not an incremental one, on purpose: the smoothed CTR of *every*
    item depends on the global click rate, which moves with each refresh; windowed popularity
    must also drop events that slide out of a window; and events may arrive late (a timestamp
    before the previous refresh), which an incremental rule keyed on timestamps would miss.
    The cost is one paged aggregation over the events up to as_of plus one partial update per
    item; updates whose signals did not change are no-ops in Elasticsearch (``detect_noop``).

    The ranks (``popular_rank``, ``trending_rank``) need every item's popularity, so all pages
    of the aggregation are read, into one dict of signals per item with events (about a
    kilobyte each: fine up to a few million items), before anything is written. They rank
    every item with events in the events index, including items the catalog lacks.

    Items not in the items index are skipped and counted. Items without events up to ``as_of``
    get the reset values (zero counts, ``ctr`` at the prior, ``trend`` 0, no ranks, no
    interaction dates, no ``rating_mean``), whether or not they had signals before, so that
    features read the same for both. The instant is recorded once, in the index's ``_meta``, not
    on each item: an item whose numbers did not move is a no-op update and its vector is not
    re-indexed.

    Args:
        client: The Elasticsearch client.
        settings: Names the events index and the items alias.
        as_of: The instant (datetime, ISO 8601 text or epoch seconds/ms); default now. Events
            after it are invisible to every number.
        windows: Popularity windows in days; the items mapping needs a field for each signal
            they give (see :func:`signals_mapping`).
        prior_strength: Pseudo-impressions of the CTR prior (0 disables smoothing).
        event_types: Weights and type names (default :class:`EventTypes()`).
        page_size: Items per composite-aggregation page and per bulk request.

    Returns:
        The :class:`SignalsSummary`.

    Raises:
        VecrankError: The items index does not exist.
        ValueError: Bad ``windows`` or a negative ``prior_strength``.
    """
    event_types = event_types or EventTypes()
    windows = check_windows(windows)
    if prior_strength < 0:
        raise ValueError(f"prior_strength must be >= 0, not {prior_strength!r}")
    as_of_ms = _as_of_ms(as_of)
    items_alias = settings.index("items")
    if not client.indices.exists(index=items_alias):
        raise VecrankError(f"items index {items_alias} does not exist: ingest the catalog first")
    started = time.monotonic()
    summary = SignalsSummary(as_of=ms_to_datetime(as_of_ms))

    collected: dict[str, dict[str, Any]] = {}
    with _events_search(client, settings.index("events")) as search:
        if search is not None:
            summary.events_seen, summary.global_ctr = _global_counts(search, as_of_ms, event_types)
            collected = _collect_signals(
                search,
                as_of_ms=as_of_ms,
                event_types=event_types,
                windows=windows,
                prior_strength=prior_strength,
                global_ctr=summary.global_ctr,
                page_size=page_size,
            )
    rank_signals(collected, windows)
    _write_signals(
        client,
        summary,
        collected,
        items_alias=items_alias,
        as_of_ms=as_of_ms,
        windows=windows,
        prior_strength=prior_strength,
        page_size=page_size,
    )
    _record_as_of(client, items_alias, as_of_ms)

    summary.seconds = time.monotonic() - started
    logger.info(
        "Signals as of %s: %d events, %d items updated (%d unchanged), %d reset, %d missing, "
        "%d failed, global CTR %.4f (%.1fs)",
        summary.as_of.isoformat(),
        summary.events_seen,
        summary.items_updated,
        summary.items_unchanged,
        summary.items_reset,
        summary.items_missing,
        summary.failed,
        summary.global_ctr,
        summary.seconds,
    )
    return summary


def item_signals(
    client: Elasticsearch,
    settings: Settings,
    item_ids: Sequence[str],
    *,
    as_of: datetime | str | int | float,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    prior_strength: float = 20.0,
    event_types: EventTypes | None = None,
) -> dict[str, dict[str, Any]]:
    """The signals a refresh as of ``as_of`` would write on these items, computed without writing.

    Replays and offline evaluation read the past this way: the same aggregation as
    :func:`refresh_signals`, restricted to the items of one request, so that the live index is
    never rewritten to an earlier state and nothing after ``as_of`` is seen. The ranks need
    every item's popularity: with the 30-day window, a second, lighter aggregation reads the
    windowed popularity of all items with events (its cost grows with the number of items, not
    with the request). For many reads over a fixed log, :func:`signals_table` is far cheaper.

    Returns:
        Item id -> signals, for every id asked (items without events get the reset values).
    """
    event_types = event_types or EventTypes()
    windows = check_windows(windows)
    as_of_ms = _as_of_ms(as_of)
    ids = sorted({str(i) for i in item_ids})
    if not ids:
        return {}
    global_ctr = 0.0
    found: dict[str, dict[str, Any]] = {}
    ranked: dict[str, dict[str, Any]] = {}
    with _events_search(client, settings.index("events")) as search:
        if search is not None:
            _, global_ctr = _global_counts(search, as_of_ms, event_types)
            found = _collect_signals(
                search,
                as_of_ms=as_of_ms,
                event_types=event_types,
                windows=windows,
                prior_strength=prior_strength,
                global_ctr=global_ctr,
                page_size=min(len(ids), 1000),
                item_ids=ids,
            )
            if found and TREND_BASE_DAYS in windows:
                ranked = _all_popularity(search, as_of_ms, event_types, windows)
                rank_signals(ranked, windows)
    reset = reset_signals(as_of_ms=as_of_ms, windows=windows, prior_strength=prior_strength, global_ctr=global_ctr)
    rank_names = [name for name in reset if name.endswith("_rank")]
    out = {i: dict(found.get(i, reset)) for i in ids}
    for item_id in found:
        out[item_id] |= {name: ranked[item_id][name] for name in rank_names}
    return out


def _all_popularity(
    search: _Search, as_of_ms: int, event_types: EventTypes, windows: list[int]
) -> dict[str, dict[str, Any]]:
    """Item id -> ``{"popularity_7d": ..., "popularity_30d": ...}`` (those configured) of every
    item with events, computed as :func:`signals_from_bucket` computes them."""
    needed = [days for days in (TREND_RECENT_DAYS, TREND_BASE_DAYS) if days in windows]
    # A page holds about (1 + windows * (1 + types)) buckets per item; stay far below max_buckets.
    return {
        bucket["key"]["item"]: {f"popularity_{days}d": _popularity(bucket, days, event_types) for days in needed}
        for bucket in _buckets(
            search, lambda after: _popularity_aggs(as_of_ms, event_types, windows=needed, page_size=1000, after=after)
        )
    }


def _record_as_of(client: Elasticsearch, items_alias: str, as_of_ms: int) -> None:
    """The refresh instant goes into the index's ``_meta.vecrank.signals_as_of``, once, rather
    than onto every item: an item whose numbers did not move is then a no-op update, and its
    vector is not re-indexed (which would also shift approximate kNN results between runs)."""
    for name, mapping in client.indices.get_mapping(index=items_alias).items():
        meta = mapping["mappings"].get("_meta", {})
        # put_mapping replaces _meta as a whole: write back every key, ours updated.
        meta = {**meta, "vecrank": {**meta.get("vecrank", {}), "signals_as_of": int(as_of_ms)}}
        client.indices.put_mapping(index=name, meta=meta)


def signals_as_of(client: Elasticsearch, settings: Settings) -> int | None:
    """When the items' signals were last computed (epoch ms), or None if never."""
    items_alias = settings.index("items")
    for mapping in client.indices.get_mapping(index=items_alias).values():
        value = mapping["mappings"].get("_meta", {}).get("vecrank", {}).get("signals_as_of")
        if value is not None:
            return int(value)
    return None


def _write_signals(
    client: Elasticsearch,
    summary: SignalsSummary,
    collected: Mapping[str, dict[str, Any]],
    *,
    items_alias: str,
    as_of_ms: int,
    windows: list[int],
    prior_strength: float,
    page_size: int,
) -> None:
    """Updates the items with events (``collected``), then resets every other item."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch.helpers import scan, streaming_bulk

    def item_updates() -> Iterator[dict[str, Any]]:
        for item_id, signals in collected.items():
            yield {"_op_type": "update", "_index": items_alias, "_id": item_id, "doc": {"signals": signals}}

    def resets() -> Iterator[dict[str, Any]]:
        reset = reset_signals(
            as_of_ms=as_of_ms, windows=windows, prior_strength=prior_strength, global_ctr=summary.global_ctr
        )
        for hit in scan(
            client, index=items_alias, query={"query": reset_candidates_query(), "_source": False}, size=1000
        ):
            if hit["_id"] not in collected:
                yield {"_op_type": "update", "_index": items_alias, "_id": hit["_id"], "doc": {"signals": reset}}

    for phase, actions in (("update", item_updates()), ("reset", resets())):
        for ok, result in streaming_bulk(
            client,
            actions,
            chunk_size=page_size,
            raise_on_error=False,
            max_retries=5,
            initial_backoff=1.0,
            max_backoff=30.0,
        ):
            info = next(iter(result.values()))
            if ok:
                if phase == "update":
                    summary.items_updated += 1
                else:
                    summary.items_reset += 1
                summary.items_unchanged += info.get("result") == "noop"
            elif info.get("status") == 404 and phase == "update":
                summary.items_missing += 1
            else:
                summary.failed += 1
                if summary.failed <= 5:
                    logger.warning("Signals of item %s not written: %s", info.get("_id"), info.get("error"))
