"""Collaborative vectors and co-occurrence neighbours (pure: no Elasticsearch)."""

import numpy as np
import pytest
from scipy import sparse

from vecrank.ingest import cf
from vecrank.interactions import Interactions


def _events(rows):
    return [{"user_id": u, "item_id": i, "type": t, "value": v, "timestamp": ts} for u, i, t, v, ts in rows]


def _random_log(seed=0, users=40, items=30, n=400):
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{rng.integers(users)}", f"i{rng.integers(items):02d}", "click", None, int(t))
        for t in rng.integers(0, 10_000, n)
    ]
    return Interactions.from_events(_events(rows))


def test_fold_in_equals_implicit_recalculate_user():
    from implicit.cpu.als import AlternatingLeastSquares

    log_ = _random_log()
    config = cf.CFConfig(factors=8, regularization=0.1, alpha=2.0, iterations=5)
    model = cf.fit(log_, config)
    # implicit's own model over the same items, with our factors, recomputes a user from scratch.
    als = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=2.0, iterations=1, random_state=0)
    als.item_factors = model.factors.copy()
    als.user_factors = np.zeros((1, 8), dtype=np.float32)
    history = {model.item_ids[3]: 2, model.item_ids[7]: 1, model.item_ids[11]: 4}
    cols = [model.item_ids.index(i) for i in history]
    user_items = sparse.csr_matrix(
        (np.array(list(history.values()), dtype=np.float32), ([0] * 3, cols)), shape=(1, len(model.item_ids))
    )
    expected = np.asarray(als.recalculate_user(0, user_items)).ravel()
    got = cf.fold_in(
        model.gram,
        np.stack([model.vector(i) for i in history]),
        np.array(list(history.values())),
        regularization=0.1,
        alpha=2.0,
    )
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)
    assert cf.fold_in(model.gram, np.zeros((0, 8)), np.zeros(0), regularization=0.1) is None


def test_fit_gives_vectors_only_to_liked_items_and_is_deterministic():
    rows = [
        ("a", "x", "rating", 5.0, 1),
        ("a", "y", "rating", 2.0, 2),
        ("b", "x", "click", None, 3),
        ("b", "z", "purchase", None, 4),
        ("c", "w", "impression", None, 5),
    ]
    log_ = Interactions.from_events(_events(rows))
    first = cf.fit(log_, cf.CFConfig(factors=4))
    again = cf.fit(log_, cf.CFConfig(factors=4))
    assert first.item_ids == ("x", "z")  # y was rated 2 stars, w only shown
    assert first.vector("y") is None and first.vector("x") is not None
    np.testing.assert_array_equal(first.factors, again.factors)
    assert first.version == again.version
    np.testing.assert_allclose(first.gram, first.factors.astype(np.float64).T @ first.factors)
    assert first.users == 2 and first.events == 3


def test_fit_before_an_instant_sees_only_earlier_events():
    rows = [("a", "x", "click", None, 10), ("b", "x", "click", None, 20), ("b", "y", "click", None, 30)]
    log_ = Interactions.from_events(_events(rows))
    early = cf.fit(log_, cf.CFConfig(factors=2), before_ms=30)
    assert early.item_ids == ("x",) and early.events == 2 and early.before_ms == 30
    with pytest.raises(ValueError, match="no positive events"):
        cf.fit(log_, cf.CFConfig(factors=2), before_ms=10)


def test_cooccurrence_counts_distinct_users():
    # u1 clicks x three times and y once; u2 likes x and z; u3 likes y and z.
    rows = [
        ("u1", "x", "click", None, 1),
        ("u1", "x", "click", None, 2),
        ("u1", "x", "click", None, 3),
        ("u1", "y", "click", None, 4),
        ("u2", "x", "rating", 4.0, 5),
        ("u2", "z", "rating", 5.0, 6),
        ("u3", "y", "purchase", None, 7),
        ("u3", "z", "cart", None, 8),
        ("u3", "q", "rating", 3.0, 9),
    ]
    model = cf.fit(Interactions.from_events(_events(rows)), cf.CFConfig(factors=2, neighbours=5))
    # n_x = 2 (u1, u2), n_y = 2 (u1, u3), n_z = 2 (u2, u3); every pair shares one user: 1 / sqrt(2 * 2).
    assert model.neighbours["x"] == (("y", 0.5), ("z", 0.5))
    assert model.neighbours["y"] == (("x", 0.5), ("z", 0.5))
    assert "q" not in model.neighbours  # 3 stars is not a like
    # One neighbour each (ties by id): x keeps y, y keeps x, z keeps x. Each item lists who keeps it.
    kept = cf.fit(Interactions.from_events(_events(rows)), cf.CFConfig(factors=2, neighbours=1))
    assert kept.neighbours == {"x": (("y", 0.5), ("z", 0.5)), "y": (("x", 0.5),)}
    capped = cf.fit(Interactions.from_events(_events(rows)), cf.CFConfig(factors=2, neighbours=1, listed=1))
    assert capped.neighbours["x"] == (("y", 0.5),)


