"""Signals computed in numpy from an event log (``signals_table``): hand-computed values, then
parity with the Elasticsearch refresh on a real node."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vecrank.ingest.events import EventTypes, ingest_events, iter_events
from vecrank.ingest.signals import (
    DAY_MS,
    DEFAULT_WINDOWS,
    item_signals,
    rank_signals,
    refresh_signals,
    reset_signals,
    signals_mapping,
)
from vecrank.ingest.signals_table import signals_doc, signals_table
from vecrank.interactions import Interactions

A = 1_717_200_000_000  # the as_of of the handcrafted log: 2024-06-01T00:00:00Z
HOUR_MS = 3_600_000
WITH_DISLIKE = EventTypes(
    weights={"impression": 0, "click": 1, "cart": 2, "purchase": 3, "rating": 1, "dislike": 2}, negative={"dislike"}
)


def _log(rows) -> Interactions:
    return Interactions.from_events(
        {"user_id": f"u{n}", "item_id": item, "type": kind, "value": value, "timestamp": ts}
        for n, (item, kind, ts, value) in enumerate(rows)
    )


def _matches(got: dict, want: dict) -> bool:
    """Same keys; ints and None exactly (type included); floats to 1e-15 (math.log1p and np.log1p
    may differ in the last bit)."""
    assert set(got) == set(want)
    for field, value in want.items():
        if isinstance(value, float):
            assert type(got[field]) is float, field
            assert math.isclose(got[field], value, rel_tol=1e-15, abs_tol=1e-300), field
        else:
            assert got[field] == value and type(got[field]) is type(value), field
    return True


def _handcrafted() -> Interactions:
    rows = (
        [("a", "impression", A - HOUR_MS, None)] * 4
        + [
            ("a", "click", A, None),  # exactly at as_of: counts
            ("a", "purchase", A - 7 * DAY_MS, None),  # on the 7-day window's start: in it
            ("a", "cart", A - 7 * DAY_MS - 1, None),  # a millisecond before it: 30 days only
            ("a", "click", A + 1, None),  # after as_of: invisible
            ("b", "rating", A - 30 * DAY_MS, 4.0),  # on the 30-day window's start
            ("b", "rating", A - 30 * DAY_MS - 1, 5.0),  # before it: a rating, not popularity
            ("b", "click", A - 2 * DAY_MS, None),
            ("d", "dislike", A - DAY_MS, None),
            ("d", "dislike", A - DAY_MS, None),
            ("d", "dislike", A - DAY_MS + 1, None),
            ("d", "click", A - 10 * DAY_MS, None),
            ("e", "cart", A - 20 * DAY_MS, None),
            ("g", "click", A - 2 * DAY_MS, None),  # g's popularity is b's: ties
            ("g", "click", A - 30 * DAY_MS, None),
            ("f", "click", A + DAY_MS, None),  # f has events, none up to as_of
        ]
        + [("c", "impression", A - 3 * DAY_MS, None)] * 6
    )  # shown, never interacted with
    return _log(rows)


def test_handcrafted_log_exact_values():
    log = _handcrafted()
    ids = ["a", "b", "c", "d", "e", "f", "g", "zz"]
    table = signals_table(log, ids, as_of_ms=A, event_types=WITH_DISLIKE)
    docs = {i: signals_doc(table, n) for n, i in enumerate(ids)}
    # 10 impressions and 5 clicks up to as_of (a 1, b 1, d 1, g 2): the prior is 0.5.
    prior = 0.5
    assert _matches(
        docs["a"],
        {
            "impressions": 4,
            "clicks": 1,
            "ctr": (1 + 20 * prior) / (4 + 20),
            "popularity_1d": 1.0,
            "popularity_7d": 1.0 + 3.0,
            "popularity_30d": 4.0 + 2.0,
            "popularity_365d": 6.0,
            "trend": math.log1p(4.0) - math.log1p(6.0 * 7 / 30),
            "popular_rank": 1,
            "trending_rank": 1,
            "interactions": 3,
            "first_interaction": A - 7 * DAY_MS - 1,
            "last_interaction": A,
            "rating_mean": None,
            "rating_count": 0,
        },
    )
    assert _matches(
        docs["b"],
        {
            "impressions": 0,
            "clicks": 1,
            "ctr": (1 + 20 * prior) / 20,
            "popularity_1d": 0.0,
            "popularity_7d": 1.0,
            "popularity_30d": 2.0,
            "popularity_365d": 3.0,  # the 5-star rating a millisecond before the 30 days counts in the year
            "trend": math.log1p(1.0) - math.log1p(2.0 * 7 / 30),
            # b, e and g have 2 in 30 days: ranked by id. b and g also tie on the excess.
            "popular_rank": 2,
            "trending_rank": 2,
            "interactions": 3,
            "first_interaction": A - 30 * DAY_MS - 1,
            "last_interaction": A - 2 * DAY_MS,
            "rating_mean": 4.5,
            "rating_count": 2,
        },
    )
    assert (docs["e"]["popular_rank"], docs["e"]["trending_rank"]) == (3, None)  # 0 - 14/30 is no excess
    assert docs["e"]["trend"] == pytest.approx(-math.log1p(2.0 * 7 / 30), rel=1e-15)
    assert (docs["g"]["popular_rank"], docs["g"]["trending_rank"]) == (4, 3)
    assert docs["g"]["trend"] == docs["b"]["trend"]
    # Impressions alone: counted, but no interaction, no popularity, no rank.
    assert _matches(
        docs["c"],
        {
            "impressions": 6,
            "clicks": 0,
            "ctr": (0 + 20 * prior) / (6 + 20),
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
        },
    )
    # Dislikes weigh -2: popularity goes negative; the trend counts it as 0; no rank.
    assert _matches(
        docs["d"],
        {
            "impressions": 0,
            "clicks": 1,
            "ctr": (1 + 20 * prior) / 20,
            "popularity_1d": -6.0,
            "popularity_7d": -6.0,
            "popularity_30d": -6.0 + 1.0,
            "popularity_365d": -5.0,
            "trend": 0.0,
            "popular_rank": None,
            "trending_rank": None,
            "interactions": 4,
            "first_interaction": A - 10 * DAY_MS,
            "last_interaction": A - DAY_MS + 1,
            "rating_mean": None,
            "rating_count": 0,
        },
    )
    # No events up to as_of (f), or none at all (zz): the reset values, exactly.
    reset = reset_signals(as_of_ms=A, windows=DEFAULT_WINDOWS, prior_strength=20.0, global_ctr=prior)
    assert docs["f"] == docs["zz"] == reset
    assert reset["ctr"] == prior and reset["trend"] == 0.0 and reset["first_interaction"] is None
    assert reset["interactions"] == 0 and type(reset["interactions"]) is int
    # Longs and dates are ints, as the refresh writes them.
    assert all(
        type(docs["a"][f]) is int
        for f in ("impressions", "clicks", "interactions", "popular_rank", "first_interaction")
    )
    assert type(docs["a"]["ctr"]) is float


def test_ranks_do_not_depend_on_the_items_asked():
    log = _handcrafted()
    full = signals_table(log, ["a", "b", "c", "d", "e", "f", "g"], as_of_ms=A, event_types=WITH_DISLIKE)
    some = signals_table(log, ["zz", "g", "b", "g"], as_of_ms=A, event_types=WITH_DISLIKE)
    assert signals_doc(some, 1) == signals_doc(some, 3) == signals_doc(full, 6)
    assert signals_doc(some, 2) == signals_doc(full, 1)
    assert signals_doc(some, 0)["popular_rank"] is None
    assert signals_table(log, [], as_of_ms=A)["ctr"].shape == (0,)


def test_windows_decide_which_signals_exist():
    log = _handcrafted()
    for windows, extra in [
        ((1,), set()),
        ((30,), {"popular_rank"}),
        ((7,), set()),
        ((30, 7), {"trend", "popular_rank", "trending_rank"}),
    ]:
        table = signals_table(log, ["a", "zz"], as_of_ms=A, windows=windows)
        names = set(signals_mapping(windows)["properties"])
        assert set(table) == names
        assert names & {"trend", "popular_rank", "trending_rank"} == extra
        assert set(signals_doc(table, 1)) == set(
            reset_signals(as_of_ms=A, windows=windows, prior_strength=20.0, global_ctr=0.0)
        )
    assert signals_doc(signals_table(log, ["a"], as_of_ms=A, windows=(30,)), 0)["popular_rank"] == 1


def test_as_of_moves_every_number():
    log = _handcrafted()
    # An instant before every event: all reset, prior 0.
    early = signals_table(log, ["a", "b"], as_of_ms=A - 60 * DAY_MS)
    assert signals_doc(early, 0) == reset_signals(
        as_of_ms=0, windows=DEFAULT_WINDOWS, prior_strength=20.0, global_ctr=0.0
    )
    # A millisecond later, a's click at A + 1 counts: in the 1-day window, a clicks twice.
    later = signals_doc(signals_table(log, ["a", "f"], as_of_ms=A + 1, event_types=WITH_DISLIKE), 0)
    assert (later["clicks"], later["popularity_1d"], later["last_interaction"]) == (2, 2.0, A + 1)
    assert later["interactions"] == 4  # impressions never count; the click at A + 1 does now
    assert later["popularity_7d"] == 1.0 + 1.0  # the purchase at A - 7 days has slid out
    # No rating type configured: ratings are neither counted nor averaged.
    no_rating = EventTypes(weights={"impression": 0, "click": 1, "rating": 1}, rating=None)
    b = signals_doc(signals_table(log, ["b"], as_of_ms=A, event_types=no_rating), 0)
    assert (b["rating_count"], b["rating_mean"], b["popularity_30d"]) == (0, None, 2.0)


def test_empty_log_and_bad_arguments():
    empty = Interactions.from_events([])
    doc = signals_doc(signals_table(empty, ["x"], as_of_ms=A, prior_strength=0.0), 0)
    assert doc == reset_signals(as_of_ms=A, windows=DEFAULT_WINDOWS, prior_strength=0.0, global_ctr=0.0)
    with pytest.raises(ValueError, match="windows"):
        signals_table(empty, ["x"], as_of_ms=A, windows=(7, 7))
    with pytest.raises(ValueError, match="prior_strength"):
        signals_table(empty, ["x"], as_of_ms=A, prior_strength=-1)


def test_rank_signals_ranks_among_the_items_given():
    signals = {
        "c": {"popularity_7d": 0.0, "popularity_30d": 3.0},
        "a": {"popularity_7d": 1.0, "popularity_30d": 3.0},
        "b": {"popularity_7d": 5.0, "popularity_30d": 9.0},
        "d": {"popularity_7d": -1.0, "popularity_30d": -2.0},
    }
    rank_signals(signals, (1, 7, 30))
    assert {i: (s["popular_rank"], s["trending_rank"]) for i, s in signals.items()} == {
        "b": (1, 1),
        "a": (2, 2),
        "c": (3, None),
        "d": (None, None),
    }
    only_7 = {"a": {"popularity_7d": 1.0}}
    rank_signals(only_7, (7,))
    assert only_7 == {"a": {"popularity_7d": 1.0}}


# --------------------------------------------------------------------------------------------
# Parity with the refresh, against the real test node
# --------------------------------------------------------------------------------------------

T = 1_717_200_000_000
# Weights that are not sums of powers of two, so that the order of the additions matters.
PARITY_TYPES = EventTypes(
    weights={"impression": 0, "click": 1, "cart": 2.2, "purchase": 3, "rating": 0.7, "dislike": 1.5},
    negative={"dislike"},
)
WINDOWS = (1, 7, 30)
INSTANTS = (T - 21 * DAY_MS, T - 5 * DAY_MS + 7, T)


def _parity_rows(seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = [f"i{n:02d}" for n in range(36)]  # i36..i39 are in the catalog, without events
    kinds = ["impression"] * 5 + ["click"] * 3 + ["cart", "purchase", "rating", "rating", "dislike"]
    rows = []

    def add(item, kind, ts, user=None):
        row = {"user": user or f"u{rng.integers(30)}", "item": item, "type": kind, "timestamp": int(ts)}
        if kind == "rating":
            row["value"] = float(rng.integers(1, 11)) / 2
        rows.append(row)

    for _ in range(420):
        # Skewed toward the first items; i30..i35 get only the events below.
        add(
            items[min(int(rng.exponential(9)), 29)],
            kinds[rng.integers(len(kinds))],
            T + 3 * DAY_MS - rng.integers(0, 63 * DAY_MS),
        )
    # Events on every window's edges at each instant, and just beyond them.
    for t in INSTANTS:
        for k, offset in enumerate(
            (0, 1, -DAY_MS, -DAY_MS - 1, -7 * DAY_MS, -7 * DAY_MS - 1, -30 * DAY_MS, -30 * DAY_MS - 1)
        ):
            add(items[(3 * k + 1) % 36], ["click", "cart", "purchase", "dislike"][k % 4], t + offset)
    # Two items with the same events: tied popularity and excess everywhere.
    for ts in (T - 2 * DAY_MS, T - 6 * DAY_MS, T - 25 * DAY_MS, T - 40 * DAY_MS):
        for item in ("i30", "i31"):
            add(item, "purchase", ts, user="twin")
    # Impressions only.
    for k in range(5):
        add("i32", "impression", T - k * DAY_MS)
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _as_float32(value):
    return None if value is None else float(np.float32(value))


def test_table_equals_the_refresh(es, settings_for, tmp_path):
    catalog = [f"i{n:02d}" for n in range(40)]
    alias = settings_for.index("items")
    es.indices.create(
        index=alias + "-v1",
        aliases={alias: {}},
        mappings={"properties": {"item_id": {"type": "keyword"}, "signals": signals_mapping(WINDOWS)}},
    )
    for item in catalog:
        es.index(index=alias, id=item, document={"item_id": item})
    es.indices.refresh(index=alias)
    rows = _parity_rows()
    summary = ingest_events(
        es,
        settings_for,
        _write_jsonl(tmp_path / "e.jsonl", rows),
        event_types=PARITY_TYPES,
        update_users=False,
        progress=False,
    )
    assert summary.written > 400 and summary.failed == 0
    # Events of an item the catalog lacks count in the prior and the ranks, on both sides.
    ghost = [
        {"user": "u1", "item": "ghost", "type": kind, "timestamp": T - 10 * n * DAY_MS}
        for n, kind in enumerate(["purchase", "click", "impression", "cart"])
    ]
    ingest_events(
        es,
        settings_for,
        _write_jsonl(tmp_path / "g.jsonl", ghost),
        event_types=PARITY_TYPES,
        allow_unknown_items=True,
        update_users=False,
        progress=False,
    )
    es.indices.refresh(index=settings_for.index("events"))
    log = Interactions.from_events(iter_events(es, settings_for))
    assert len(log) == summary.written + len(ghost)

    order = list(np.random.default_rng(1).permutation(catalog))  # the table follows the ids' order
    fields = list(signals_mapping(WINDOWS)["properties"])
    kinds_checked: set[str] = set()
    for as_of in INSTANTS:
        refreshed = refresh_signals(
            es, settings_for, as_of=as_of, windows=WINDOWS, event_types=PARITY_TYPES, page_size=7
        )
        assert refreshed.items_missing == 1 and refreshed.failed == 0
        es.indices.refresh(index=alias)
        written = {
            hit["_id"]: hit["_source"]["signals"]
            for hit in es.search(index=alias, size=100, query={"match_all": {}})["hits"]["hits"]
        }
        assert sorted(written) == catalog
        table = signals_table(log, order, as_of_ms=as_of, windows=WINDOWS, event_types=PARITY_TYPES)
        for n, item in enumerate(order):
            expected, got = signals_doc(table, n), written[item]
            assert set(got) == set(expected) == set(fields), item
            for field in fields:
                mapped = signals_mapping(WINDOWS)["properties"][field]["type"]
                if mapped == "float":
                    assert _as_float32(got[field]) == _as_float32(expected[field]), (as_of, item, field)
                else:
                    assert got[field] == expected[field], (as_of, item, field)
                    assert type(got[field]) is type(expected[field])
                if got[field] is not None:
                    kinds_checked.add(field)
        # The per-item read of the past agrees too, ranks included.
        some = ["i30", "i31", "i01", "i32", "i39", "nope"]
        past = item_signals(es, settings_for, some, as_of=as_of, windows=WINDOWS, event_types=PARITY_TYPES)
        table = signals_table(log, some, as_of_ms=as_of, windows=WINDOWS, event_types=PARITY_TYPES)
        for n, item in enumerate(some):
            expected = signals_doc(table, n)
            assert {f: _as_float32(v) if isinstance(v, float) else v for f, v in past[item].items()} == {
                f: _as_float32(v) if isinstance(v, float) else v for f, v in expected.items()
            }, (as_of, item)
    # Every field took a value somewhere (the comparison was not all None).
    assert kinds_checked == set(fields)
    # Ties: the twins share every number but the ranks, which go by id.
    twins = signals_table(log, ["i30", "i31"], as_of_ms=T, windows=WINDOWS, event_types=PARITY_TYPES)
    a, b = signals_doc(twins, 0), signals_doc(twins, 1)
    ranks = ("popular_rank", "trending_rank")
    assert {f: v for f, v in a.items() if f not in ranks} == {f: v for f, v in b.items() if f not in ranks}
    assert (b["popular_rank"], b["trending_rank"]) == (a["popular_rank"] + 1, a["trending_rank"] + 1)
