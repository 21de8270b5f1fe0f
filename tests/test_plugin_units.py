"""The rescorer plugin's Python side without a cluster: feature sources, request bodies, params,
explanations, and the local node's plugin homes."""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from clihelp import run_cli

from vecrank.localnode import distribution
from vecrank.localnode import plugin as lplugin
from vecrank.localnode.errors import LocalNodeError
from vecrank.rank import features as F
from vecrank.rank import rescore as R
from vecrank.rank.features import FeatureSpec, RequestContext
from vecrank.rank.offline import PoolConfig
from vecrank.rank.profiles import Interest, Profile
from vecrank.rank.recommender import Candidate
from vecrank.rank.state import LikedItem, UserState

REPO = Path(__file__).resolve().parents[1]
DAY = 86_400_000
NOW = 1_700_000_000_000


# --- feature sources ---------------------------------------------------------------------------

POOL = PoolConfig(text=8, cf=2, cooc=4, seq=3, ease=2, popular=5, trending=0)


def test_every_spec_feature_has_its_contract_source():
    spec = FeatureSpec.for_fields(
        ["year", "released"], ["genres"], {"year": "integer", "released": "date"}, pool=POOL.to_dict()
    )
    got = {f["name"]: {k: v for k, v in f.items() if k != "name"} for f in R.plugin_features(spec)}
    assert list(got) == spec.names
    assert got == {
        "cos_profile": {"source": "cosine", "field": "embedding", "param": "profile_vector"},
        "cos_query": {"source": "cosine", "field": "embedding", "param": "query_vector"},
        "cos_hist_max": {"source": "cosine_max", "field": "embedding", "param": "history_vectors"},
        "cos_hist_mean": {"source": "cosine_mean", "field": "embedding", "param": "history_vectors"},
        "cf_score": {"source": "dot", "field": "cf_vector", "param": "cf_vector"},
        "cooc": {"source": "param_map", "param": "cooc", "key_field": "item_id"},
        "seq": {"source": "param_map", "param": "seq", "key_field": "item_id"},
        "ease": {"source": "param_map", "param": "ease", "key_field": "item_id"},
        "ctr": {"source": "field", "field": "signals.ctr", "transform": "identity"},
        "pop_1d": {"source": "field", "field": "signals.popularity_1d", "transform": "log1p"},
        "pop_7d": {"source": "field", "field": "signals.popularity_7d", "transform": "log1p"},
        "pop_30d": {"source": "field", "field": "signals.popularity_30d", "transform": "log1p"},
        "pop_365d": {"source": "field", "field": "signals.popularity_365d", "transform": "log1p"},
        "trend": {"source": "field", "field": "signals.trend", "transform": "identity"},
        "popular_rank": {"source": "field", "field": "signals.popular_rank", "transform": "identity"},
        "trending_rank": {"source": "field", "field": "signals.trending_rank", "transform": "identity"},
        "days_since_interaction": {"source": "field", "field": "signals.last_interaction", "transform": "days_since"},
        "item_age": {"source": "field", "field": "signals.first_interaction", "transform": "days_since"},
        "rating_mean": {"source": "field", "field": "signals.rating_mean", "transform": "identity"},
        "rating_count": {"source": "field", "field": "signals.rating_count", "transform": "log1p"},
        "rank_cf": {"source": "rank", "of": "cf_score"},
        "rank_text": {"source": "rank", "of": "cos_profile"},
        "rank_cooc": {"source": "rank", "of": "cooc"},
        "rank_seq": {"source": "rank", "of": "seq"},
        "rank_ease": {"source": "rank", "of": "ease"},
        # a source of size 0 (trending here) finds nothing and is not counted
        "n_sources": {
            "source": "count",
            "of": ["rank_text", "rank_cf", "rank_cooc", "rank_seq", "rank_ease", "popular_rank"],
            "limits": [8, 2, 4, 3, 2, 5],
        },
        "item.year": {"source": "field", "field": "year", "transform": "identity"},
        "age.released": {"source": "field", "field": "released", "transform": "days_since"},
        "hist_len": {"source": "param"},
        "days_since_active": {"source": "param"},
        "affinity.genres": {"source": "overlap", "field": "genres", "param": "history_genres"},
        "query_present": {"source": "param"},
        "path_code": {"source": "param"},
    }
    # Without a pool there is no n_sources feature, and so no count entry.
    assert "n_sources" not in [f["name"] for f in R.plugin_features(FeatureSpec())]
    json.dumps(R.plugin_features(spec))


