"""EASE and item-kNN: the weights against their definitions, computed independently, and the lists
on handcrafted event sets whose right answer is worked out by hand. Pure numpy: no Elasticsearch."""

from __future__ import annotations

import copy
import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest

from vecrank.rank import baselines_item
from vecrank.rank.baselines import CoOccurrence
from vecrank.rank.baselines_item import EASE, ItemKNN

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def ev(user, item, t, kind="click", value=None):
    return {"user_id": user, "item_id": item, "type": kind, "value": value, "timestamp": t}


def events_from(likes: dict[str, str]) -> list[dict]:
    """One click per letter: ``{"u1": "ab"}`` is u1 clicking a, then b."""
    return [ev(u, i, t) for t, (u, items) in enumerate(sorted(likes.items())) for i in items]


def random_events(n_users: int, n_items: int, density: float, seed: int) -> tuple[list[dict], np.ndarray]:
    """Events for a random binary matrix, every item liked at least once; the matrix itself too.

    Noise the models must ignore: a repeated positive event, and a rating below the positive
    threshold on a cell that is zero in the matrix.
    """
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < density).astype(np.float64)
    x[rng.integers(0, n_users, n_items), np.arange(n_items)] = 1.0
    events, t = [], 0
    for u, i in zip(*np.nonzero(x)):
        t += 1
        events.append(ev(f"u{u:03d}", f"i{i:03d}", t, "rating", 5.0))
        if t % 7 == 0:
            events.append(ev(f"u{u:03d}", f"i{i:03d}", t, "purchase"))
    zero = np.argwhere(x == 0)[0]
    events.append(ev(f"u{zero[0]:03d}", f"i{zero[1]:03d}", t + 1, "rating", 2.0))
    return events, x


def ease_by_column(x: np.ndarray, l2: float) -> np.ndarray:
    """The paper's problem solved as stated, column by column, without its closed form.

    ``min ||X − XB||² + λ||B||²`` s.t. ``diag(B) = 0`` separates over the columns of ``B``; for
    column ``j`` the constraint removes the variable ``B_jj``, leaving the ridge regression of
    ``x_j`` on the other columns: ``(X₋ⱼᵀX₋ⱼ + λI) b = X₋ⱼᵀ x_j``.
    """
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = np.delete(np.arange(n), j)
        xo = x[:, others]
        b[others, j] = np.linalg.solve(xo.T @ xo + l2 * np.eye(n - 1), xo.T @ x[:, j])
    return b


def ease_by_kkt(x: np.ndarray, l2: float) -> np.ndarray:
    """The same problem through its Lagrangian: for column j, with multiplier μ for ``b_j = 0``,
    ``[[XᵀX + λI, e_j], [e_jᵀ, 0]] [b; μ] = [Xᵀx_j; 0]``."""
    n = x.shape[1]
    g = x.T @ x + l2 * np.eye(n)
    b = np.zeros((n, n))
    for j in range(n):
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n] = g
        kkt[j, n] = kkt[n, j] = 1.0
        rhs = np.concatenate([x.T @ x[:, j], [0.0]])
        b[:, j] = np.linalg.solve(kkt, rhs)[:n]
    return b


# --- EASE -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_users", "n_items", "l2"), [(40, 12, 0.5), (40, 12, 7.0), (9, 15, 0.5), (9, 15, 3.0)])
def test_ease_weights_solve_the_papers_problem(n_users, n_items, l2):
    # Both shapes: more users than items inverts XᵀX + λI directly, fewer goes through Woodbury.
    events, x = random_events(n_users, n_items, 0.3, seed=n_users + n_items)
    model = EASE(l2=l2).fit(events)
    assert model.items == [f"i{i:03d}" for i in range(n_items)]
    reference = ease_by_column(x, l2)
    assert np.abs(reference).max() > 0.1  # a small λ: weights large enough for 1e-8 to be a real check
    np.testing.assert_allclose(model.weights, reference, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ease_by_kkt(x, l2), reference, rtol=0, atol=1e-10)  # the two references agree
    assert not np.diag(model.weights).any()
    # Scores are the user's row of X times B.
    user = 3
    liked = [f"i{i:03d}" for i in np.nonzero(x[user])[0]]
    expected = x[user] @ reference
    np.testing.assert_allclose(model.scores(liked), np.where(np.abs(expected) < 1e-9, 0, expected), rtol=0, atol=1e-8)


