"""Reasons from the model's contributions (vecrank.rank.reasons): pure, no cluster."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from vecrank.rank import features as feats
from vecrank.rank import reasons as rs
from vecrank.rank.reasons import Reason, ReasonConfig, explain, most_similar, reason_of, title_of, top_reasons

NAMES = [
    "cos_profile",
    "cos_query",
    "cf_score",
    "cooc",
    "rank_cooc",
    "pop_7d",
    "pop_30d",
    "trend",
    "trending_rank",
    "rating_mean",
    "item_age",
    "affinity.genres",
    "query_present",
    "path_code",
]


def _row(**contributions: float) -> list[float]:
    return [contributions.get(name.replace(".", "_"), 0.0) for name in NAMES] + [0.25]  # + bias


def _values(**overrides: float) -> list[float]:
    base = dict(
        cos_profile=0.6,
        cos_query=math.nan,
        cf_score=0.4,
        cooc=2.0,
        rank_cooc=3.0,
        pop_7d=1.2,
        pop_30d=2.5,
        trend=0.3,
        trending_rank=12.0,
        rating_mean=4.1,
        item_age=300.0,
        affinity_genres=0.5,
        query_present=0.0,
        path_code=0.0,
    )
    base.update(overrides)
    return [base[name.replace(".", "_")] for name in NAMES]


def test_the_module_examples_run():
    assert doctest.testmod(rs).failed == 0


def test_every_feature_maps_to_a_known_reason_or_none():
    spec = feats.FeatureSpec(
        item_numeric=("year",), facets=("genres",), item_dates=("released",), sources=(("rank_text", 50),)
    )
    codes = {name: reason_of(name) for name in spec.names}
    assert set(codes.values()) <= {*rs.TEXTS, None}
    assert {n for n, c in codes.items() if c == "liked"} == {
        "cos_profile",
        "cos_hist_max",
        "cos_hist_mean",
        "rank_text",
        "cf_score",
        "rank_cf",
        "cooc",
        "rank_cooc",
        "seq",
        "rank_seq",
        "ease",
        "rank_ease",
    }
    assert {n for n, c in codes.items() if c == "trending"} == {"pop_1d", "pop_7d", "trend", "trending_rank"}
    assert {n for n, c in codes.items() if c == "query"} == {"cos_query", "query_present"}
    assert codes["affinity.genres"] == "taste"
    for silent in (
        "item_age",
        "days_since_interaction",
        "item.year",
        "age.released",
        "hist_len",
        "path_code",
        "n_sources",
    ):
        assert codes[silent] is None, silent


def test_groups_sum_and_the_strongest_come_first():
    out = top_reasons(
        NAMES,
        _row(
            cos_profile=0.3, cf_score=0.2, cooc=0.15, rank_cooc=-0.05, pop_7d=0.4, trend=0.1, pop_30d=0.02, item_age=0.9
        ),
        values=_values(),
    )
    # liked: 0.3 + 0.2 + 0.15 - 0.05; trending: 0.4 + 0.1; item_age gives no reason; bias ignored
    assert [(r.code, r.weight, r.feature) for r in out] == [("liked", 0.6, "cos_profile"), ("trending", 0.5, "pop_7d")]
    assert [r.to_dict() for r in out] == [
        {"code": "liked", "text": "because of what you liked"},
        {"code": "trending", "text": "popular this week"},
    ]


def test_only_positive_sums_above_the_floor_and_at_most_max():
    row = _row(cos_profile=0.04, pop_7d=-0.3, trend=0.2, pop_30d=0.06, rating_mean=0.07, affinity_genres=0.08)
    out = top_reasons(NAMES, row, values=_values())
    # liked 0.04 is under the 0.05 floor, trending nets -0.1; the rest by weight, two kept
    assert [(r.code, r.text) for r in out] == [("taste", "more of the genres you like"), ("rated", "highly rated")]
    out = top_reasons(NAMES, row, values=_values(), config=ReasonConfig(max_reasons=3, min_contribution=0.01))
    assert [r.code for r in out] == ["taste", "rated", "popular"]
    assert [r.code for r in top_reasons(NAMES, row, values=_values(), config=ReasonConfig(min_contribution=0.5))] == []
    assert top_reasons(NAMES, _row(), values=_values()) == []


def test_values_gate_what_counts_as_evidence():
    row = _row(cos_query=0.5, query_present=0.3, cooc=0.4, pop_7d=0.2)
    # no search text: cos_query is NaN and query_present 0, so no "matches your search"; cooc missing
    # (NaN) only routed a split; zero popularity is no reason to call it popular
    assert top_reasons(NAMES, row, values=_values(cooc=math.nan, pop_7d=0.0)) == []
    out = top_reasons(NAMES, row, values=_values(cos_query=0.7, query_present=1.0))
    assert [(r.code, r.weight, r.text) for r in out] == [
        ("query", 0.8, "matches your search"),
        ("liked", 0.4, "because of what you liked"),
    ]
    # ranks count whatever their value (a rank is present or NaN); without values, everything counts
    assert [r.code for r in top_reasons(NAMES, _row(rank_cooc=0.3), values=_values(rank_cooc=1.0))] == ["liked"]
    assert [r.code for r in top_reasons(NAMES, row)] == ["query", "liked"]


def test_a_mapping_and_a_liked_title():
    contributions = {"cos_profile": 0.5, "pop_7d": 0.1, "bias": 3.0}
    out = top_reasons(NAMES, contributions, liked_title="Alien (1979)")
    assert [r.text for r in out] == ["because you liked Alien (1979)", "popular this week"]


def test_shapes_and_config_are_checked():
    with pytest.raises(ValueError, match="contributions has 2 values for 14 features"):
        top_reasons(NAMES, [0.1, 0.2])
    with pytest.raises(ValueError, match="values has 1 values"):
        top_reasons(NAMES, _row(), values=[0.0])
    with pytest.raises(ValueError, match="max_reasons"):
        ReasonConfig(max_reasons=4)
    with pytest.raises(ValueError, match="min_contribution"):
        ReasonConfig(min_contribution=-1)
    config = ReasonConfig(max_reasons=3, min_contribution=0.1, title_fields=("name",))
    assert ReasonConfig.from_dict(config.to_dict()) == config


def test_most_similar_and_titles():
    liked = [("a", np.array([0.0, 1.0, 0.0])), ("b", np.array([3.0, 0.2, 0.0])), ("c", np.array([1.0, 0.0, 0.0]))]
    assert most_similar(np.array([1.0, 0.1, 0.0]), liked) == "b"
    assert most_similar(np.array([1.0, 0.0, 0.0]), liked) == "c"
    assert (
        most_similar(np.array([2.0, 0.0, 0.0]), [("x", np.array([1.0, 0.0, 0.0])), ("y", np.array([5.0, 0.0, 0.0]))])
        == "x"
    )  # ties: the first (the newest like)
    assert most_similar(None, liked) is None and most_similar(np.array([1.0, 0.0, 0.0]), []) is None
    assert most_similar(np.zeros(3), liked) is None
    assert title_of({"title": "  Heat\n (1995) "}, "9") == "Heat (1995)"
    assert title_of({"title": "", "name": ["Alien", "x"]}, "9") == "Alien"
    assert title_of(None, "9") == "9" and title_of({"title": "x"}, "9", ("name",)) == "9"
    assert title_of({"title": "y" * 200}, "9") == "y" * 119 + "…"


def test_explain_cites_the_closest_liked_item_with_one_read():
    names = ["cos_hist_max", "pop_7d"]
    contributions = [[0.6, 0.1, 1.0], {"cos_hist_max": 0.02, "pop_7d": 0.3}, [0.2, 0.0, 1.0], [0.3, 0.0, 1.0]]
    values = [[0.9, 1.0], [0.1, 2.0], [0.8, 0.0], [0.7, 0.0]]
    vectors = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.1, 1.0]), None]
    liked = [("m1", np.array([0.9, 0.1])), ("m2", np.array([0.0, 1.0]))]
    reads: list[list[str]] = []

    def documents(ids):
        reads.append(list(ids))
        return {"m1": {"title": "Alien"}}  # m2 has no document: its id stands in

    out = explain(names, contributions, values=values, vectors=vectors, liked=liked, documents=documents)
    assert reads == [["m1", "m2"]]
    assert [[r.to_dict() for r in item] for item in out] == [
        [{"code": "liked", "text": "because you liked Alien"}, {"code": "trending", "text": "popular this week"}],
        [{"code": "trending", "text": "popular this week"}],
        [{"code": "liked", "text": "because you liked m2"}],
        [{"code": "liked", "text": "because of what you liked"}],  # no vector: nothing to cite
    ]
    assert [r.liked_item for item in out for r in item] == ["m1", None, None, "m2", None]
    assert out[0][0] == Reason("liked", "because you liked Alien", 0.6, "cos_hist_max", "m1")
    assert explain(names, [[0.0, 0.5]], liked=liked, documents=documents) == [
        [Reason("trending", "popular this week", 0.5, "pop_7d")]
    ]
    assert len(reads) == 1  # nothing cited, nothing read
    with pytest.raises(ValueError, match="vectors has 1 items for 2"):
        explain(names, [[0.1, 0.1], [0.1, 0.1]], vectors=[None])
