"""Events, user histories and item signals, against the real test cluster, with hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from esfakes import FlakyBulkClient

from vecrank.errors import VecrankError
from vecrank.ingest.events import (
    EventTypes,
    event_id,
    events_mapping,
    ingest_events,
    parse_event,
    parse_timestamp,
)
from vecrank.ingest.records import BadRecord, Record
from vecrank.ingest.signals import (
    DAY_MS,
    events_until_query,
    item_signals,
    item_signals_aggs,
    refresh_signals,
    signals_as_of,
    signals_mapping,
    smoothed_ctr,
)
from vecrank.ingest.users import get_history, merge_history
from vecrank.rank.store import refresh_profiles

T = 1_717_200_000_000  # 2024-06-01T00:00:00Z in epoch ms: the main as_of
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


def iso(ms: int) -> str:
    from vecrank.ingest.events import ms_to_datetime

    return ms_to_datetime(ms).isoformat()


def make_items(es, settings, ids: list[str]) -> str:
    """A tiny versioned items index behind its alias, as the catalog ingest would leave it."""
    alias = settings.index("items")
    es.indices.create(
        index=alias + "-v1",
        aliases={alias: {}},
        mappings={"properties": {"item_id": {"type": "keyword"}, "signals": signals_mapping()}},
    )
    for item in ids:
        es.index(index=alias, id=item, document={"item_id": item})
    es.indices.refresh(index=alias)
    return alias


def write_jsonl(path: Path, rows: list[dict | bytes]) -> Path:
    with path.open("wb") as out:
        for row in rows:
            out.write(row if isinstance(row, bytes) else json.dumps(row).encode())
            out.write(b"\n")
    return path


def signals_of(es, settings, item: str) -> dict | None:
    return es.get(index=settings.index("items"), id=item)["_source"].get("signals")


def count_events(es, settings) -> int:
    es.indices.refresh(index=settings.index("events"))
    return es.count(index=settings.index("events"))["count"]


# --------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------


def test_timestamps_in_every_form_name_the_same_instant():
    forms = [
        "2024-06-01T00:00:00Z",
        "2024-06-01T02:00:00+02:00",
        "2024-06-01T00:00:00",
        1717200000,
        1717200000.0,
        "1717200000",
        1717200000000,
        "1717200000000",
        "2024-06-01T00:00:00.000+00:00",
    ]
    assert {parse_timestamp(f) for f in forms} == {T}
    assert parse_timestamp("2024-06-01T00:00:00.123Z") == T + 123
    assert parse_timestamp(1717200000.5) == T + 500
    for bad in ["yesterday", "", None, True, float("nan"), [1], 10**20, "-1e30"]:
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_event_types_round_trip_and_validation():
    types = EventTypes(
        weights={"view": 0, "like": 2, "dislike": 1.5},
        negative={"dislike"},
        impression="view",
        click="like",
        rating=None,
    )
    data = types.to_dict()
    assert data == {
        "weights": {"view": 0.0, "like": 2.0, "dislike": 1.5},
        "negative": ["dislike"],
        "impression": "view",
        "click": "like",
        "rating": None,
    }
    assert EventTypes.from_dict(json.loads(json.dumps(data))) == types
    assert types.weight("dislike") == -1.5 and types.weight("nope") == 0.0
    assert EventTypes().to_dict()["weights"] == {"impression": 0, "click": 1, "cart": 2, "purchase": 3, "rating": 1}
    with pytest.raises(ValueError, match="negative"):
        EventTypes(weights={"click": 1}, negative={"dislike"})
    with pytest.raises(ValueError, match="weights"):
        EventTypes(weights={"click": -1})


def test_parse_event_names_the_column_and_reason():
    types = EventTypes()
    columns = {"user": "userId", "item": "movieId", "value": "rating"}

    def parse(data):
        return parse_event(Record("r.csv", 7, data), event_types=types, columns=columns, default_type="rating")

    good = parse({"userId": "1", "movieId": 31.0, "rating": "2.5", "timestamp": "1260759144"})
    assert good == {
        "event_id": event_id("1", "31", "rating", 1260759144000, None, 2.5),
        "user_id": "1",
        "item_id": "31",
        "type": "rating",
        "timestamp": 1260759144000,
        "value": 2.5,
    }
    bad = parse({"userId": "1", "movieId": "31", "rating": "", "timestamp": "1"})
    assert isinstance(bad, BadRecord)
    assert (bad.source, bad.line, bad.field, bad.reason) == ("r.csv", 7, "rating", "missing value")
    assert parse({"userId": "1", "movieId": "31", "rating": "x", "timestamp": "1"}).reason == "non-numeric value"
    assert parse({"movieId": "31", "rating": "1", "timestamp": "1"}).field == "userId"
    unknown = parse({"userId": "1", "movieId": "31", "rating": "1", "timestamp": "1", "type": "like"})
    assert unknown.reason == "unknown event type" and "'like'" in unknown.detail and "purchase" in unknown.detail
    # Same event, value spelled differently: same id, so a replay is a duplicate.
    assert event_id("u", "i", "rating", 5, None, 4) == event_id("u", "i", "rating", 5, None, 4.0)
    assert event_id("u", "i", "rating", 5, None, 4) != event_id("u", "i", "rating", 5, "req", 4)


def test_query_bodies_are_plain_dicts():
    assert events_until_query(T) == {"range": {"timestamp": {"lte": T, "format": "epoch_millis"}}}
    types = EventTypes(weights={"impression": 0, "click": 1, "purchase": 3}, rating=None)
    body = item_signals_aggs(T, types, windows=(1,), page_size=10, after={"item": "i9"})
    assert body["query"] == events_until_query(T)
    items = body["aggs"]["items"]
    assert items["composite"] == {
        "size": 10,
        "sources": [{"item": {"terms": {"field": "item_id"}}}],
        "after": {"item": "i9"},
    }
    assert items["aggs"]["windows"] == {
        "date_range": {
            "field": "timestamp",
            "format": "epoch_millis",
            "keyed": True,
            "ranges": [{"key": "1d", "from": T - DAY_MS}],
        },
        # impressions never count in popularity
        "aggs": {
            "by_type": {
                "filters": {
                    "filters": {"click": {"term": {"type": "click"}}, "purchase": {"term": {"type": "purchase"}}}
                }
            }
        },
    }
    assert "rating" not in items["aggs"]
    assert smoothed_ctr(3, 10, 20.0, 0.1) == pytest.approx(5 / 30)
    assert smoothed_ctr(0, 0, 0.0, 0.3) == 0.3


def test_merge_history_dedupes_and_keeps_the_newest():
    def ev(n, ts):
        return {
            "event_id": f"e{n}",
            "user_id": "u",
            "item_id": f"i{n}",
            "type": "click",
            "value": None,
            "timestamp": ts,
        }

    doc = merge_history(None, [ev(1, 10), ev(2, 30), ev(3, 20)], max_history=2, now_ms=99)
    assert [h["event_id"] for h in doc["history"]] == ["e2", "e3"]
    assert (doc["n_events"], doc["last_event_at"], doc["updated_at"], doc["user_id"]) == (3, 30, 99, "u")
    again = merge_history(doc, [ev(2, 30), ev(4, 5)], max_history=2, now_ms=100)
    assert [h["event_id"] for h in again["history"]] == ["e2", "e3"]  # e4 is older than both
    assert again["n_events"] == 4 and again["last_event_at"] == 30


# --------------------------------------------------------------------------------------------
# Against the cluster
# --------------------------------------------------------------------------------------------


def test_malformed_rows_unknown_items_and_replays(es, settings_for, tmp_path):
    make_items(es, settings_for, ["i1", "i2"])
    path = write_jsonl(
        tmp_path / "events.jsonl",
        [
            {"user": "u1", "item": "i1", "type": "click", "timestamp": "2024-06-01T00:00:00Z"},  # 1 ok
            {"user": "u1", "item": "i1", "type": "click", "timestamp": "yesterday"},  # 2
            {"item": "i1", "type": "click", "timestamp": T},  # 3
            {"user": "u1", "item": "i1", "type": "like", "timestamp": T},  # 4
            b'{"user": "u\xff", "item": "i1", "type": "click", "timestamp": 1717200000}',  # 5
            {"user": "u1", "item": "i2", "type": "rating", "value": "abc", "timestamp": T},  # 6
            {"user": "u1", "item": "nope", "type": "click", "timestamp": T},  # 7
            {"user": "u2", "item": "i2", "type": "rating", "value": 4, "timestamp": 1717200000},  # 8 ok
            # An id over 512 UTF-8 bytes (Elasticsearch's limit on the users' document ids) is refused.
            {"user": "x" * 40000, "item": "i1", "type": "click", "timestamp": T},  # 9
        ],
    )
    dead = tmp_path / "dead.jsonl"

    first = ingest_events(
        es, settings_for, path, dead_letter_path=dead, progress=False, refresh_states=refresh_profiles
    )
    assert (first.read, first.written, first.duplicates_skipped, first.unknown_items, first.failed) == (9, 2, 0, 1, 6)
    assert first.reconciles()
    assert dict(first.by_type) == {"click": 1, "rating": 1}
    assert count_events(es, settings_for) == 2

    letters = {entry["line"]: entry for entry in map(json.loads, dead.read_text().splitlines())}
    assert sorted(letters) == [2, 3, 4, 5, 6, 7, 9]
    assert all(entry["source"] == str(path) for entry in letters.values())
    assert {n: (e["field"], e["reason"]) for n, e in letters.items()} == {
        2: ("timestamp", "bad timestamp"),
        3: ("user", "missing user"),
        4: ("type", "unknown event type"),
        5: (None, "invalid UTF-8"),
        6: ("value", "non-numeric value"),
        7: ("item", "unknown item"),
        9: ("user", "bad user"),
    }
    assert "'like'" in letters[4]["detail"] and "click" in letters[4]["detail"]
    assert "nope" in letters[7]["detail"]
    assert letters[9]["detail"] == "the id is 40000 bytes in UTF-8; at most 512"

    again = ingest_events(
        es, settings_for, path, dead_letter_path=dead, progress=False, refresh_states=refresh_profiles
    )
    assert (again.written, again.duplicates_skipped, again.unknown_items, again.failed) == (0, first.written, 1, 6)
    assert again.reconciles()
    assert count_events(es, settings_for) == 2
    assert len(get_history(es, settings_for, "u2")) == 1  # the replay added nothing to the history


def test_every_timestamp_form_is_one_event_and_stored_as_epoch_ms(es, settings_for, tmp_path):
    make_items(es, settings_for, ["i1"])
    forms = ["2024-06-01T00:00:00Z", "2024-06-01T02:00:00+02:00", 1717200000, 1717200000000, "1717200000"]
    path = write_jsonl(
        tmp_path / "e.jsonl", [{"user": "u1", "item": "i1", "type": "click", "timestamp": f} for f in forms]
    )
    summary = ingest_events(
        es, settings_for, path, progress=True, refresh_states=refresh_profiles
    )  # the bar goes to stderr
    assert (summary.written, summary.duplicates_skipped) == (1, 4) and summary.reconciles()
    es.indices.refresh(index=settings_for.index("events"))
    hit = es.search(index=settings_for.index("events"), query={"match_all": {}})["hits"]["hits"][0]
    assert hit["_id"] == hit["_source"]["event_id"] == event_id("u1", "i1", "click", T, None, None)
    assert hit["_source"]["timestamp"] == T
    mapping = es.indices.get_mapping(index=settings_for.index("events"))
    assert next(iter(mapping.values()))["mappings"]["dynamic"] == "strict"
    assert next(iter(mapping.values()))["mappings"]["properties"] == events_mapping()["properties"]


def test_ratings_csv_with_column_mapping_and_default_type(es, settings_for, tmp_path):
    make_items(es, settings_for, ["31", "1029"])
    path = tmp_path / "ratings.csv"
    path.write_text(
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n" "2,31,,1260759185\n"
    )
    dead = tmp_path / "dead.jsonl"
    summary = ingest_events(
        es,
        settings_for,
        path,
        columns={"user": "userId", "item": "movieId", "value": "rating"},
        default_type="rating",
        dead_letter_path=dead,
        progress=False,
        refresh_states=refresh_profiles,
    )
    assert (summary.read, summary.written, summary.failed) == (3, 2, 1) and summary.reconciles()
    letter = json.loads(dead.read_text())
    assert (letter["line"], letter["field"], letter["reason"]) == (4, "rating", "missing value")
    es.indices.refresh(index=settings_for.index("events"))
    hits = es.search(index=settings_for.index("events"), sort=[{"timestamp": "asc"}])["hits"]["hits"]
    docs = [hit["_source"] for hit in hits]
    assert [(d["user_id"], d["item_id"], d["type"], d["value"], d["timestamp"]) for d in docs] == [
        ("1", "31", "rating", 2.5, 1260759144000),
        ("1", "1029", "rating", 3.0, 1260759179000),
    ]


def test_user_history_is_newest_first_and_capped(es, settings_for, tmp_path):
    make_items(es, settings_for, ["a", "b", "c", "d", "e"])
    # Out of order on purpose, and split over several batches.
    stamps = {
        "a": T - 5 * HOUR_MS,
        "b": T - 1 * HOUR_MS,
        "c": T - 4 * HOUR_MS,
        "d": T - 2 * HOUR_MS,
        "e": T - 3 * HOUR_MS,
    }
    path = write_jsonl(
        tmp_path / "u.jsonl",
        [{"user": "u1", "item": item, "type": "click", "timestamp": ts} for item, ts in stamps.items()]
        + [{"user": "u2", "item": "a", "type": "purchase", "timestamp": iso(T)}],
    )
    summary = ingest_events(
        es, settings_for, path, batch_size=2, max_history=3, progress=False, refresh_states=refresh_profiles
    )
    assert summary.written == 6
    history = get_history(es, settings_for, "u1")
    assert [h["item_id"] for h in history] == ["b", "d", "e"]
    assert [h["timestamp"] for h in history] == [T - HOUR_MS, T - 2 * HOUR_MS, T - 3 * HOUR_MS]
    assert set(history[0]) == {"event_id", "item_id", "type", "value", "timestamp"}
    user = es.get(index=settings_for.index("users"), id="u1")["_source"]
    assert (user["n_events"], user["last_event_at"]) == (5, T - HOUR_MS)
    assert get_history(es, settings_for, "u2")[0]["type"] == "purchase"
    assert get_history(es, settings_for, "nobody") == []


def test_unknown_items_need_the_items_index_unless_allowed(es, settings_for, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"user": "u", "item": "zz", "type": "click", "timestamp": T}])
    with pytest.raises(VecrankError, match="does not exist"):
        ingest_events(es, settings_for, path, progress=False, refresh_states=refresh_profiles)
    summary = ingest_events(es, settings_for, path, allow_unknown_items=True, update_users=False, progress=False)
    assert summary.written == 1 and summary.unknown_items == 0
    assert not es.indices.exists(index=settings_for.index("users"))


def test_bulk_429s_are_retried_then_dead_lettered(es, settings_for, tmp_path):
    make_items(es, settings_for, ["i1"])
    rows = [{"user": f"u{n}", "item": "i1", "type": "click", "timestamp": T + n} for n in range(4)]
    ids = [event_id(f"u{n}", "i1", "click", T + n, None, None) for n in range(4)]

    flaky = FlakyBulkClient(es, {ids[1]: 2, ids[3]: 1})
    summary = ingest_events(
        flaky,
        settings_for,
        write_jsonl(tmp_path / "a.jsonl", rows),
        progress=False,
        max_retries=3,
        initial_backoff=0.01,
        max_backoff=0.02,
        refresh_states=refresh_profiles,
    )
    assert (flaky.rejected, summary.written, summary.failed) == (3, 4, 0) and summary.reconciles()

    more = [{"user": "z", "item": "i1", "type": "cart", "timestamp": T}]
    flaky = FlakyBulkClient(es, {event_id("z", "i1", "cart", T, None, None): 5})
    dead = tmp_path / "dead.jsonl"
    summary = ingest_events(
        flaky,
        settings_for,
        write_jsonl(tmp_path / "b.jsonl", more),
        progress=False,
        dead_letter_path=dead,
        max_retries=1,
        initial_backoff=0.01,
        max_backoff=0.02,
        refresh_states=refresh_profiles,
    )
    assert (flaky.rejected, summary.written, summary.failed) == (2, 0, 1) and summary.reconciles()
    letter = json.loads(dead.read_text())
    assert (letter["line"], letter["reason"]) == (1, "rejected by Elasticsearch (HTTP 429) after retries")
    assert letter["detail"].startswith("es_rejected_execution_exception")
    assert count_events(es, settings_for) == 4


def _signal_events() -> list[dict]:
    """Events at known offsets from T; see test_signals_as_of for the expected numbers."""
    rows = []

    def add(user, item, kind, at, value=None):
        row = {"user": user, "item": item, "type": kind, "timestamp": at}
        if value is not None:
            row["value"] = value
        rows.append(row)

    for k in range(1, 11):
        add(f"w{k}", "i1", "impression", T - 12 * HOUR_MS - k * MINUTE_MS)
    add("u1", "i1", "click", T - 12 * HOUR_MS)
    add("u2", "i1", "click", T - 3 * DAY_MS)
    add("u3", "i1", "click", T - 10 * DAY_MS)
    add("u4", "i1", "purchase", T - 20 * DAY_MS)
    add("u5", "i1", "impression", T + HOUR_MS)  # after as_of
    add("u5", "i1", "click", T + HOUR_MS)  # after as_of
    for k in range(1, 31):
        add(f"v{k}", "i2", "impression", T - DAY_MS - k * MINUTE_MS)
    add("u1", "i2", "click", T - 40 * DAY_MS)
    add("u2", "i2", "rating", T - 2 * DAY_MS, 4)
    add("u3", "i2", "rating", T - 5 * DAY_MS, 5)
    add("u1", "i3", "click", T + DAY_MS)  # after as_of, exactly on the 1-day window's edge later
    add("u2", "i4", "cart", T - 6 * DAY_MS)
    add("u5", "i4", "rating", T - 40 * DAY_MS, 2)
    add("u6", "i4", "click", T)  # exactly at as_of: included
    # ISO for some rows, epoch seconds for others: both must land on the same instants.
    for n, row in enumerate(rows):
        if n % 3 == 0:
            row["timestamp"] = iso(row["timestamp"])
        elif n % 3 == 1 and row["timestamp"] % 1000 == 0:
            row["timestamp"] = row["timestamp"] // 1000
    return rows


def test_signals_as_of(es, settings_for, tmp_path):
    make_items(es, settings_for, ["i1", "i2", "i3", "i4", "i5"])
    ingested = ingest_events(
        es,
        settings_for,
        write_jsonl(tmp_path / "e.jsonl", _signal_events()),
        progress=False,
        refresh_states=refresh_profiles,
    )
    assert ingested.written == 53 and ingested.reconciles()
    # An event for an item the catalog does not have: refresh must skip and count it.
    ghost = ingest_events(
        es,
        settings_for,
        write_jsonl(tmp_path / "g.jsonl", [{"user": "u1", "item": "ghost", "type": "cart", "timestamp": T - DAY_MS}]),
        allow_unknown_items=True,
        progress=False,
        refresh_states=refresh_profiles,
    )
    assert ghost.written == 1
    es.indices.refresh(index=settings_for.index("events"))

    # --- as_of T: 40 impressions and 5 clicks up to T, so the prior is 5/40 = 0.125.
    summary = refresh_signals(es, settings_for, as_of=iso(T))
    assert (summary.events_seen, summary.items_updated, summary.items_reset, summary.items_missing) == (51, 3, 2, 1)
    assert summary.global_ctr == pytest.approx(0.125)
    assert summary.as_of.isoformat() == "2024-06-01T00:00:00+00:00"
    es.indices.refresh(index=settings_for.index("items"))
    assert signals_of(es, settings_for, "i1") == pytest.approx(
        {
            "impressions": 10,
            "clicks": 3,
            "ctr": (3 + 20 * 0.125) / (10 + 20),
            "popularity_1d": 1.0,
            "popularity_7d": 2.0,
            "popularity_30d": 3 + 3.0,
            "popularity_365d": 6.0,
            "trend": math.log1p(2.0) - math.log1p(6.0 * 7 / 30),
            # 30-day popularity: i1 6, i4 3, then "ghost" and i2 at 2 (a tie: by id). Excess of
            # the 7 days over the 30-day rate: i4 2.3, ghost and i2 2 - 14/30 (tie), i1 0.6. The
            # ghost item is not in the catalog but has events: it takes its place in the ranks.
            "popular_rank": 1,
            "trending_rank": 4,
            "interactions": 4,
            "first_interaction": T - 20 * DAY_MS,
            "last_interaction": T - 12 * HOUR_MS,
            "rating_mean": None,
            "rating_count": 0,
        }
    )
    assert signals_of(es, settings_for, "i2") == pytest.approx(
        {
            "impressions": 30,
            "clicks": 1,
            "ctr": (1 + 2.5) / 50,
            "popularity_1d": 0.0,
            "popularity_7d": 2.0,
            "popularity_30d": 2.0,
            "popularity_365d": 3.0,  # the click at T - 40 days counts in the year only
            "trend": math.log1p(2.0) - math.log1p(2.0 * 7 / 30),
            "popular_rank": 4,
            "trending_rank": 3,
            "interactions": 3,
            "first_interaction": T - 40 * DAY_MS,
            "last_interaction": T - 2 * DAY_MS,
            "rating_mean": 4.5,
            "rating_count": 2,
        }
    )
    assert signals_of(es, settings_for, "i4") == pytest.approx(
        {
            "impressions": 0,
            "clicks": 1,
            "ctr": (1 + 2.5) / 20,
            "popularity_1d": 1.0,
            "popularity_7d": 1 + 2.0,
            "popularity_30d": 3.0,
            "popularity_365d": 3.0 + 1.0,
            "trend": math.log1p(3.0) - math.log1p(3.0 * 7 / 30),
            "popular_rank": 2,
            "trending_rank": 1,
            "interactions": 3,
            "first_interaction": T - 40 * DAY_MS,
            "last_interaction": T,
            "rating_mean": 2.0,
            "rating_count": 1,
        }
    )
    # No events up to as_of (i3's only event is after it): the reset values, CTR at the prior.
    reset_at_t = {
        "impressions": 0,
        "clicks": 0,
        "ctr": 0.125,
        "popularity_1d": 0.0,
        "popularity_7d": 0.0,
        "popularity_30d": 0.0,
        "popularity_365d": 0.0,
        "trend": 0.0,
        "popular_rank": None,
        "trending_rank": None,
        "interactions": 0,
        "first_interaction": None,
        "last_interaction": None,
        "rating_mean": None,
        "rating_count": 0,
    }
    assert signals_of(es, settings_for, "i3") == pytest.approx(reset_at_t)
    assert signals_of(es, settings_for, "i5") == pytest.approx(reset_at_t)
    assert signals_as_of(es, settings_for) == T  # recorded once, on the index
    # A read of the past computes exactly what the refresh wrote, without writing.
    written = {i: signals_of(es, settings_for, i) for i in ("i1", "i2", "i3", "i4", "i5")}
    assert item_signals(es, settings_for, list(written), as_of=T) == written

    # Same as_of again: nothing changes, Elasticsearch reports no-ops.
    same = refresh_signals(es, settings_for, as_of=T)
    assert (same.items_updated, same.items_reset, same.items_unchanged) == (3, 2, 5)

    # --- as_of T + 2 days: the later events count now. 41 impressions, 7 clicks.
    later = refresh_signals(es, settings_for, as_of=T + 2 * DAY_MS)
    prior = 7 / 41
    assert later.global_ctr == pytest.approx(prior) and later.items_updated == 4
    es.indices.refresh(index=settings_for.index("items"))
    i3 = signals_of(es, settings_for, "i3")
    assert i3 == pytest.approx(
        {
            "impressions": 0,
            "clicks": 1,
            "ctr": (1 + 20 * prior) / 20,
            "popularity_1d": 1.0,
            "popularity_7d": 1.0,
            "popularity_30d": 1.0,  # T+1d sits on the window's start
            "popularity_365d": 1.0,
            "trend": math.log1p(1.0) - math.log1p(7 / 30),
            "popular_rank": 5,
            "trending_rank": 4,
            "interactions": 1,
            "first_interaction": T + DAY_MS,
            "last_interaction": T + DAY_MS,
            "rating_mean": None,
            "rating_count": 0,
        }
    )
    i1 = signals_of(es, settings_for, "i1")
    # Interactions are every event but impressions, up to as_of: i1's click an hour after T counts now.
    assert (i1["impressions"], i1["clicks"], i1["interactions"], i1["last_interaction"]) == (11, 4, 5, T + HOUR_MS)
    assert (i1["popularity_1d"], i1["popularity_7d"], i1["popularity_30d"], i1["popularity_365d"]) == (
        0.0,
        3.0,
        4 + 3.0,
        4 + 3.0,
    )
    assert signals_of(es, settings_for, "i4")["popularity_1d"] == 0.0
    # 30 days: i1 7, i4 3, ghost 2, i2 2 (its T-5d rating sits on the 7-day window's start), i3 1.
    # Excess: ghost = i2 = 2 - 14/30, i1 3 - 49/30, i3 1 - 7/30, i4 1 - 21/30.
    ranks = {
        i: (s["popular_rank"], s["trending_rank"])
        for i, s in ((i, signals_of(es, settings_for, i)) for i in ("i1", "i2", "i3", "i4", "i5"))
    }
    assert ranks == {"i1": (1, 3), "i2": (4, 2), "i3": (5, 4), "i4": (2, 5), "i5": (None, None)}

    # --- as_of T - 30 days: only the two events at T - 40 days exist; i1 and i3 are reset.
    earlier = refresh_signals(es, settings_for, as_of=T - 30 * DAY_MS)
    assert (earlier.events_seen, earlier.global_ctr) == (2, 0.0)
    assert (earlier.items_updated, earlier.items_reset, earlier.items_missing) == (2, 3, 0)
    es.indices.refresh(index=settings_for.index("items"))
    reset = {
        "impressions": 0,
        "clicks": 0,
        "ctr": 0.0,
        "popularity_1d": 0.0,
        "popularity_7d": 0.0,
        "popularity_30d": 0.0,
        "popularity_365d": 0.0,
        "trend": 0.0,
        "popular_rank": None,
        "trending_rank": None,
        "interactions": 0,
        "first_interaction": None,
        "last_interaction": None,
        "rating_mean": None,
        "rating_count": 0,
    }
    assert signals_of(es, settings_for, "i1") == reset
    assert signals_of(es, settings_for, "i3") == reset
    assert signals_of(es, settings_for, "i2") == pytest.approx(
        {
            "impressions": 0,
            "clicks": 1,
            "ctr": 1 / 20,
            "popularity_1d": 0.0,
            "popularity_7d": 0.0,
            "popularity_30d": 1.0,
            "popularity_365d": 1.0,
            "trend": -math.log1p(7 / 30),
            # i2 and i4 tie on popularity (by id); no excess over the 30-day rate, so no trending rank.
            "popular_rank": 1,
            "trending_rank": None,
            "interactions": 1,
            "first_interaction": T - 40 * DAY_MS,
            "last_interaction": T - 40 * DAY_MS,
            "rating_mean": None,
            "rating_count": 0,
        }
    )
    assert signals_of(es, settings_for, "i4") == pytest.approx(
        {
            "impressions": 0,
            "clicks": 0,
            "ctr": 0.0,
            "popularity_1d": 0.0,
            "popularity_7d": 0.0,
            "popularity_30d": 1.0,
            "popularity_365d": 1.0,
            "trend": -math.log1p(7 / 30),
            "popular_rank": 2,
            "trending_rank": None,
            "interactions": 1,
            "first_interaction": T - 40 * DAY_MS,
            "last_interaction": T - 40 * DAY_MS,
            "rating_mean": 2.0,
            "rating_count": 1,
        }
    )
    assert signals_of(es, settings_for, "i5") == reset


def test_refresh_without_events_index_only_resets(es, settings_for):
    make_items(es, settings_for, ["a"])
    es.update(index=settings_for.index("items"), id="a", doc={"signals": {"clicks": 4}}, refresh=True)
    summary = refresh_signals(es, settings_for, as_of=T, prior_strength=0.0)
    assert (summary.events_seen, summary.items_updated, summary.items_reset) == (0, 0, 1)
    es.indices.refresh(index=settings_for.index("items"))
    assert signals_of(es, settings_for, "a")["clicks"] == 0