def test_a_name_without_a_source_is_refused():
    with pytest.raises(R.PluginFeatureError, match="feature 'mystery' has no source"):
        R.feature_source("mystery")
    # Spec v1's first-pass score feature is gone from the spec, and from the sources vecrank names.
    assert "knn_score" not in FeatureSpec().names
    with pytest.raises(R.PluginFeatureError, match="feature 'knn_score' has no source"):
        R.feature_source("knn_score")


# --- request bodies ------------------------------------------------------------------------------


def test_rescore_body_is_exactly_the_search_json():
    vec = np.array([1.0, -2.0], dtype=np.float32)
    body = R.rescore_body(
        model_id="default",
        params={
            "profile_vector": vec,
            "history_vectors": np.stack([vec, vec]),
            "hist_len": np.float64(1.5),
            "days_since_active": float("nan"),
        },
        window_size=50,
        models_index="shop-models",
    )
    assert body == {
        "window_size": 50,
        "vecrank": {
            "model": "default",
            "models_index": "shop-models",
            "params": {
                "profile_vector": "AACAPwAAAMA=",
                "history_vectors": ["AACAPwAAAMA=", "AACAPwAAAMA="],
                "hist_len": 1.5,
                "days_since_active": None,
            },
        },
    }
    json.dumps(body)  # JSON-ready
    assert R.rescore_body(model_id="m", version=2, window_size=10, models_index="x") == {
        "window_size": 10,
        "vecrank": {"model": "m", "version": 2, "models_index": "x"},
    }
    assert R.rescore_body(model_id="m", window_size=450, models_index="x", keep=10) == {
        "window_size": 450,
        "vecrank": {"model": "m", "models_index": "x", "keep": 10},
    }
    for bad in ({"version": 0}, {"version": 1.5}, {"window_size": 0}, {"model_id": ""}, {"keep": 0}, {"keep": 2.5}):
        with pytest.raises(ValueError):
            R.rescore_body(**{"model_id": "m", **bad})


def test_vectors_travel_as_little_endian_float32():
    v = np.array([0.1, -3.5, 1e-20, 7.0], dtype=np.float64)
    text = R.encode_vector(v)
    raw = __import__("base64").b64decode(text)
    assert raw == v.astype("<f4").tobytes() and len(raw) == 16
    np.testing.assert_array_equal(R.decode_vector(text), v.astype(np.float32))
    with pytest.raises(ValueError, match="NaN"):
        R.encode_vector([1.0, float("nan")])


def test_score_mapping_and_its_inverse():
    xs = np.array([-50.0, -2.0, -0.5, -1e-4, 0.0, 1e-4, 0.5, 2.0, 50.0])
    s = R.model_to_score(xs)
    assert (s > 0).all() and (np.diff(s) > 0).all()
    np.testing.assert_allclose(R.score_to_model(s), xs, atol=1e-12)
    assert R.model_to_score(0.0) == 1.0 and R.model_to_score(-1.0) == 0.5
    with pytest.raises(ValueError, match="not rescored"):
        R.score_to_model(0.0)


def _explanation(pairs, model_score):
    def bits(x):
        return f"(float32 0x{np.array([x], dtype=np.float32).view(np.uint32)[0]:08x})"

    feats = [
        {
            "value": 0.0 if math.isnan(v) else v,
            "description": f"feature [{n}] = {'NaN (missing)' if math.isnan(v) else v} {bits(v)}",
            "details": [],
        }
        for n, v in pairs
    ]
    return {
        "value": 1.0,
        "description": "vecrank model [m] version [1] (rank:ndcg): score = g(model score)",
        "details": [
            {"value": model_score, "description": f"model score {bits(model_score)}", "details": []},
            {"value": len(pairs), "description": "features (2, in the model's order)", "details": feats},
            {"value": 0.9, "description": "first pass score", "details": []},
        ],
    }