def ease_events():
    # λ = 2; the weights below are the per-column ridge regressions, solved by hand.
    # Column b on (a, c, d, e): [[7,2,0,0],[2,4,0,0],[0,0,4,0],[0,0,0,3]] β = (3, 0, 1, 0): B_ab = 1/2,
    # B_cb = -1/4, B_db = 1/4. Column a on (b, c, d, e): B_ba = 12/23, B_ca = 1/2, B_da = -3/23.
    # Column c on (a, b, d, e): B_ac = 46/125, B_bc = -24/125, B_dc = 6/125. Column d on (a, b, c, e):
    # B_ad = -1/9, B_bd = 2/9, B_cd = 1/18. Item e shares no user with any other: zero weights.
    likes = {"u1": "ab", "u2": "ab", "u3": "ab", "u4": "ac", "u5": "ac", "u6": "bd", "u7": "d", "u8": "e"}
    return events_from(likes) + [ev("u7", "z", 90, "rating", 2.0), ev("u7", "e", 91, "impression")]


def test_ease_lists_on_a_handcrafted_set():
    model = EASE(l2=2.0).fit(ease_events())
    assert model.items == ["a", "b", "c", "d", "e"]  # z was only disliked: never fitted, never recommended
    w = dict(zip(model.items, model.weights[model.items.index("b")]))
    assert w == pytest.approx({"a": 12 / 23, "b": 0.0, "c": -24 / 125, "d": 2 / 9, "e": 0.0}, abs=1e-12)
    assert model.weights[model.items.index("d"), model.items.index("b")] == pytest.approx(1 / 4, abs=1e-12)
    # One liked item: its row of B. Every fitted item is ranked, negative weights last: b-likers
    # never liked c, so c comes after e, about which b says nothing (a zero, tied items by id).
    assert model.recommend_history([ev("new", "b", 100)], 5) == ["a", "d", "e", "c"]
    # B_bb = 0: shown again, b ties with e and comes first by id.
    assert model.recommend_history([ev("new", "b", 100)], 5, exclude_seen=False) == ["a", "d", "b", "e", "c"]
    assert model.recommend_history([ev("new", "b", 100)], 2) == ["a", "d"]
    # u7 liked d: row d is a -3/23, b 1/4, c 6/125, e 0. z (disliked) is unknown to the model, and
    # e, only shown to u7, is not excluded: an impression is not an interaction.
    assert model.recommend("u7", 5) == ["b", "c", "e", "a"]
    assert model.recommend("u7", 5) == model.recommend_history([e for e in ease_events() if e["user_id"] == "u7"], 5)
    # Several liked items: the rows summed. u4 liked a and c: b 1/2 - 1/4, e 0, d -1/9 + 1/18.
    assert model.recommend("u4", 3) == ["b", "e", "d"]
    assert model.recommend("u4", 5, exclude_seen=False) == ["a", "c", "b", "e", "d"]  # a: 1/2, c: 46/125
    # u1 liked a and b: c 46/125 - 24/125, d -1/9 + 2/9. u8's e says nothing: all zeros, by id.
    assert model.recommend_all(["u1", "stranger", "u8"], 2) == {"u1": ["c", "d"], "stranger": [], "u8": ["a", "b"]}
    # Nothing liked that the model knows: nothing to score with.
    assert model.recommend_history([ev("new", "z", 100), ev("new", "a", 101, "rating", 1.0)], 5) == []


def test_the_rankers_ease_lists_are_the_rows_positive_weights():
    """What cf fit stores per item for the ranker's ``ease`` feature (ingest.ease): row i of B cut
    to its positive weights, strongest first; repeated events count once; ``max_items`` keeps the
    most-liked items."""
    from vecrank.ingest import cf
    from vecrank.ingest.ease import ease_lists
    from vecrank.interactions import Interactions

    def lists(events, **kw):
        log_ = Interactions.from_events(events)
        return ease_lists(cf.positive_counts(log_), log_.item_ids, l2=2.0, **{"max_items": 100, "listed": 10, **kw})

    got = lists(ease_events())
    assert {i: [j for j, _ in row] for i, row in got.items()} == {
        "a": ["b", "c"],
        "b": ["a", "d"],
        "c": ["a", "d"],
        "d": ["b", "c"],
    }  # e: all zeros, no list
    assert dict(got["b"]) == pytest.approx({"a": 12 / 23, "d": 2 / 9}, abs=1e-6)  # float32, as stored
    assert dict(got["d"]) == pytest.approx({"b": 1 / 4, "c": 6 / 125}, abs=1e-6)
    assert lists(ease_events() + [ev("u1", "a", 95), ev("u1", "a", 96, "purchase")]) == got
    assert lists(ease_events(), listed=1) == {i: row[:1] for i, row in got.items()}
    # a (5 likers) and b (4) stay, c and d (2 each) tie and c comes first by id; e (1) is left out.
    kept = lists(ease_events(), max_items=3)
    assert set(kept) | {j for row in kept.values() for j, _ in row} == {"a", "b", "c"}


