"""Offline evaluation blocks: metrics on hand-computed lists, the time split, and the baselines on
tiny datasets whose right answer is known. Pure Python/numpy: no Elasticsearch."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from vecrank.rank.baselines import ALS, CoOccurrence, MostPopular
from vecrank.rank.metrics import (
    bootstrap_ci,
    catalog_coverage,
    evaluate,
    intra_list_diversity,
    mrr,
    ndcg_at_k,
    paired_bootstrap_diff,
    recall_at_k,
)
from vecrank.rank.split import is_positive, time_split, validation_split

DAY = 86_400_000


def ev(user, item, t, kind="click", value=None):
    return {"user_id": user, "item_id": item, "type": kind, "value": value, "timestamp": t}


# --- metrics ------------------------------------------------------------------------------------


def test_ndcg_hand_computed():
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "b", "c"], {"a", "c"}, 3) == pytest.approx(expected)
    # The ideal DCG covers min(|rel|, k) items: one slot, one hit on top -> perfect.
    assert ndcg_at_k(["a", "b", "c"], {"a", "c"}, 1) == pytest.approx(1.0)
    # k=2: hit at 1 only; ideal has two hits.
    assert ndcg_at_k(["a", "b", "c"], {"a", "c"}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["b", "d"], {"a"}, 10) == 0.0
    assert ndcg_at_k([], {"a"}, 10) == 0.0
    assert ndcg_at_k(["a"], set(), 10) == 0.0
    # A repeated relevant item earns its gain once.
    assert ndcg_at_k(["a", "a"], {"a", "c"}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(["a"], {"a"}, 0)


def test_recall_is_hits_over_all_relevant():
    assert recall_at_k(["a", "b", "c"], {"a", "c"}, 3) == pytest.approx(1.0)
    assert recall_at_k(["a", "b", "c"], {"a", "c"}, 2) == pytest.approx(0.5)
    # Standard definition: 1 hit out of 4 relevant at k=2 is 0.25, not 1 / min(4, 2).
    assert recall_at_k(["a", "b"], {"a", "x", "y", "z"}, 2) == pytest.approx(0.25)
    assert recall_at_k(["a", "a", "b"], {"a", "b"}, 2) == pytest.approx(0.5)
    assert recall_at_k(["a"], set(), 5) == 0.0


def test_mrr_first_hit_and_cutoff():
    assert mrr(["b", "c", "a"], {"a", "c"}) == pytest.approx(0.5)
    assert mrr(["b", "d", "a"], {"a"}) == pytest.approx(1 / 3)
    assert mrr(["b", "d", "a"], {"a"}, k=2) == 0.0
    assert mrr(["x"], {"a"}) == 0.0


def test_coverage_and_diversity():
    assert catalog_coverage([["a", "b"], ["b", "c"], []], 10) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        catalog_coverage([["a"]], 0)
    vectors = {"a": [1.0, 0.0], "b": [0.0, 2.0], "c": [1.0, 1.0], "d": [-3.0, 0.0]}
    first = (1.0 + 2 * (1 - 1 / math.sqrt(2))) / 3  # a-b orthogonal, a-c and b-c at 45°
    second = 2.0  # a and d opposite
    lists = [["a", "b", "c"], ["a", "d", "zz"], ["a"], ["zz", "b"]]  # the last two: < 2 vectors, skipped
    assert intra_list_diversity(lists, vectors) == pytest.approx((first + second) / 2)
    assert intra_list_diversity([["a"], []], vectors) is None


def test_evaluate_averages_over_users_with_relevant_items():
    rankings = {"u1": ["a", "b", "c"], "u2": ["x", "y"], "u4": ["a"]}
    relevant = {"u1": {"a", "c"}, "u2": {"y"}, "u3": {"a"}, "u5": set()}  # u3 has no list; u5 nothing relevant
    out = evaluate(rankings, relevant, k_values=(3, 1), catalog_size=10, per_user=True)
    assert out["users"] == 3
    ndcg_u1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert out["ndcg@3"] == pytest.approx((ndcg_u1 + 1 / math.log2(3) + 0) / 3)
    assert out["recall@3"] == pytest.approx((1 + 1 + 0) / 3)
    assert out["recall@1"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert out["mrr@3"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert out["mrr@1"] == pytest.approx(1 / 3)
    assert out["coverage@3"] == pytest.approx(5 / 10)  # u4 is not evaluated: its list does not count
    assert out["coverage@1"] == pytest.approx(2 / 10)
    assert "diversity@3" not in out
    assert out["per_user"]["recall@3"] == {"u1": 1.0, "u2": 1.0, "u3": 0.0}
    empty = evaluate({}, {"u": set()}, k_values=(10,))
    assert empty["users"] == 0 and empty["ndcg@10"] is None


def test_bootstrap_ci_contains_mean_and_shrinks():
    rng = np.random.default_rng(1)
    small = rng.random(50)
    large = rng.random(5000)
    s = bootstrap_ci(small, n=500, seed=0)
    big = bootstrap_ci(large, n=500, seed=0)
    assert s.low < s.mean < s.high and s.mean == pytest.approx(small.mean())
    assert big.low < big.mean < big.high
    assert (big.high - big.low) < (s.high - s.low) / 5  # ~1/sqrt(100) as wide
    assert bootstrap_ci(small, n=500, seed=0) == s  # deterministic
    assert bootstrap_ci({"a": 1.0, "b": 1.0}) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_paired_bootstrap_diff():
    rng = np.random.default_rng(2)
    base = rng.random(400)  # large between-user variance, shared by both systems
    a = {f"u{i}": v + 0.05 for i, v in enumerate(base)}
    b = {f"u{i}": v for i, v in enumerate(base)}
    d = paired_bootstrap_diff(a, b, n=300)
    assert d.mean == pytest.approx(0.05) and d.low == pytest.approx(0.05) and d.high == pytest.approx(0.05)
    noisy = paired_bootstrap_diff(list(base + rng.normal(0.05, 0.1, 400)), list(base), n=300)
    assert noisy.low > 0 and noisy.low < noisy.mean < noisy.high
    same = paired_bootstrap_diff(list(base + rng.normal(0, 0.1, 400)), list(base), n=300)
    assert same.low < 0 < same.high
    with pytest.raises(ValueError, match="same users"):
        paired_bootstrap_diff({"u": 1.0}, {"v": 1.0})


# --- time split -----------------------------------------------------------------------------------


def test_positive_rule():
    assert is_positive(ev("u", "i", 0, "rating", 4.0)) and not is_positive(ev("u", "i", 0, "rating", 3.5))
    assert all(is_positive(ev("u", "i", 0, t)) for t in ("click", "cart", "purchase"))
    assert not is_positive(ev("u", "i", 0, "impression")) and not is_positive(ev("u", "i", 0, "rating", None))


def split_events():
    return [
        ev("u1", "a", 1),
        ev("u1", "b", 2),
        ev("u2", "a", 3),
        ev("u2", "x", 4, "impression"),
        ev("u3", "x", 5, "impression"),
        ev("u1", "c", 7),
        ev("u1", "a", 8, "purchase"),
        ev("u1", "d", 8, "rating", 2.0),
        ev("u2", "a", 9, "cart"),  # u2 liked only an item already seen in train
        ev("u3", "e", 9),
        ev("u4", "f", 10, "rating", 5.0),  # cold: u3 saw only an impression, u4 new
    ]


def test_time_split_rule_and_cold_users():
    events = split_events()
    s = time_split(events, test_fraction=0.5)
    # 11 timestamps; the "higher" 0.5 quantile is the 6th smallest = 7.
    assert s.cutoff_ms == 7
    assert all(e["timestamp"] < s.cutoff_ms for e in s.train)
    assert all(e["timestamp"] >= s.cutoff_ms for e in s.test)
    assert len(s.train) + len(s.test) == len(events)
    assert [e["timestamp"] for e in s.test] == sorted(e["timestamp"] for e in s.test)
    assert s.test_relevant() == {"u1": {"c"}}  # d was rated 2; a and u2's a were seen in train
    assert s.test_relevant(exclude_seen=False) == {"u1": {"a", "c"}, "u2": {"a"}}
    assert s.cold_users() == {"u3": {"e"}, "u4": {"f"}}
    assert s.test_relevant(lambda e: e["type"] == "rating") == {"u1": {"d"}}  # any rating counts here
    assert s.summary()["cold_users"] == 2 and s.summary()["evaluated_users"] == 1
    strict = time_split(events, cutoff_ms=7, min_train=2)
    assert strict.test_relevant() == {"u1": {"c"}} and set(strict.cold_users()) == {"u2", "u3", "u4"}
    # Deterministic, and an explicit end drops the later events.
    assert time_split(list(reversed(events)), test_fraction=0.5).cutoff_ms == 7
    ended = time_split(events, cutoff_ms=7, end_ms=8)
    assert max(e["timestamp"] for e in ended.test) == 8 and len(ended.test) == 3


def test_time_split_validation():
    with pytest.raises(ValueError, match="timestamp"):
        time_split([{"user_id": "u", "item_id": "i", "type": "click"}])
    with pytest.raises(ValueError, match="between 0 and 1"):
        time_split(split_events(), test_fraction=1.0)
    with pytest.raises(ValueError, match="end_ms"):
        time_split(split_events(), cutoff_ms=7, end_ms=5)


def test_validation_split_is_by_time_inside_train():
    train = [ev("u", str(t), t) for t in range(20, 0, -1)]
    earlier, later = validation_split(train, 0.25)
    assert len(earlier) == 15 and len(later) == 5
    assert max(e["timestamp"] for e in earlier) < min(e["timestamp"] for e in later)


# --- baselines --------------------------------------------------------------------------------------


def test_most_popular_uses_the_recent_window():
    now = 100 * DAY
    events = [ev(f"old{n}", "classic", 10 * DAY + n) for n in range(20)]  # all-time favourite, long ago
    events += [ev(f"new{n}", "trending", now - n * DAY) for n in range(5)]  # popular in the last 30 days
    events += [ev(f"new{n}", "steady", now - 2 * DAY) for n in range(2)] + [ev("x", "steady", 5 * DAY)]
    events += [ev("y", "meh", now - DAY, "rating", 2.0), ev("y", "meh", now - DAY, "rating", 1.0)]
    pop = MostPopular(window_days=30).fit(events)
    assert pop.fitted_as_of == now
    assert pop.recommend("anyone", 3) == ["trending", "steady", "classic"]
    assert pop.recommend("new0", 2) == ["classic", "meh"]  # trending and steady seen by new0
    assert pop.recommend("new0", 2, exclude_seen=False) == ["trending", "steady"]
    assert MostPopular(window_days=365).fit(events).recommend("anyone", 1) == ["classic"]
    everyone = pop.recommend_all(["a", "new1"], 1)
    assert everyone == {"a": ["trending"], "new1": ["classic"]}


def test_co_occurrence_recommends_the_co_occurring_item():
    events = []
    for n in range(6):  # everyone who liked "camera" also liked "lens"
        events += [ev(f"u{n}", "camera", 10 + n), ev(f"u{n}", "lens", 20 + n)]
    for n in range(10):  # "phone" is more popular but never liked with "camera"
        events += [ev(f"p{n}", "phone", 30 + n), ev(f"p{n}", "case", 40 + n)]
    events += [ev("u0", "tripod", 50), ev("me", "camera", 60), ev("me", "junk", 61, "rating", 1.0)]
    model = CoOccurrence().fit(events)
    assert model.recommend("me", 5) == ["lens", "tripod"]  # only items with a positive score
    sims = dict(zip(model.items, model.scores(["camera"])))
    assert sims["lens"] == pytest.approx(6 / math.sqrt(7 * 6))  # 6 shared users; camera liked by 7
    assert sims["camera"] == pytest.approx(0.0, abs=1e-12) and sims["phone"] == 0.0
    assert model.recommend("p0", 5) == []  # everything that co-occurs with p0's items is seen
    assert model.recommend("p0", 5, exclude_seen=False) == ["case", "phone"]  # a tie, broken by id
    assert model.recommend("stranger", 5) == []
    # The history is the most recent max_history liked items.
    recent_only = CoOccurrence(max_history=1).fit(events + [ev("me", "phone", 70)])
    assert recent_only.recommend("me", 1) == ["case"]


def test_co_occurrence_is_fast_enough():
    rng = np.random.default_rng(0)
    n = 100_000
    events = [
        {"user_id": str(u), "item_id": str(i), "type": "click", "value": None, "timestamp": int(t)}
        for u, i, t in zip(rng.integers(0, 600, n), rng.zipf(1.3, n) % 10_000, rng.integers(0, 10**9, n))
    ]
    import time

    started = time.perf_counter()
    recs = CoOccurrence().fit(events).recommend_all([str(u) for u in range(600)], 50)
    assert time.perf_counter() - started < 10
    assert all(len(v) == 50 for v in recs.values())


def planted_blocks():
    """Two groups of users, each liking only its own block of items."""
    rng = np.random.default_rng(3)
    events, t = [], 0
    for block in ("A", "B"):
        items = [f"{block}{j}" for j in range(10)]
        for u in range(15):
            for item in rng.choice(items, size=6, replace=False):
                t += 1
                events.append(ev(f"{block}-user{u}", str(item), t, "rating", 5.0))
    return events


def test_als_recovers_planted_blocks():
    events = planted_blocks()
    # Two factors: the planted structure has rank 2. Many more on 30 users would let ALS memorise
    # each user's exact unseen zeros, which is overfitting, not the structure under test.
    model = ALS(factors=2, iterations=20, seed=0).fit(events)
    recs = model.recommend_all([f"A-user{u}" for u in range(15)] + [f"B-user{u}" for u in range(15)] + ["nobody"], 3)
    for user, items in recs.items():
        if user == "nobody":
            assert items == []
            continue
        assert len(items) == 3
        assert all(i[0] == user[0] for i in items), (user, items)  # block A users get block A items
        seen = {e["item_id"] for e in events if e["user_id"] == user}
        assert not seen & set(items)
    assert model.recommend("A-user0", 3) == recs["A-user0"]
    assert ALS(factors=2, iterations=20, seed=0).fit(events).recommend("A-user0", 3) == recs["A-user0"]
    # Asking for more than is left: every unseen item once, seen ones never.
    assert sorted(model.recommend("A-user0", 100)) == sorted(
        {f"{b}{j}" for b in "AB" for j in range(10)} - {e["item_id"] for e in events if e["user_id"] == "A-user0"}
    )
    assert len(model.recommend("A-user0", 30, exclude_seen=False)) == 20


def test_als_without_implicit_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit.cpu.als", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install implicit=="):
        ALS().fit(planted_blocks())


def test_baselines_fold_in_a_history_given_at_query_time():
    """Per-user cut times: the model is fitted once, each user's own history is given per request."""
    events = []
    for n in range(6):
        events += [ev(f"u{n}", "camera", 10 + n), ev(f"u{n}", "lens", 20 + n)]
    events += [ev("u0", "tripod", 50)]
    cooc = CoOccurrence().fit(events)
    # A user the model never saw, described by their events: the same list a trained user gets.
    assert cooc.recommend_history([ev("new", "camera", 70)], 5) == ["lens", "tripod"]
    assert cooc.recommend_history([ev("new", "camera", 70), ev("new", "lens", 71)], 5) == ["tripod"]
    assert cooc.recommend_history([ev("new", "camera", 70, "rating", 1.0)], 5) == []  # disliked: no basis

    pop = MostPopular(window_days=1000).fit(events)
    assert pop.recommend_history([ev("new", "lens", 70)], 2) == ["camera", "tripod"]

    blocks = planted_blocks()
    als = ALS(factors=2, iterations=20, seed=0).fit(blocks)
    newcomer = [ev("newcomer", f"B{j}", 1000 + j, "rating", 5.0) for j in range(4)]
    recs = als.recommend_history(newcomer, 4)
    assert len(recs) == 4 and all(i.startswith("B") for i in recs), recs  # factors recomputed from the history
    assert not {e["item_id"] for e in newcomer} & set(recs)