def test_explanations_read_back_exact_float32_values():
    third = float(np.float32(1 / 3))
    e = _explanation([("cos_profile", third), ("ctr", float("nan")), ("rank_cf", 3.0)], -0.1)
    row = R.explained_features(e, ["cos_profile", "ctr", "rank_cf"])
    assert row.dtype == np.float32 and row[0] == np.float32(1 / 3) and math.isnan(row[1]) and row[2] == 3.0
    assert R.explained_feature_names(e) == ["cos_profile", "ctr", "rank_cf"]
    assert R.explained_model_score(e) == float(np.float32(-0.1))
    with pytest.raises(ValueError, match="not"):
        R.explained_features(e, ["ctr", "cos_profile", "rank_cf"])
    with pytest.raises(ValueError, match="no vecrank rescore"):
        R.explained_features({"value": 1, "description": "weight(text:x)", "details": []})
    nested = {"value": 2.0, "description": "outer rescorer", "details": [e]}
    assert R.explained_model_score(nested) == float(np.float32(-0.1))


# --- params agree with the Python features -------------------------------------------------------
# What the plugin does with each source, written out here from plugin/README.md's contract.


def _plugin_cosine(doc: np.ndarray, queries: list[np.ndarray], mode: str) -> float:
    cos = [
        float(
            np.dot(doc.astype(np.float64), q.astype(np.float64))
            / (np.linalg.norm(doc.astype(np.float64)) * np.linalg.norm(q.astype(np.float64)))
        )
        for q in queries
    ]
    return max(cos) if mode == "max" else sum(cos) / len(cos)


def _plugin_dot(doc: np.ndarray | None, param: np.ndarray | None) -> float:
    if doc is None or param is None:
        return math.nan
    total = 0.0
    for a, b in zip(np.asarray(doc, np.float32).tolist(), np.asarray(param, np.float32).tolist()):
        total += a * b  # in double, in index order
    return total


def _plugin_overlap(doc_values: set[str] | None, param: dict | None) -> float:
    if not doc_values or param is None:
        return math.nan
    total = sum(param["weights"])
    return sum(w for s, w in zip(param["sets"], param["weights"]) if set(s) & doc_values) / total


def _plugin_param_map(key: str, param: dict | None) -> float:
    if param is None:
        return math.nan
    value = param["values"].get(key, param.get("default"))
    return math.nan if value is None else value


def _plugin_rank(values: list[float], keys: list[str]) -> list[float]:
    """1-based rank by float32 value, highest first, ties by key; NaN takes no place."""
    order = sorted(
        (i for i, v in enumerate(values) if not math.isnan(v)), key=lambda i: (-float(np.float32(values[i])), keys[i])
    )
    out = [math.nan] * len(values)
    for r, i in enumerate(order, 1):
        out[i] = float(r)
    return out


def _plugin_count(rows: list[dict[str, float]], of: list[str], limits: list[float]) -> list[float]:
    return [
        float(sum(not math.isnan(row[n]) and float(np.float32(row[n])) <= lim for n, lim in zip(of, limits)))
        for row in rows
    ]


def _same(got: float, want: float, what) -> None:
    want32 = np.float32(want)
    assert (np.isnan(got) and np.isnan(want32)) or got == pytest.approx(want32, abs=1e-6), (what, got, want32)