def test_ease_counts_users_not_events_and_leaves_its_input_alone():
    events = ease_events()
    before = copy.deepcopy(events)
    model = EASE(l2=2.0).fit(events)
    assert events == before
    repeated = EASE(l2=2.0).fit(iter(events + [ev("u1", "a", 200 + n, "purchase") for n in range(3)]))
    np.testing.assert_array_equal(repeated.weights, model.weights)  # the cell stays 1
    history = [ev("new", "b", 100), ev("new", "b", 101, "cart")]
    kept = copy.deepcopy(history)
    assert model.recommend_history(history, 5) == ["a", "d", "e", "c"]
    assert history == kept
    with pytest.raises(ValueError, match="read-only"):
        model.weights[0, 1] = 5.0
    np.testing.assert_array_equal(EASE(l2=2.0).fit(events).weights, model.weights)  # deterministic


def test_ease_guards():
    with pytest.raises(ValueError, match="5 items .* max_items=4"):
        EASE(max_items=4).fit(ease_events())
    assert EASE(max_items=5).fit(ease_events()).items[-1] == "e"
    with pytest.raises(ValueError, match="l2"):
        EASE(l2=0.0)
    with pytest.raises(ValueError, match="no positive"):
        EASE().fit([ev("u", "i", 1, "impression")])
    with pytest.raises(RuntimeError, match="fit"):
        EASE().recommend("u", 5)
    with pytest.raises(ValueError, match="k must be"):
        EASE().fit(ease_events()).recommend("u1", 0)
    assert EASE().l2 == 500.0 and EASE().name == "ease"


# --- ItemKNN ------------------------------------------------------------------------------------


def knn_events():
    # Distinct users per item: a 4 (u7's three clicks count once), b 3, c 4, d 2, e 2.
    # Cosines: ab 2/√12, ac 1/√16, bc 1/√12, cd 1/√8, ce 1/√8; no other pair shares a user.
    likes = {"u1": "ab", "u2": "ab", "u3": "ac", "u4": "bc", "u5": "cd", "u6": "d", "u7": "aaa", "u8": "ce", "u9": "e"}
    return events_from(likes)


def test_item_knn_similarities_are_cosines_of_distinct_users():
    model = ItemKNN().fit(knn_events())
    assert model.items == ["a", "b", "c", "d", "e"] and model.name == "item-knn-100"
    sims = {(model.items[i], model.items[j]): v for (i, j), v in model.similarities.todok().items()}
    # ab = 2/√(4·3): with u7's clicks counted three times it would not be.
    assert sims == pytest.approx(
        {
            ("a", "b"): 2 / math.sqrt(12),
            ("a", "c"): 1 / 4,
            ("b", "a"): 2 / math.sqrt(12),
            ("b", "c"): 1 / math.sqrt(12),
            ("c", "a"): 1 / 4,
            ("c", "b"): 1 / math.sqrt(12),
            ("c", "d"): 1 / math.sqrt(8),
            ("c", "e"): 1 / math.sqrt(8),
            ("d", "c"): 1 / math.sqrt(8),
            ("e", "c"): 1 / math.sqrt(8),
        },
        abs=1e-12,
    )


def test_item_knn_lists_on_a_handcrafted_set():
    events = knn_events()
    one = ItemKNN(neighbours=1).fit(events)
    # N(c) = {d}: d and e tie at 1/√8 and the tie goes by id. The score direction is N(i) of the
    # liked i: c's list is its own neighbour only, although c is e's nearest neighbour too.
    assert one.recommend_history([ev("x", "c", 1)], 5) == ["d"]
    assert one.recommend_history([ev("x", "e", 1)], 5) == ["c"]
    assert one.recommend_history([ev("x", "a", 1), ev("x", "d", 2)], 5) == ["b", "c"]  # b 0.577 > c 0.354
    two = ItemKNN(neighbours=2).fit(events)
    assert two.recommend_history([ev("x", "c", 1)], 5) == ["d", "e"]
    # Summed over the liked items: c gets 1/4 from a and 1/√8 from d, 0.604, above b's 0.577.
    assert two.recommend_history([ev("x", "a", 1), ev("x", "d", 2)], 5) == ["c", "b"]
    full = ItemKNN().fit(events)
    assert full.recommend_history([ev("x", "c", 1)], 5) == ["d", "e", "b", "a"]
    # Training users: their training likes are the history, their interactions excluded.
    assert full.recommend("u5", 5) == ["e", "b", "a"]
    assert full.recommend("u5", 5, exclude_seen=False) == ["c", "d", "e", "b", "a"]  # c, d, e tie at 1/√8
    assert full.recommend("u5", 5) == full.recommend_history([e for e in events if e["user_id"] == "u5"], 5)
    assert full.recommend_all(["u7", "nobody"], 1) == {"u7": ["b"], "nobody": []}
    # Only positive scores: u1's items reach nothing unseen but c.
    assert full.recommend("u1", 5) == ["c"]
    assert full.recommend_history([ev("x", "a", 1, "rating", 3.0)], 5) == []  # not liked: nothing to score with