def test_neighbour_scores_sum_weights_over_recent_likes():
    neighbours = {"a": (("c", 0.5), ("d", 0.25)), "b": (("c", 0.125), ("e", 0.75))}
    assert cf.neighbour_scores(neighbours, ["a", "b"]) == {"e": 0.75, "c": 0.625, "d": 0.25}
    assert cf.neighbour_scores(neighbours, ["a", "b"], exclude={"e"}, limit=1) == {"c": 0.625}
    history = [
        {"item_id": "a", "type": "click", "timestamp": 5},
        {"item_id": "b", "type": "click", "timestamp": 9},
        {"item_id": "a", "type": "click", "timestamp": 7},
        {"item_id": "z", "type": "impression", "timestamp": 10},
    ]
    from vecrank.interactions import is_positive

    assert cf.recent_likes(history, is_positive, 5) == ["b", "a"]
    assert cf.like_counts(history, is_positive) == {"a": 2, "b": 1}


def test_config_round_trips():
    config = cf.CFConfig(factors=16, neighbours=7)
    assert cf.CFConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        cf.CFConfig(factors=0)


def test_sequence_neighbours_count_each_user_once_at_the_closest_distance():
    # u1: a b c ; u2: a c ; u3: a a b (a repeated: the pair a->b once, at distance 1)
    rows = [
        ("u1", "a", "click", None, 1),
        ("u1", "b", "click", None, 2),
        ("u1", "c", "rating", 2.0, 3),
        ("u2", "a", "click", None, 4),
        ("u2", "c", "click", None, 5),
        ("u2", "z", "impression", None, 6),
        ("u3", "a", "click", None, 7),
        ("u3", "a", "click", None, 8),
        ("u3", "b", "click", None, 9),
    ]
    log_ = Interactions.from_events(_events(rows))
    seq = cf.sequence_neighbours(log_, end=len(log_), window=2, k=5)
    # m_a = 3, m_b = 2, m_c = 2. a->b: u1 at 1, u3 at 1 (twice: distance 1 and 2, counted once) = 2 / sqrt(6)
    # a->c: u1 at distance 2 (1/2), u2 at 1 = 1.5 / sqrt(6); b->c: u1 at 1 = 1 / sqrt(4)
    assert seq["a"] == (("b", float(np.float32(2 / 6**0.5))), ("c", float(np.float32(1.5 / 6**0.5))))
    assert seq["b"] == (("c", 0.5),)
    assert "c" not in seq and "z" not in seq  # nothing follows c; an impression is no interaction
    assert cf.recent_items(
        [
            {"item_id": "x", "type": "click", "timestamp": 1},
            {"item_id": "y", "type": "impression", "timestamp": 2},
            {"item_id": "w", "type": "rating", "value": 1.0, "timestamp": 3},
        ],
        5,
    ) == ["w", "x"]
    decayed = cf.neighbour_scores({"a": (("q", 1.0),), "b": (("q", 1.0), ("r", 0.5))}, ["a", "b"], decay=True)
    assert decayed == {"q": 1.5, "r": 0.25}


# --- on a real node: `cf fit` writes the next version; events move the stored user state -----------