def _state() -> UserState:
    rng = np.random.default_rng(3)
    history = (  # newest first, as the users index keeps them
        {"item_id": "h2", "type": "rating", "value": 1, "timestamp": NOW - 1 * DAY},  # a dislike
        {"item_id": "x9", "type": "impression", "timestamp": NOW - DAY // 2},  # shown only: no interaction
        {"item_id": "h1", "type": "purchase", "timestamp": NOW - 2 * DAY},
        {"item_id": "h3", "type": "click", "timestamp": NOW - 3 * DAY},
        {"item_id": "h0", "type": "click", "timestamp": NOW - 5 * DAY},
    )
    profile = Profile(
        interests=(Interest(rng.normal(size=8).astype(np.float32), 1.0, ("h1",)),),
        n_events=4,
        positive_weight=3.0,
        negative_weight=1.0,
    )
    liked = (
        LikedItem("h1", rng.normal(size=8).astype(np.float32), {"genres": frozenset({"Comedy", "Drama"})}),
        LikedItem("h3", rng.normal(size=8).astype(np.float32), {"genres": frozenset({"Horror"})}),
        LikedItem("h0", rng.normal(size=8).astype(np.float32), {"genres": frozenset({"Drama"})}),
    )
    return UserState(
        history=history,
        profile=profile,
        cf_vector=np.array([0.5, -1.25, 2.0], dtype=np.float32),
        cf_version="cf1",
        cooc={"a": 0.75, "c": 0.25, "d": 0.25, "gone": 0.5},
        seq={"b": 0.4, "c": 0.1},
        ease={"c": 0.0625, "a": 0.03125, "e": -0.5},
        liked=liked,
    )


def test_rescore_params_reproduce_what_features_compute():
    """What the plugin computes from rescore_params, source by source, equals features.compute's columns."""
    rng = np.random.default_rng(4)
    spec = FeatureSpec.for_fields(
        ["year", "released"], ["genres"], {"year": "integer", "released": "date"}, pool=POOL.to_dict()
    )
    state = _state()
    query = rng.normal(size=8).astype(np.float32)
    ctx = RequestContext(now_ms=NOW, path="profile+query", state=state, query_vector=query)
    signals = [
        {
            "ctr": 0.125,
            "popularity_7d": 3.0,
            "popularity_365d": -1.0,
            "popular_rank": 4,
            "trend": -0.5,
            "last_interaction": NOW - 3 * DAY,
            "first_interaction": NOW - 30 * DAY,
            "rating_count": 7,
        },
        {"popular_rank": 9, "trending_rank": 1},
        {},
        {"ctr": 0.0, "rating_mean": 3.5},
        {"popular_rank": 1},
    ]
    fields = [
        {"genres": ["Drama"], "year": 1999, "released": NOW - 400 * DAY},
        {"genres": ["Horror", "Sci-Fi"]},
        {"year": 2005},
        {"genres": "Sci-Fi", "released": NOW - 2 * DAY},
        {"genres": []},
    ]
    cf = [
        np.array([1.0, 0.0, 1.0]),
        None,
        np.array([0.0, -1.0, 0.5]),
        np.array([2.0, 2.0, 2.0]),
        np.array([0.25, 0.0, 0.0]),
    ]
    ids = ["a", "b", "c", "d", "e"]
    candidates = [
        Candidate(
            i,
            0.8,
            None,
            {**f, "signals": s},
            vector=rng.normal(size=8).astype(np.float32),
            cf_vector=None if v is None else v.astype(np.float32),
        )
        for i, f, s, v in zip(ids, fields, signals, cf)
    ]
    candidates[4].vector = None  # no text vector: the cosines and rank_text are missing
    expected = F.compute(spec, candidates, ctx)
    col = {n: expected[:, i] for i, n in enumerate(spec.names)}

    params = R.rescore_params(spec, ctx, encode=False)
    json.dumps(params, allow_nan=False)
    assert params["now_ms"] == NOW
    assert params["hist_len"] == col["hist_len"][0] == np.float32(math.log1p(4))  # the impression is no interaction
    assert params["days_since_active"] == col["days_since_active"][0] == 1.0
    assert params["query_present"] == col["query_present"][0] == 1.0
    assert params["path_code"] == col["path_code"][0] == 2.0
    assert params["cooc"] == {"values": {"a": 0.75, "c": 0.25, "d": 0.25, "gone": 0.5}, "default": None}
    assert params["seq"] == {"values": {"b": 0.4, "c": 0.1}, "default": None}
    assert params["ease"] == {"values": {"c": 0.0625, "a": 0.03125, "e": -0.5}, "default": None}
    assert params["history_genres"] == {
        "sets": [["Comedy", "Drama"], ["Horror"], ["Drama"]],
        "weights": [1.0, 1.0, 1.0],
    }
    profile = np.asarray(params["profile_vector"], dtype=np.float32)
    query_param = np.asarray(params["query_vector"], dtype=np.float32)
    hist = [np.asarray(v, dtype=np.float32) for v in params["history_vectors"]]
    cf_param = np.asarray(params["cf_vector"], dtype=np.float32)
    np.testing.assert_array_equal(cf_param, state.cf_vector)

    rows = []
    for c in candidates:
        has = c.vector is not None
        row = {
            "cos_profile": _plugin_cosine(c.vector, [profile], "max") if has else math.nan,
            "cos_query": _plugin_cosine(c.vector, [query_param], "max") if has else math.nan,
            "cos_hist_max": _plugin_cosine(c.vector, hist, "max") if has else math.nan,
            "cos_hist_mean": _plugin_cosine(c.vector, hist, "mean") if has else math.nan,
            "cf_score": _plugin_dot(c.cf_vector, cf_param),
            "cooc": _plugin_param_map(c.item_id, params["cooc"]),
            "seq": _plugin_param_map(c.item_id, params["seq"]),
            "ease": _plugin_param_map(c.item_id, params["ease"]),
            "popular_rank": c.fields["signals"].get("popular_rank", math.nan),
            "trending_rank": c.fields["signals"].get("trending_rank", math.nan),
            "item.year": c.fields.get("year", math.nan),
            "age.released": (NOW - c.fields["released"]) / DAY if "released" in c.fields else math.nan,
            "affinity.genres": _plugin_overlap(_doc_facets(c.fields.get("genres")), params["history_genres"]),
        }
        rows.append({k: float(np.float32(v)) for k, v in row.items()})  # every feature is stored as float32
    for name, of in F.POOL_RANKS.items():
        for row, r in zip(rows, _plugin_rank([row[of] for row in rows], ids)):
            row[name] = r
    entry = R.plugin_features(spec)[spec.names.index("n_sources")]
    for row, n in zip(rows, _plugin_count(rows, entry["of"], entry["limits"])):
        row["n_sources"] = n
    for i, row in enumerate(rows):
        for name, value in row.items():
            _same(col[name][i], value, (ids[i], name))

    # The concrete values, so that both sides being wrong alike would show.
    assert list(col["cf_score"][[0, 2, 3, 4]]) == [2.5, 2.25, 2.5, 0.125] and np.isnan(col["cf_score"][1])
    assert [col["rank_cf"][i] for i in (0, 2, 3, 4)] == [1.0, 3.0, 2.0, 4.0]  # a and d tie: by item id
    np.testing.assert_array_equal(col["cooc"], np.array([0.75, np.nan, 0.25, 0.25, np.nan], np.float32))
    np.testing.assert_array_equal(col["rank_cooc"], [1, np.nan, 2, 3, np.nan])
    np.testing.assert_array_equal(col["seq"], np.array([np.nan, 0.4, 0.1, np.nan, np.nan], np.float32))
    np.testing.assert_array_equal(col["rank_seq"], [np.nan, 1, 2, np.nan, np.nan])
    np.testing.assert_array_equal(col["ease"], np.array([0.03125, np.nan, 0.0625, np.nan, -0.5], np.float32))
    np.testing.assert_array_equal(col["rank_ease"], [2, np.nan, 1, np.nan, 3])  # a negative score is ranked too
    assert np.isnan(col["rank_text"][4]) and sorted(col["rank_text"][:4]) == [1, 2, 3, 4]
    np.testing.assert_array_equal(col["affinity.genres"], np.array([2 / 3, 1 / 3, np.nan, 0, np.nan], np.float32))
    np.testing.assert_array_equal(col["age.released"], [400, np.nan, np.nan, 2, np.nan])
    # n_sources: text (rank <= 8), cf (<= 2), cooc (<= 4), seq (<= 3), ease (<= 2), popular (<= 5); a NaN
    # rank never counts
    within = lambda name, limit: np.nan_to_num(col[name], nan=np.inf) <= limit  # noqa: E731
    want_sources = (
        within("rank_text", 8).astype(int)
        + within("rank_cf", 2)
        + within("rank_cooc", 4)
        + within("rank_seq", 3)
        + within("rank_ease", 2)
        + within("popular_rank", 5)
    )
    # a: text, cf 1, cooc, ease 2, popular 4; b: text, seq; c: text, cooc, seq, ease 1 (cf 3 > 2);
    # d: text, cf 2, cooc; e: popular 1 (cf 4 > 2, ease 3 > 2)
    assert list(col["n_sources"]) == list(want_sources) == [5, 2, 4, 3, 1]

    # Base64 vectors hold the same values; without a state the inputs are left out (missing in
    # the plugin, NaN in compute).
    encoded = R.rescore_params(spec, ctx)
    np.testing.assert_array_equal(R.decode_vector(encoded["query_vector"]), query)
    np.testing.assert_array_equal(R.decode_vector(encoded["cf_vector"]), state.cf_vector)
    empty = R.rescore_params(spec, RequestContext(now_ms=NOW, path="query"))
    assert empty == {"now_ms": NOW, "hist_len": 0.0, "days_since_active": None, "query_present": 0.0, "path_code": 3.0}
    bare = F.compute(spec, candidates, RequestContext(now_ms=NOW, path="query"))
    for name in ("cos_profile", "cos_hist_max", "cf_score", "cooc", "seq", "affinity.genres", "days_since_active"):
        assert np.isnan(bare[:, spec.names.index(name)]).all(), name


def _doc_facets(value) -> set[str]:
    """A doc's keyword doc values for a facet field (what ``overlap`` reads)."""
    return set(F.facet_values(value))


def test_cooc_seq_and_ease_are_param_maps_keyed_by_item_id():
    spec = FeatureSpec()
    features = R.plugin_features(spec)
    assert [f["name"] for f in features] == spec.names
    for name in ("cooc", "seq", "ease"):
        assert (
            features[spec.names.index(name)]
            == R.feature_source(name)
            == {"name": name, "source": "param_map", "param": name, "key_field": "item_id"}
        )

    # What the plugin looks up (values[item_id], else default: null, missing) equals compute's column.
    ids = ["a", "b", "c", "d"]
    state = UserState(cooc={"a": 0.75, "c": 0.25}, seq={"d": 1.5}, ease={"b": -0.25, "c": 2.0})
    ctx = RequestContext(now_ms=NOW, path="profile", state=state)
    candidates = [Candidate(i, 0.5, None, {}) for i in ids]
    m = F.compute(spec, candidates, ctx)
    params = R.rescore_params(spec, ctx)
    json.dumps(params, allow_nan=False)
    for name in ("cooc", "seq", "ease"):
        looked_up = np.array([_plugin_param_map(i, params[name]) for i in ids], dtype=np.float32)
        np.testing.assert_array_equal(looked_up, m[:, spec.names.index(name)])
    np.testing.assert_array_equal(m[:, spec.names.index("cooc")], np.array([0.75, np.nan, 0.25, np.nan], np.float32))

    # No scores: the param is left out and every hit's value is missing, as compute's NaN.
    assert "cooc" not in R.rescore_params(
        spec, RequestContext(now_ms=NOW, path="profile", state=UserState(seq={"a": 1}))
    )
    assert "seq" not in R.rescore_params(
        spec, RequestContext(now_ms=NOW, path="profile", state=UserState(cooc={"a": 1}))
    )
    # numpy values become JSON numbers, NaN becomes null (missing), keys become strings
    odd = UserState(cooc={"a": np.float32(0.5), "b": float("nan"), 7: np.int64(1)})
    numpy_values = R.rescore_params(spec, RequestContext(now_ms=NOW, path="profile", state=odd))
    assert numpy_values["cooc"] == {"values": {"a": 0.5, "b": None, "7": 1.0}, "default": None}
    assert type(numpy_values["cooc"]["values"]["a"]) is float
    for bad in ("0.5", True, float("inf")):
        with pytest.raises(ValueError, match="cooc value"):
            R.rescore_params(spec, RequestContext(now_ms=NOW, path="profile", state=UserState(cooc={"a": bad})))
    body = R.rescore_body(model_id="m", params=params, window_size=10)
    assert body["vecrank"]["params"]["cooc"] == params["cooc"]


def test_a_param_map_key_field_must_be_a_keyword_with_doc_values():
    mapping = {
        "properties": {
            "item_id": {"type": "keyword"},
            "title": {"type": "text"},
            "sku": {"type": "keyword", "doc_values": False},
            "year": {"type": "integer"},
        }
    }
    client = SimpleNamespace(indices=SimpleNamespace(get_mapping=lambda index: {"items-1": {"mappings": mapping}}))
    cooc = R.feature_source("cooc")
    R.validate_plugin_features(client, "items", [R.feature_source("item.year"), cooc, R.feature_source("seq")])
    for field, problem in (
        ("title", "which is a text field, not keyword"),
        ("year", "which is a integer field"),
        ("sku", "which has doc_values: false"),
        ("missing", "which is not mapped"),
    ):
        with pytest.raises(
            R.PluginFeatureError,
            match=f"feature 'cooc' looks up its values by key field '{field}', " f"{problem}.* in index 'items-1'",
        ):
            R.validate_plugin_features(client, "items", [dict(cooc, key_field=field)])
    with pytest.raises(R.PluginFeatureError, match="has no key_field"):
        R.validate_plugin_features(client, "items", [{"name": "cooc", "source": "param_map", "param": "cooc"}])


def test_cf_score_needs_a_float_vector_only_once_it_is_mapped():
    """Before any collaborative fit the items have no cf_vector: cf_score is just missing (as in
    Python); a cf_vector that is not a float dense_vector is refused."""

    def client(props):
        return SimpleNamespace(
            indices=SimpleNamespace(get_mapping=lambda index: {"items-1": {"mappings": {"properties": props}}})
        )

    dot = R.feature_source("cf_score")
    spec = FeatureSpec.for_fields([], [], {}, pool=POOL.to_dict())
    rank_and_count = [f for f in R.plugin_features(spec) if f["source"] in ("rank", "count")]
    assert [f["name"] for f in rank_and_count] == [
        "rank_cf",
        "rank_text",
        "rank_cooc",
        "rank_seq",
        "rank_ease",
        "n_sources",
    ]
    R.validate_plugin_features(client({"item_id": {"type": "keyword"}}), "items", [dot, *rank_and_count])
    R.validate_plugin_features(client({"cf_vector": {"type": "dense_vector", "dims": 3}}), "items", [dot])
    with pytest.raises(
        R.PluginFeatureError,
        match="feature 'cf_score' computes a dot on field 'cf_vector', which is " "a float field, not a dense_vector",
    ):
        R.validate_plugin_features(client({"cf_vector": {"type": "float"}}), "items", [dot])
    with pytest.raises(R.PluginFeatureError, match="whose element_type is byte"):
        R.validate_plugin_features(
            client({"cf_vector": {"type": "dense_vector", "element_type": "byte"}}), "items", [dot]
        )


# --- the local node's plugin homes ----------------------------------------------------------------


def test_pom_builds_for_the_pinned_version_by_default():
    pom = (REPO / "plugin" / "pom.xml").read_text()
    assert re.search(r"<es\.version>([^<]+)</es\.version>", pom).group(1) == distribution.ES_VERSION
    assert lplugin.source_version() is not None


def _fake_zip(path: Path, name="vecrank-rescorer", es="9.5.2") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("plugin-descriptor.properties", f"# c\nname={name}\nversion=0.1.0\nelasticsearch.version={es}\n")
    return path


def test_zips_are_checked_before_installing(tmp_path):
    z = lplugin.read_zip(_fake_zip(tmp_path / "a.zip"))
    assert (z.version, z.es_version, len(z.sha256)) == ("0.1.0", "9.5.2", 64)
    with pytest.raises(LocalNodeError, match="holds plugin 'other'"):
        lplugin.read_zip(_fake_zip(tmp_path / "b.zip", name="other"))
    (tmp_path / "c.zip").write_text("not a zip")
    with pytest.raises(LocalNodeError, match="not an Elasticsearch plugin zip"):
        lplugin.read_zip(tmp_path / "c.zip")
    old = lplugin.read_zip(_fake_zip(tmp_path / "d.zip", es="9.4.0"))
    dist = distribution.Distribution("9.5.2", tmp_path)
    with pytest.raises(
        LocalNodeError,
        match=r"built for Elasticsearch 9\.4\.0, but the local node runs 9\.5\.2.*" r"--es-version 9\.5\.2",
    ):
        lplugin.check_versions(dist, old)


def test_the_node_starts_from_the_recorded_home_only_when_it_fits(tmp_path, caplog):
    dist = distribution.Distribution("9.5.2", tmp_path / "plain")
    base = tmp_path / "state"
    assert lplugin.home_for_node(dist, base) == dist
    home = tmp_path / "home"
    home.mkdir()
    (base / "es").mkdir(parents=True)
    record = {"es_home": str(home), "es_version": "9.5.2"}
    (base / "es" / "plugin.json").write_text(json.dumps(record))
    assert lplugin.home_for_node(dist, base) == dist  # the home lacks its marker: not a finished install
    assert "is gone" in caplog.text
    (home / lplugin.HOME_MARKER).write_text("{}")
    assert lplugin.home_for_node(dist, base) == distribution.Distribution("9.5.2", home)
    other = distribution.Distribution("9.6.0", tmp_path / "plain")
    assert lplugin.home_for_node(other, base) == other
    assert "installed for Elasticsearch 9.5.2" in caplog.text


def test_link_tree_shares_files_but_copies_config(tmp_path):
    src = tmp_path / "es"
    (src / "lib").mkdir(parents=True)
    (src / "config").mkdir()
    (src / "lib" / "a.jar").write_bytes(b"jar")
    (src / "config" / "jvm.options").write_text("-Xms1g\n")
    (src / "bin").mkdir()
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    (src / "bin" / "tool").chmod(0o755)
    dst = tmp_path / "copy"
    lplugin._link_tree(src, dst)
    assert (dst / "lib" / "a.jar").stat().st_ino == (src / "lib" / "a.jar").stat().st_ino
    assert (dst / "config" / "jvm.options").stat().st_ino != (src / "config" / "jvm.options").stat().st_ino
    assert (dst / "bin" / "tool").stat().st_mode & 0o111


def test_cli_plugin_help_and_local_status(capsys, tmp_path):
    result = run_cli(capsys, "plugin", "--help")
    assert result.code == 0
    for command in ("build", "install", "status", "remove"):
        assert re.search(rf"^  {command} ", result.out, re.M)
    result = run_cli(capsys, "--state-dir", str(tmp_path), "plugin", "status", "--local-only", "--json")
    assert result.code == 0
    info = json.loads(result.out)
    assert info["plugin"] == "vecrank-rescorer" and info["installed"] is None and info["local_node"] is None
    assert info["source"] == str(REPO / "plugin")
    result = run_cli(capsys, "--state-dir", str(tmp_path), "plugin", "remove")
    assert result.code == 0 and "No plugin was installed" in result.out


def test_docker_files_name_the_pinned_versions():
    # A consistency check of the files only: no Docker engine here, so nothing is built (the
    # compose setup is untested, as the README says).
    compose = (REPO / "docker" / "docker-compose.yml").read_text()
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    pinned = distribution.ES_VERSION
    assert f'ES_VERSION: "{pinned}"' in compose and f"elasticsearch-vecrank:{pinned}" in compose
    assert f"ARG ES_VERSION={pinned}" in dockerfile
    assert f"vecrank-rescorer-{lplugin.source_version()}-es${{ES_VERSION}}.zip" in dockerfile
    assert "elasticsearch-plugin install --batch" in dockerfile


def test_a_restart_keeps_the_settings_the_node_was_started_with(tmp_path):
    from vecrank.localnode import node

    nodes = [node.NodeState(name="vecrank-1", dir=str(tmp_path / "node-1"), http_port=9299, transport_port=9399)]
    (tmp_path / "node-1" / "config").mkdir(parents=True)
    extra = {
        "indices.query.bool.max_clause_count": "2048",
        "http.max_content_length": "200mb",
        "xpack.security.http.ssl.enabled": False,
    }
    (tmp_path / "node-1" / "config" / "elasticsearch.yml").write_text(node._node_yaml(nodes[0], nodes, True, extra))
    cluster = SimpleNamespace(nodes=nodes, tls=True)
    assert lplugin._extra_settings(cluster) == extra