def test_item_knn_three_events_on_one_item_count_once():
    events = knn_events()  # u7 has three clicks on a
    once = [e for e in events if e["user_id"] != "u7"] + [ev("u7", "a", 1)]
    model, single = ItemKNN().fit(events), ItemKNN().fit(once)
    assert (model.similarities != single.similarities).nnz == 0
    triple = [ev("x", "d", 1)] * 3
    assert model.recommend_history(triple, 5) == model.recommend_history(triple[:1], 5) == ["c"]
    np.testing.assert_array_equal(model.scores(["a", "a", "a"]), model.scores(["a"]))


def brute_force_neighbours(x: np.ndarray, k: int) -> dict[tuple[int, int], float]:
    n_users_per_item = x.sum(axis=0)
    cos = (x.T @ x) / np.sqrt(np.outer(n_users_per_item, n_users_per_item))
    out = {}
    for i in range(x.shape[1]):
        ranked = sorted((j for j in range(x.shape[1]) if j != i and cos[i, j] > 0), key=lambda j: (-cos[i, j], j))
        out.update({(i, j): cos[i, j] for j in ranked[:k]})
    return out


@pytest.mark.parametrize("k", [1, 3, 8, 50])
def test_item_knn_neighbours_match_a_brute_force_in_blocks(monkeypatch, k):
    monkeypatch.setattr(baselines_item, "_BLOCK_CELLS", 50)  # several blocks of rows
    events, x = random_events(25, 30, 0.15, seed=k)  # small counts: many ties
    model = ItemKNN(neighbours=k).fit(events)
    got = {key: v for key, v in model.similarities.todok().items()}
    want = brute_force_neighbours(x, k)
    assert set(got) == set(want)
    assert [got[key] for key in sorted(want)] == pytest.approx([want[key] for key in sorted(want)], abs=1e-12)


def test_item_knn_with_every_neighbour_is_co_occurrence_on_the_full_history():
    events, x = random_events(30, 20, 0.25, seed=5)
    knn = ItemKNN(neighbours=1000).fit(events)
    cooc = CoOccurrence(max_history=1000).fit(events)
    for user in ("u000", "u007", "u021"):
        liked = [f"i{i:03d}" for i in np.nonzero(x[int(user[1:])])[0]]
        np.testing.assert_allclose(knn.scores(liked), cooc.scores(liked), rtol=0, atol=1e-12)


def test_item_knn_guards():
    with pytest.raises(ValueError, match="neighbours"):
        ItemKNN(neighbours=0)
    with pytest.raises(ValueError, match="no positive"):
        ItemKNN().fit([ev("u", "i", 1, "rating", 1.0)])
    lonely = ItemKNN().fit([ev("u", "i", 1)])
    assert lonely.similarities.shape == (1, 1) and lonely.recommend("u", 5, exclude_seen=False) == []


# --- speed ----------------------------------------------------------------------------------------


def test_item_baselines_are_fast_enough():
    rng = np.random.default_rng(0)
    n = 100_000
    events = [
        {"user_id": str(u), "item_id": str(i), "type": "click", "value": None, "timestamp": int(t)}
        for u, i, t in zip(rng.integers(0, 600, n), rng.zipf(1.3, n) % 6_000, rng.integers(0, 10**9, n))
    ]
    for cls in (EASE, ItemKNN):
        started = time.perf_counter()
        recs = cls().fit(events).recommend_all([str(u) for u in range(600)], 50)
        assert time.perf_counter() - started < 20, cls
        assert all(len(v) == 50 for v in recs.values())


@pytest.mark.realdata
def test_item_baselines_on_movielens_latest_small():
    ratings = DATA_DIR / "movielens-latest-small" / "ratings.csv"
    if not ratings.is_file():
        pytest.skip(f"no {ratings}")
    with ratings.open(encoding="utf-8", newline="") as f:
        events = [
            ev(r["userId"], r["movieId"], int(r["timestamp"]) * 1000, "rating", float(r["rating"]))
            for r in csv.DictReader(f)
        ]
    for model in (EASE(), ItemKNN()):
        started = time.perf_counter()
        model.fit(events)
        assert time.perf_counter() - started < 60, model.name
        assert len(model.items) == 6_298  # movies with a rating >= 4
        seen = {e["item_id"] for e in events if e["user_id"] == "1"}
        recs = model.recommend("1", 50)
        assert len(recs) == 50 and not seen & set(recs)
        assert model.recommend_history([e for e in events if e["user_id"] == "1"], 50) == recs