def test_fit_index_writes_the_next_version_and_events_move_the_user_state(es, settings_for, tmp_path):
    import json

    from vecrank.ingest import indices
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.rank.state import StateConfig, stored_state
    from vecrank.rank.store import get_user, live_cf_meta, refresh_all_users, refresh_profiles

    items = [{"id": f"i{n}", "title": f"item number {n}"} for n in range(12)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    ingest_items(es, settings_for, tmp_path / "items.jsonl", ItemSource(template="{title}"), embedder=Embedder())
    # Two taste groups over i0-i4 and i5-i9, each user clicking 4 of their group's 5; i10 and i11
    # are never touched.
    events = [
        {
            "user": f"u{u}",
            "item": f"i{(u % 2) * 5 + (u + j) % 5}",
            "type": "click",
            "timestamp": 1_000_000 + 1000 * (u + j),
        }
        for u in range(10)
        for j in range(4)
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert (
        ingest_events(
            es, settings_for, tmp_path / "events.jsonl", progress=False, refresh_states=refresh_profiles
        ).failed
        == 0
    )
    before = indices.live_index(es, settings_for)
    assert live_cf_meta(es, settings_for) is None  # no fit yet

    summary = cf.fit_index(es, settings_for, cf.CFConfig(factors=4, iterations=5))
    live = indices.live_index(es, settings_for)
    assert summary.switched and live == summary.target != before and summary.source == before
    assert (summary.items, summary.with_vector, summary.users) == (12, 10, 10)
    hits = es.search(index=live, size=12, fields=["cf_vector"], source=True)["hits"]["hits"]
    vectors = {h["_id"]: h.get("fields", {}).get("cf_vector") for h in hits}
    assert all(vectors[f"i{n}"] is None for n in (10, 11))  # no interactions: no collaborative vector
    assert all(len(vectors[f"i{n}"]) == 4 for n in range(10))
    # The neighbour lists live in the fit's own index, off the served documents.
    assert not any(set(cf.LIST_FIELDS) & set(h["_source"]) for h in hits)
    meta = live_cf_meta(es, settings_for)
    assert meta.version == summary.version and meta.gram.shape == (4, 4) and meta.config.factors == 4
    assert meta.lists_index == summary.lists_index == cf.lists_index_name(settings_for, summary.version)
    es.indices.refresh(index=meta.lists_index)
    docs = {h["_id"]: h["_source"] for h in es.search(index=meta.lists_index, size=20)["hits"]["hits"]}
    assert set(docs) == {f"i{n}" for n in range(10)} and summary.with_neighbours == 10
    assert set(docs["i0"]["cf_neighbours"]["ids"]) == {"i1", "i2", "i3", "i4"}  # co-liked within its group only
    assert set(docs["i0"]["cf_ease"]["ids"]) <= {"i1", "i2", "i3", "i4"} and docs["i0"]["cf_ease"]["ids"]
    assert all(w > 0 for w in docs["i0"]["cf_ease"]["weights"])
    assert es.indices.exists(index=before)  # the old version stays for a rollback

    config = StateConfig()
    assert refresh_all_users(es, settings_for, config=config) == 10
    model = indices.spec_of(es, live).model

    def state(user):
        return stored_state(get_user(es, settings_for, user), model=model, config=config, cf_version=meta.version)

    old = state("u0")
    assert old is not None and old.cf_vector is not None and "i4" in old.cooc  # co-liked, not yet seen
    assert set(old.ease) <= {"i1", "i2", "i3", "i4"} - old.seen and old.ease
    new = [{"user": "u0", "item": "i7", "type": "click", "timestamp": 2_000_000}]
    (tmp_path / "new.jsonl").write_text(json.dumps(new[0]) + "\n")
    ingest_events(es, settings_for, tmp_path / "new.jsonl", progress=False, refresh_states=refresh_profiles)
    now = state("u0")  # stored by the events batch: the next request reads it with the user document
    assert now is not None and "i7" in now.seen
    assert not np.allclose(now.cf_vector, old.cf_vector) and "i7" not in now.cooc
    assert any(i in now.cooc for i in ("i5", "i6", "i8", "i9"))  # i7's co-liked items join the scores

    # A refit on the new event writes a lists index of its own; deleting the first fitted version
    # deletes the lists index only it named, never the live one's.
    again = cf.fit_index(es, settings_for, cf.CFConfig(factors=4, iterations=5))
    assert again.version != summary.version and again.lists_index != summary.lists_index
    indices.delete_version(es, settings_for, int(summary.target.rsplit("-v", 1)[1]))
    assert not es.indices.exists(index=summary.lists_index) and es.indices.exists(index=again.lists_index)
