"""The rescorer plugin on a real node: parity with XGBoost and with the Python features, versions, errors.

The plugin is built from ``plugin/`` and installed into the local test node by the ``plugin_es``
fixture (a restart, once). Items come from a small catalog embedded with the packaged MiniLM,
with hand-set behavioural signals and collaborative vectors; requests are made from
:class:`~vecrank.rank.state.UserState` objects by :func:`rescore_params`, and every feature the
plugin explains is held to :func:`features.compute` on the same hits. Models are trained on
synthetic rows in the features' real ranges, with missing values, so that their trees split where
real candidates fall.
"""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
import xgboost as xgb
from clihelp import connection_args, run_cli
from elasticsearch import ApiError, NotFoundError

from vecrank.ingest.embed import Embedder
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.rank import features as F
from vecrank.rank import rescore as R
from vecrank.rank.features import FeatureSpec, RequestContext
from vecrank.rank.model import RankerModel, Registry
from vecrank.rank.offline import PoolConfig
from vecrank.rank.profiles import Interest, Profile
from vecrank.rank.recommender import Candidate
from vecrank.rank.state import LikedItem, UserState

pytestmark = pytest.mark.slow

NOW = 1_700_000_000_000
DAY = 86_400_000
FIELD_TYPES = {"year": "integer", "released": "date"}
POOL = PoolConfig(text=10, cf=8, cooc=4, seq=3, ease=3, popular=6, trending=4)
SPEC = FeatureSpec.for_fields(["year", "released"], ["genres"], FIELD_TYPES, pool=POOL.to_dict())
NAMES = SPEC.names
CF_DIMS = 3
TOL = 1e-5
#: features computed from float32 vectors or logarithms: the plugin and numpy may round the last bit apart
ROUNDED = (
    "cos_profile",
    "cos_query",
    "cos_hist_max",
    "cos_hist_mean",
    "cf_score",
    "pop_1d",
    "pop_7d",
    "pop_30d",
    "pop_365d",
    "rating_count",
    "hist_len",
)

TEXTS = {
    "Horror": [
        "A haunted house hides a ghost in the attic",
        "Zombies overrun a small town at night",
        "A cursed doll terrifies a family",
        "Vampires hunt in a foggy city",
        "A possessed child and an exorcism",
        "Werewolves under the full moon",
    ],
    "Space": [
        "Astronauts repair a space station in orbit",
        "A rover explores the surface of Mars",
        "Rockets launch a telescope into deep space",
        "Landing on the Moon: the Apollo missions",
        "The life and death of stars and black holes",
        "Comets that pass near the Earth",
    ],
    "Cooking": [
        "A chef teaches how to bake sourdough bread",
        "Street food tour tasting tacos",
        "The perfect Italian pasta from scratch",
        "A baker shares secrets of croissants",
        "Grilling steaks over charcoal",
        "Vegan desserts for every season",
    ],
    "Romance": [
        "Two strangers fall in love in Paris",
        "A wedding planner falls for the groom",
        "Letters between lovers during the war",
        "A summer romance on the beach",
        "Old flames meet again at a reunion",
        "A royal prince marries a commoner",
    ],
}


def catalog() -> list[dict]:
    rows = []
    for genre, texts in TEXTS.items():
        for i, text in enumerate(texts):
            genres = [genre] + (["Drama"] if i % 2 else []) + (["Thriller"] if genre == "Horror" and i % 3 == 0 else [])
            row = {"id": f"{genre[:2].lower()}{i}", "title": text, "year": 2000 + (i * 3) % 9}
            if i != 5:  # one item per genre has no facet at all
                row["genres"] = genres
            if i % 3 != 1:  # and some have no release date
                row["released"] = f"20{10 + i}-0{1 + i % 9}-1{i % 10}"
            rows.append(row)
    return rows


def _f32(x: float) -> float:
    """A float32-representable double: float fields hold float32, _source the double it came from."""
    return float(np.float32(x))


def signals_for(i: int, rng: np.random.Generator) -> dict:
    s = {"impressions": int(rng.integers(10, 500)), "clicks": int(rng.integers(0, 10))}
    if i % 5 != 1:
        s["ctr"] = _f32(rng.uniform(0, 0.3))
    for days in (1, 7, 30, 365):
        if i % 4 != days % 4:
            s[f"popularity_{days}d"] = _f32(rng.uniform(-1, 60))
    if i % 4 != 3:
        s["trend"] = _f32(rng.uniform(-2, 2))
    if i % 2 == 0:
        s["popular_rank"] = i // 2 + 1  # 1..12: the first 6 are within the pool's popular source
    if i % 3 == 0:
        s["trending_rank"] = 8 - i // 3  # 8..1: half within the pool's trending source
    if i % 3 != 2:
        s["last_interaction"] = int(NOW - rng.uniform(0, 60) * DAY)
        s["first_interaction"] = int(NOW - rng.uniform(60, 400) * DAY)
    if i % 6 != 0:
        s["rating_mean"] = _f32(rng.uniform(1, 5))
        s["rating_count"] = int(rng.integers(0, 300))
    return s


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def world(plugin_es, es_settings, embedder, tmp_path_factory):
    """A catalog with signals and collaborative vectors, and the settings that name its indices
    (cleaned up afterwards)."""
    import dataclasses

    es = plugin_es
    prefix = f"vrt-{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(es_settings, index_prefix=prefix)
    path = tmp_path_factory.mktemp("plugin") / "items.jsonl"
    rows = catalog()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = ingest_items(
        es, settings, path, ItemSource(template="{title}", field_types=FIELD_TYPES), embedder=embedder
    )
    assert summary.written == len(rows)
    rng = np.random.default_rng(11)
    items = settings.index("items")
    # What `vecrank cf fit` maps (ingest.indices.items_mapping with cf_dims): a max_inner_product float vector.
    es.indices.put_mapping(
        index=items,
        properties={
            "cf_vector": {
                "type": "dense_vector",
                "dims": CF_DIMS,
                "index": True,
                "similarity": "max_inner_product",
                "index_options": {"type": "hnsw"},
            }
        },
    )
    for i, row in enumerate(rows):
        doc = {"signals": signals_for(i, rng)}
        if i % 7 != 3:  # some items have no collaborative vector
            doc["cf_vector"] = [_f32(x) for x in rng.normal(size=CF_DIMS)]
        es.update(index=items, id=row["id"], doc=doc)
    es.indices.refresh(index=items)
    yield settings
    names = list(es.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


# --- models ------------------------------------------------------------------------------------

RANGES = {
    "cos_profile": (-0.1, 0.8),
    "cos_query": (-0.1, 0.8),
    "cos_hist_max": (-0.1, 0.9),
    "cos_hist_mean": (-0.1, 0.6),
    "cf_score": (-3, 3),
    "cooc": (0, 1),
    "seq": (0, 1),
    "ease": (-0.1, 1),
    "ctr": (0, 0.3),
    "pop_1d": (0, 4.2),
    "pop_7d": (0, 4.2),
    "pop_30d": (0, 4.2),
    "pop_365d": (0, 4.2),
    "trend": (-2, 2),
    "popular_rank": (1, 12),
    "trending_rank": (1, 8),
    "days_since_interaction": (0, 60),
    "item_age": (60, 400),
    "rating_mean": (1, 5),
    "rating_count": (0, 5.7),
    "rank_cf": (1, 24),
    "rank_text": (1, 24),
    "rank_cooc": (1, 5),
    "rank_seq": (1, 3),
    "rank_ease": (1, 3),
    "n_sources": (0, 6),
    "item.year": (2000, 2008),
    "age.released": (-800, 4000),
    "hist_len": (0, 3),
    "days_since_active": (0, 10),
    "affinity.genres": (0, 1),
    "query_present": (0, 1),
    "path_code": (0, 5),
}
WHOLE = (
    "popular_rank",
    "trending_rank",
    "rank_cf",
    "rank_text",
    "rank_cooc",
    "rank_seq",
    "rank_ease",
    "n_sources",
    "query_present",
    "path_code",
)


def synthetic_rows(n: int, seed: int, names: list[str] = NAMES) -> np.ndarray:
    """Rows in each feature's real range (NaN for a fifth of them), so the trees split where candidates are."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.uniform(*RANGES[n_], size=n) for n_ in names]).astype(np.float32)
    for name in WHOLE:
        if name in names:
            X[:, names.index(name)] = np.round(X[:, names.index(name)])
    X[rng.random(X.shape) < 0.2] = np.nan
    return X


def train(objective: str, depth: int, seed: int, rounds: int = 25) -> xgb.Booster:
    X = synthetic_rows(600, seed)
    rng = np.random.default_rng(seed + 100)
    z = np.nan_to_num(X, nan=0.0)
    col = {n: z[:, i] for i, n in enumerate(NAMES)}
    signal = (
        3 * col["cos_profile"]
        + 2 * col["affinity.genres"]
        + 5 * col["ctr"]
        - 0.03 * col["days_since_interaction"]
        + 0.3 * col["pop_7d"]
        + 0.2 * (col["item.year"] - 2004)
        + 0.5 * col["cos_hist_max"]
        + 0.5 * col["cf_score"]
        + 3 * col["cooc"]
        + 2 * col["seq"]
        - 0.05 * col["rank_text"]
        + 0.4 * col["n_sources"]
        - 0.001 * col["age.released"]
        + rng.normal(0, 0.3, len(X))
    )
    params = {"objective": objective, "max_depth": depth, "eta": 0.3, "seed": seed, "nthread": 1}
    if objective.startswith("rank:"):
        y = np.digitize(signal, np.quantile(signal, [0.5, 0.8, 0.95]))
        dm = xgb.DMatrix(X, label=y, missing=np.nan, feature_names=NAMES, qid=np.repeat(np.arange(30), 20))
    elif objective == "binary:logistic":
        dm = xgb.DMatrix(X, label=(signal > np.median(signal)).astype(int), missing=np.nan, feature_names=NAMES)
    else:
        dm = xgb.DMatrix(X, label=signal, missing=np.nan, feature_names=NAMES)
    return xgb.train(params, dm, rounds)


MODELS = [
    ("ndcg-d1", "rank:ndcg", 1),
    ("ndcg-d2", "rank:ndcg", 2),
    ("ndcg-d4", "rank:ndcg", 4),
    ("ndcg-d6", "rank:ndcg", 6),
    ("pairwise-d3", "rank:pairwise", 3),
    ("logistic-d3", "binary:logistic", 3),
    ("logistic-d5", "binary:logistic", 5),
    ("squared-d3", "reg:squarederror", 3),
]


def register(
    es, settings, model_id: str, booster: xgb.Booster, *, status: str = "active", features: list[dict] | None = None
) -> RankerModel:
    registry = Registry(es, settings)
    model = registry.register(RankerModel.from_booster(model_id, SPEC, booster), status=status)
    es.update(
        index=settings.index("models"),
        id=f"{model_id}@{model.version}",
        doc={"plugin_features": features if features is not None else R.plugin_features(SPEC)},
        refresh="wait_for",
    )
    return model


@pytest.fixture(scope="module")
def models(plugin_es, world):
    out = {}
    for i, (model_id, objective, depth) in enumerate(MODELS):
        booster = train(objective, depth, seed=i)
        register(plugin_es, world, model_id, booster)
        out[model_id] = booster
    return out


# --- requests ----------------------------------------------------------------------------------


def item_vectors(es, settings, ids: list[str]) -> dict[str, np.ndarray]:
    hits = es.search(
        index=settings.index("items"), query={"ids": {"values": ids}}, size=len(ids), fields=["embedding"], source=False
    )["hits"]["hits"]
    return {h["_id"]: np.asarray(h["fields"]["embedding"], dtype=np.float32) for h in hits}


def _genres(item: str) -> frozenset[str]:
    return frozenset(next(r for r in catalog() if r["id"] == item).get("genres", ()))


def _profile(vector: np.ndarray) -> Profile:
    return Profile(
        interests=(Interest(np.asarray(vector, dtype=np.float32), 1.0),),
        n_events=1,
        positive_weight=1.0,
        negative_weight=0.0,
    )


def requests(es, settings, embedder) -> list[dict]:
    """Three users, each a UserState: a horror fan with history, collaborative vector, co-occurrence
    and sequence scores (one tie, one score for an item not in the index); a space searcher with a
    query and no history; a multi-interest user whose params carry base64 vectors."""
    hv = item_vectors(es, settings, ["ho0", "ho1", "ho3", "sp1"])
    encode = embedder.encode
    fan = UserState(
        history=(
            {"item_id": "ro0", "type": "rating", "value": 1.0, "timestamp": NOW - 2 * DAY},
            {"item_id": "ho3", "type": "click", "timestamp": NOW - 3 * DAY},
            {"item_id": "ho1", "type": "purchase", "timestamp": NOW - 4 * DAY},
            {"item_id": "ho0", "type": "click", "timestamp": NOW - 9 * DAY},
        ),
        profile=_profile(encode(["ghosts and monsters at night"])[0]),
        cf_vector=np.array([0.8, -0.3, 1.1], dtype=np.float32),
        cf_version="cf1",
        cooc={"ho2": 0.625, "ho4": 0.25, "sp0": 0.25, "co3": 0.125, "ro2": 0.0625, "no-such-item": 0.9},
        seq={"ho5": 0.5, "ho2": 0.375, "sp3": 0.125},
        ease={"ho4": 0.75, "ho5": 0.5, "sp3": 0.015625},
        liked=tuple(LikedItem(i, hv[i], {"genres": _genres(i)}) for i in ("ho3", "ho1", "ho0")),
    )
    searcher = UserState(profile=_profile(encode(["rockets and planets"])[0]))
    mixed = UserState(
        history=(
            {"item_id": "sp1", "type": "click", "timestamp": NOW - 37 * DAY},
            {"item_id": "ho0", "type": "click", "timestamp": NOW - 50 * DAY},
        ),
        profile=_profile(hv["sp1"]),
        cf_vector=np.array([-0.5, 1.5, 0.25], dtype=np.float32),
        cf_version="cf1",
        cooc={"sp2": 0.5, "sp4": 0.5, "ho1": 0.25},
        seq={"sp2": 1.0},
        liked=tuple(LikedItem(i, hv[i], {"genres": _genres(i)}) for i in ("sp1", "ho0")),
    )
    contexts = [
        (RequestContext(now_ms=NOW, path="profile", state=fan), False),
        (
            RequestContext(
                now_ms=NOW, path="profile+query", state=searcher, query_vector=encode(["the moon landing"])[0]
            ),
            False,
        ),
        (RequestContext(now_ms=NOW + 3 * DAY, path="multi_interest", state=mixed), True),
    ]
    return [
        {"profile": ctx.state.profile_vector, "ctx": ctx, "params": R.rescore_params(SPEC, ctx, encode=encode_)}
        for ctx, encode_ in contexts
    ]


def search(
    es,
    settings,
    req: dict,
    *,
    model_id: str | None,
    version: int | None = None,
    size: int = 24,
    window: int = 24,
    models_index: str | None = None,
    params: dict | None = None,
) -> list[dict]:
    body = {
        "knn": {
            "field": "embedding",
            "query_vector": np.asarray(req["profile"]).tolist(),
            "k": size,
            "num_candidates": 50,
        },
        "size": size,
        "_source": ["item_id", "year", "released", "genres", "signals"],
        "fields": ["embedding", "cf_vector"],
    }
    if model_id is not None:
        body["explain"] = True
        body["rescore"] = R.rescore_body(
            model_id=model_id,
            version=version,
            params=params or req["params"],
            window_size=window,
            models_index=models_index or settings.index("models"),
        )
    return es.search(index=settings.index("items"), body=body)["hits"]["hits"]


def candidates_of(hits: list[dict]) -> list[Candidate]:
    """The hits as the Python ranker sees them: _source fields, the text and collaborative vectors."""
    out = []
    for h in hits:
        cf = h.get("fields", {}).get("cf_vector")
        out.append(
            Candidate(
                h["_source"]["item_id"],
                h["_score"],
                None,
                h["_source"],
                vector=np.asarray(h["fields"]["embedding"], dtype=np.float32),
                cf_vector=None if cf is None else np.asarray(cf, dtype=np.float32),
            )
        )
    return out


def assert_same_features(got: np.ndarray, want: np.ndarray, names: list[str], what) -> None:
    """Column by column: NaN where the other is NaN, exact equality, or 2e-6 for the ROUNDED ones."""
    for j, name in enumerate(names):
        g, w = got[:, j], want[:, j]
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{what}: {name} missing on other hits")
        ok = ~np.isnan(w)
        if name in ROUNDED:
            np.testing.assert_allclose(g[ok], w[ok], rtol=0, atol=2e-6, err_msg=f"{what}: {name}")
        else:
            np.testing.assert_array_equal(g[ok], w[ok], err_msg=f"{what}: {name}")


# --- parity ------------------------------------------------------------------------------------


def test_plugin_scores_equal_xgboost_predictions(plugin_es, world, models, embedder):
    es = plugin_es
    worst = 0.0
    checked = 0
    rows = []
    for req in requests(es, world, embedder):
        for model_id, booster in models.items():
            hits = search(es, world, req, model_id=model_id)
            assert len(hits) == 24
            X = np.stack([R.explained_features(h["_explanation"], NAMES) for h in hits])
            rows.append(X)
            expected = booster.predict(xgb.DMatrix(X, missing=np.nan, feature_names=NAMES), output_margin=False)
            explained = np.array([R.explained_model_score(h["_explanation"]) for h in hits])
            from_score = R.score_to_model(np.array([h["_score"] for h in hits]))
            np.testing.assert_allclose(explained, expected, rtol=0, atol=TOL, err_msg=model_id)
            np.testing.assert_allclose(from_score, expected, rtol=0, atol=TOL, err_msg=model_id)
            # the hits come in the model's order (ties keep Elasticsearch's order)
            assert list(np.argsort(-expected, kind="stable")) == list(range(len(hits))), model_id
            worst = max(worst, float(np.abs(explained - expected).max()), float(np.abs(from_score - expected).max()))
            checked += len(hits)
            assert len(set(np.round(expected, 6))) > 1, f"{model_id} gives every candidate the same score"
    assert checked == 3 * len(MODELS) * 24
    every = np.concatenate(rows)
    assert np.isnan(every).any(), "some features are missing for some candidates"
    assert not np.isnan(every).all(axis=0).any(), "every feature has a value somewhere"
    print(f"plugin vs Booster.predict: {checked} hits, max |difference| {worst:.2e}")


def test_plugin_features_equal_features_compute(plugin_es, world, models, embedder):
    """Every feature the plugin scored a hit with equals features.compute on the same hits (the
    rescore window is all of them, so the pool ranks and n_sources are over the same candidates)."""
    es = plugin_es
    for n, req in enumerate(requests(es, world, embedder)):
        hits = search(es, world, req, model_id="ndcg-d4")
        assert len(hits) == 24
        got = np.stack([R.explained_features(h["_explanation"], NAMES) for h in hits])
        want = F.compute(SPEC, candidates_of(hits), req["ctx"])
        assert_same_features(got, want, NAMES, f"request {n}")
        col = {name: got[:, j] for j, name in enumerate(NAMES)}
        ids = [h["_source"]["item_id"] for h in hits]
        state = req["ctx"].state
        # Concrete values, beyond the two sides agreeing.
        for name, scores in (("cooc", state.cooc), ("seq", state.seq)):
            want_map = np.array([scores.get(i, np.nan) for i in ids], dtype=np.float32)
            np.testing.assert_array_equal(col[name], want_map, err_msg=name)
        for rank, of in F.POOL_RANKS.items():
            valid = ~np.isnan(col[of])
            assert sorted(col[rank][valid]) == list(range(1, int(valid.sum()) + 1)), rank
            assert np.isnan(col[rank][~valid]).all(), rank
        if state.cf_vector is not None:
            for i, c in enumerate(candidates_of(hits)):
                dot = np.nan if c.cf_vector is None else float(c.cf_vector.astype(np.float64) @ state.cf_vector)
                assert (np.isnan(dot) and np.isnan(col["cf_score"][i])) or col["cf_score"][i] == pytest.approx(
                    dot, abs=2e-6
                )
            assert np.isnan(col["cf_score"]).sum() == sum(c.cf_vector is None for c in candidates_of(hits)) > 0
        else:
            assert np.isnan(col["cf_score"]).all() and np.isnan(col["rank_cf"]).all()
        limits = dict(SPEC.sources)
        counted = sum(np.nan_to_num(col[r], nan=np.inf) <= k for r, k in limits.items())
        np.testing.assert_array_equal(col["n_sources"], counted)
        assert not np.isnan(col["n_sources"]).any()
        for i, h in enumerate(hits):
            released = h["_source"].get("released")
            age = np.nan if released is None else (req["ctx"].now_ms - released) / DAY
            assert (np.isnan(age) and np.isnan(col["age.released"][i])) or col["age.released"][i] == np.float32(age)
        if n == 0:
            # the fan: two co-occurrence scores tie (ho4, sp0 at 0.25): the smaller item id ranks first
            r = {i: col["rank_cooc"][ids.index(i)] for i in ("ho2", "ho4", "sp0", "co3", "ro2")}
            assert r == {"ho2": 1, "ho4": 2, "sp0": 3, "co3": 4, "ro2": 5}
            assert {i: col["rank_seq"][ids.index(i)] for i in ("ho5", "ho2", "sp3")} == {"ho5": 1, "ho2": 2, "sp3": 3}
            assert col["hist_len"][0] == np.float32(math.log1p(4)) and col["days_since_active"][0] == 2.0
        if n == 1:
            assert np.isnan(col["cooc"]).all() and np.isnan(col["affinity.genres"]).all()
            assert (col["query_present"] == 1).all() and (col["path_code"] == 2).all()


def test_hits_past_the_window_follow_in_first_pass_order(plugin_es, world, models, embedder):
    es = plugin_es
    req = requests(es, world, embedder)[0]
    first = [h["_id"] for h in search(es, world, req, model_id=None, size=20)]
    hits = search(es, world, req, model_id="ndcg-d2", size=20, window=6)
    rescored, rest = hits[:6], hits[6:]
    assert {h["_id"] for h in rescored} == set(first[:6])
    assert [h["_id"] for h in rest] == first[6:]
    assert all(h["_score"] < 1e-30 for h in rest) and min(h["_score"] for h in rescored) > 1e-30
    assert all("past the rescore window" in h["_explanation"]["description"] for h in rest)
    # The pool ranks are within the window: compute over the six rescored hits gives the same rows.
    got = np.stack([R.explained_features(h["_explanation"], NAMES) for h in rescored])
    assert_same_features(got, F.compute(SPEC, candidates_of(rescored), req["ctx"]), NAMES, "window of 6")
    assert got[:, NAMES.index("rank_text")].max() == 6


def test_keep_returns_and_fetches_only_the_best_hits_of_the_window(plugin_es, world, models, embedder):
    es = plugin_es
    req = requests(es, world, embedder)[0]
    body = {
        "knn": {
            "field": "embedding",
            "query_vector": np.asarray(req["profile"]).tolist(),
            "k": 24,
            "num_candidates": 50,
        },
        "size": 5,
        "_source": ["item_id"],
        "profile": True,
    }

    def rescored(keep):
        section = R.rescore_body(
            model_id="ndcg-d2", params=req["params"], window_size=24, models_index=world.index("models"), keep=keep
        )
        resp = es.search(index=world.index("items"), body={**body, "rescore": section})
        (shard,) = resp["profile"]["shards"]
        return [h["_id"] for h in resp["hits"]["hits"]], shard["fetch"]["breakdown"]["load_stored_fields_count"]

    whole, loaded_whole = rescored(None)
    kept, loaded_kept = rescored(5)
    assert kept == whole and len(kept) == 5, "the same top 5"
    # Without keep, Elasticsearch loads every hit the rescore returns (the window), though size is 5.
    assert loaded_whole == 24
    assert loaded_kept == 5


# --- per-document params (param_map) -------------------------------------------------------------


def test_cooc_values_given_with_the_request_are_looked_up_by_item_id(plugin_es, world, models, embedder):
    """``cooc`` (source param_map): the plugin reads params["cooc"]["values"][item_id], else the
    default, scores as Booster.predict on those features, and reports them; rank_cooc ranks them."""
    es = plugin_es
    booster = models["ndcg-d4"]
    assert booster.get_score(importance_type="weight").get("cooc", 0) > 0, "the trees split on cooc"
    j, jr = NAMES.index("cooc"), NAMES.index("rank_cooc")
    req = requests(es, world, embedder)[1]  # the searcher: no cooc of its own
    rng = np.random.default_rng(22)
    first = [h["_id"] for h in search(es, world, req, model_id=None)]
    values = {item: _f32(rng.uniform(0, 1)) for item in first[::3]}  # a third of the hits
    values["no-such-item"] = 0.9
    worst, checked = 0.0, 0
    for default in (0.0, None, "absent"):
        ctx = req["ctx"]
        if default is None:  # as rescore_params sends a user's scores
            ctx = RequestContext(
                now_ms=ctx.now_ms,
                path=ctx.path,
                state=UserState(profile=ctx.state.profile, cooc=values),
                query_vector=ctx.query_vector,
            )
        params = R.rescore_params(SPEC, ctx, encode=False)
        if default == 0.0:
            params["cooc"] = {"values": values, "default": 0.0}
        assert ("cooc" in params) == (default != "absent")
        hits = search(es, world, req, model_id="ndcg-d4", params=params)
        assert len(hits) == 24
        X = np.stack([R.explained_features(h["_explanation"], NAMES) for h in hits])
        expected = booster.predict(xgb.DMatrix(X, missing=np.nan, feature_names=NAMES))
        explained = np.array([R.explained_model_score(h["_explanation"]) for h in hits])
        from_score = R.score_to_model(np.array([h["_score"] for h in hits]))
        np.testing.assert_allclose(explained, expected, rtol=0, atol=TOL)
        np.testing.assert_allclose(from_score, expected, rtol=0, atol=TOL)
        assert list(np.argsort(-expected, kind="stable")) == list(range(len(hits)))
        worst = max(worst, float(np.abs(explained - expected).max()), float(np.abs(from_score - expected).max()))
        checked += len(hits)
        ids = [h["_source"]["item_id"] for h in hits]
        got = X[:, j]
        for item, value in zip(ids, got):
            want = np.nan if default == "absent" else values.get(item, default)
            want = np.float32(np.nan if want is None else want)
            assert (np.isnan(want) and np.isnan(value)) or value == want, (item, value, want)
        in_map = sum(i in values for i in ids)
        assert in_map == len(first[::3]) and in_map < len(hits)
        if default == 0.0:
            assert not np.isnan(got).any() and (got == 0).sum() == len(hits) - in_map
            # every hit has a value: ranked 1..24, the zeros last by item id
            zeros = sorted(i for i in ids if i not in values)
            assert [X[ids.index(i), jr] for i in zeros] == list(range(in_map + 1, len(hits) + 1))
        else:
            assert np.isnan(got).sum() == (len(hits) if default == "absent" else len(hits) - in_map)
        np.testing.assert_array_equal(X[:, jr], F.pool_ranks(got, ids).astype(np.float32))
        if default != 0.0:  # what rescore_params sends equals features.compute on the same hits
            assert_same_features(X, F.compute(SPEC, candidates_of(hits), ctx), NAMES, f"default {default}")
    print(f"cooc (param_map) vs Booster.predict: {checked} hits, max |difference| {worst:.2e}")

    bad = dict(req["params"], cooc={"values": {first[0]: "0.5"}, "default": 0})
    exc = error_of(lambda: search(es, world, req, model_id="ndcg-d4", params=bad))
    assert exc.meta.status == 400
    assert f"[params.cooc][values][{first[0]}] must be a number or null, got string 0.5" in reason(exc)
    exc = error_of(lambda: search(es, world, req, model_id="ndcg-d4", params=dict(req["params"], seq=[0.5])))
    assert exc.meta.status == 400 and "[params.seq] must be {" in reason(exc)
    cooc = R.feature_source("cooc")
    with pytest.raises(R.PluginFeatureError, match="key field 'text', which is a text field, not keyword"):
        R.validate_plugin_features(es, world.index("items"), [dict(cooc, key_field="text")])
    with pytest.raises(R.PluginFeatureError, match="key field 'year', which is a integer field, not keyword"):
        R.validate_plugin_features(es, world.index("items"), [dict(cooc, key_field="year")])


# --- versions ----------------------------------------------------------------------------------


def test_the_active_version_is_served_and_a_new_activation_is_picked_up(plugin_es, world, embedder):
    es = plugin_es
    req = requests(es, world, embedder)[1]
    v1, v2 = train("rank:ndcg", 3, seed=41), train("rank:pairwise", 2, seed=42)
    register(es, world, "switch", v1)
    register(es, world, "switch", v2, status="candidate")

    def served(version=None):
        hits = search(es, world, req, model_id="switch", version=version)
        X = np.stack([R.explained_features(h["_explanation"], NAMES) for h in hits])
        described = {h["_explanation"]["description"].split(" (")[0] for h in hits}
        return described, X, np.array([R.explained_model_score(h["_explanation"]) for h in hits])

    described, X, got = served()
    assert described == {"vecrank model [switch] version [1]"}
    np.testing.assert_allclose(got, v1.predict(xgb.DMatrix(X, missing=np.nan, feature_names=NAMES)), atol=TOL)
    described, X, got = served(version=2)  # a pinned version, whatever its status
    assert described == {"vecrank model [switch] version [2]"}
    Registry(es, world).set_status("switch", 2, "active")
    described, X, got = served()
    assert described == {"vecrank model [switch] version [2]"}
    np.testing.assert_allclose(got, v2.predict(xgb.DMatrix(X, missing=np.nan, feature_names=NAMES)), atol=TOL)


# --- errors ------------------------------------------------------------------------------------


def error_of(call) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def reason(exc: ApiError) -> str:
    return json.dumps(exc.body)


def test_unknown_models_and_versions_are_4xx_naming_the_model(plugin_es, world, models, embedder):
    es = plugin_es
    req = requests(es, world, embedder)[0]
    exc = error_of(lambda: search(es, world, req, model_id="nope"))
    assert isinstance(exc, NotFoundError) and exc.meta.status == 404
    assert f"model [nope] is not registered in [{world.index('models')}]" in reason(exc)
    exc = error_of(lambda: search(es, world, req, model_id="ndcg-d1", version=9))
    assert exc.meta.status == 404
    assert "model [ndcg-d1] has no version [9]" in reason(exc) and "v1 (active)" in reason(exc)
    exc = error_of(lambda: search(es, world, req, model_id="ndcg-d1", models_index="vrt-no-such-models"))
    assert exc.meta.status == 404 and "the models index [vrt-no-such-models] does not exist" in reason(exc)
    bad = dict(req["params"], profile_vector=[1.0, 0.0, 0.0])
    exc = error_of(lambda: search(es, world, req, model_id="ndcg-d1", params=bad))
    assert exc.meta.status == 400
    assert "[params.profile_vector] has a vector of 3 dimensions; field [embedding] has 384" in reason(exc)
    bad = dict(req["params"], cf_vector=[1.0, 0.0])
    exc = error_of(lambda: search(es, world, req, model_id="ndcg-d1", params=bad))
    assert exc.meta.status == 400
    assert "feature [cf_score]: [params.cf_vector] has a vector of 2 dimensions; field [cf_vector] has 3" in reason(exc)


def test_models_the_plugin_cannot_serve_are_refused_with_the_reason(plugin_es, world, models, embedder):
    es = plugin_es
    req = requests(es, world, embedder)[0]
    swapped = R.plugin_features(SPEC)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    register(es, world, "swapped", train("rank:ndcg", 2, seed=7), features=swapped)
    exc = error_of(lambda: search(es, world, req, model_id="swapped"))
    assert exc.meta.status == 400
    assert "model [swapped] version [1] [plugin_features] names" in reason(exc)
    assert "differ from [spec.names]" in reason(exc)

    doc = es.get(index=world.index("models"), id="swapped@1")["_source"]
    with pytest.raises(R.PluginFeatureError, match=r"refuses model 'swapped'.*differ from \[spec.names\]"):
        R.validate_model_doc(es, doc)
    good = dict(doc, plugin_features=R.plugin_features(SPEC))
    answer = R.validate_model_doc(es, good)
    assert answer == {
        "valid": True,
        "model_id": "swapped",
        "version": 1,
        "objective": "rank:ndcg",
        "features": len(NAMES),
        "trees": 25,
    }

    softmax = xgb.train(
        {"objective": "multi:softmax", "num_class": 3, "max_depth": 2},
        xgb.DMatrix(synthetic_rows(90, 1), label=np.arange(90) % 3, missing=np.nan, feature_names=NAMES),
        3,
    )
    with pytest.raises(R.PluginFeatureError, match=r"objective \[multi:softmax\] is not supported"):
        R.validate_model_doc(es, dict(good, booster=bytes(softmax.save_raw("json")).decode(), objective=None))
    with pytest.raises(R.PluginFeatureError, match="not valid JSON"):
        R.validate_model_doc(es, dict(good, booster='{"learner": '))


def test_registration_refuses_features_that_map_to_no_usable_field(plugin_es, world):
    es = plugin_es
    items = world.index("items")
    good = R.plugin_features(SPEC)
    R.validate_plugin_features(es, items, good)
    with pytest.raises(R.PluginFeatureError, match=r"feature 'item.rating' reads field 'rating', which is not mapped"):
        R.validate_plugin_features(es, items, R.plugin_features(FeatureSpec(item_numeric=("rating",))))
    with pytest.raises(
        R.PluginFeatureError,
        match=r"'affinity.text' matches facet values of field 'text', which is a " r"text field, not keyword",
    ):
        R.validate_plugin_features(es, items, R.plugin_features(FeatureSpec(facets=("text",))))
    days_on_int = [{"name": "age", "source": "field", "field": "year", "transform": "days_since"}]
    with pytest.raises(R.PluginFeatureError, match="needs a date or long field, not integer"):
        R.validate_plugin_features(es, items, days_on_int)
    doc = {"model_id": "x", "version": 1, "spec": {"names": SPEC.names}, "booster": "{}", "plugin_features": good}
    with pytest.raises(R.PluginFeatureError, match="refuses model 'x'"):
        R.validate_plugin_features(es, items, good, model_doc=doc)


# --- installation ------------------------------------------------------------------------------


def test_install_again_changes_nothing_and_status_reports_the_plugin(plugin_es, es_settings, capsys):
    from conftest import TEST_STATE

    from vecrank.localnode import LocalCluster, plugin

    local = LocalCluster.load(TEST_STATE)
    if local is None or local.url != es_settings.es_url:
        pytest.skip("the cluster under test was not started by vecrank")
    result = plugin.install(base=TEST_STATE)
    assert result.running and not result.restarted and not result.created
    assert LocalCluster.load(TEST_STATE).es_home == str(result.es_home)
    assert "+vecrank-rescorer-" in result.es_home.name and result.zip.sha256[:12] in result.es_home.name

    out = run_cli(capsys, *connection_args(es_settings), "plugin", "status", "--json")
    assert out.code == 0, out.err
    info = json.loads(out.out)
    assert info["cluster"]["loaded_everywhere"] is True
    assert info["local_node"] == {"running": True, "es_home": str(result.es_home), "with_plugin": True}
    assert info["built"]["installed"] is True and info["built"]["stale"] is False


def test_two_nodes_each_load_the_model_for_their_shards(plugin_es, tmp_path_factory):
    """Shards on a second node get the rescorer over the wire and fetch the model themselves."""
    from conftest import REPO

    from vecrank.client import make_client
    from vecrank.localnode import node, plugin
    from vecrank.settings import Settings

    state = tmp_path_factory.mktemp("plugin-two-nodes")
    plugin.install(base=state)  # no node yet: recorded for the next start
    node.up(nodes=2, port=9281, heap="256m", base=state)
    try:
        es = make_client(
            Settings.load(env={}, config_path=REPO / "tests" / "data" / "empty-config.toml", state_dir=state)
        )
        es.indices.create(
            index="two-items",
            settings={"number_of_shards": 4, "number_of_replicas": 0},
            mappings={
                "properties": {
                    "embedding": {"type": "dense_vector", "dims": 3, "similarity": "cosine"},
                    "signals": {"properties": {"ctr": {"type": "float"}}},
                }
            },
        )
        rng = np.random.default_rng(5)
        ops = []
        for i in range(200):
            ops += [
                {"index": {"_index": "two-items", "_id": str(i)}},
                {"embedding": rng.normal(size=3).tolist(), "signals": {"ctr": float(rng.uniform(0, 0.3))}},
            ]
        es.bulk(operations=ops, refresh=True)
        # the first-pass score (source `score`, which no spec feature uses any more) and two spec features
        names = ["first_pass", "cos_profile", "ctr"]
        features = [{"name": "first_pass", "source": "score"}, *(R.feature_source(n) for n in names[1:])]
        X = np.column_stack([rng.uniform(0.5, 1, 300), rng.uniform(-1, 1, 300), rng.uniform(0, 0.3, 300)]).astype(
            np.float32
        )
        booster = xgb.train(
            {"objective": "reg:squarederror", "max_depth": 4},
            xgb.DMatrix(X, label=X[:, 0] + X[:, 1] + 3 * X[:, 2], feature_names=names),
            20,
        )
        es.index(
            index="two-models",
            id="m@1",
            refresh=True,
            document={
                "model_id": "m",
                "version": 1,
                "status": "active",
                "spec": {"names": names},
                "booster": bytes(booster.save_raw("json")).decode(),
                "plugin_features": features,
            },
        )
        profile = [0.3, -1.0, 0.5]

        def knn(model_id):
            return es.search(
                index="two-items",
                body={
                    "knn": {"field": "embedding", "query_vector": profile, "k": 60, "num_candidates": 200},
                    "size": 60,
                    "explain": True,
                    "rescore": R.rescore_body(
                        model_id=model_id, params={"profile_vector": profile}, window_size=60, models_index="two-models"
                    ),
                },
            )["hits"]["hits"]

        hits = knn("m")
        assert len({h["_node"] for h in hits}) == 2, "the hits come from shards on both nodes"
        F_ = np.stack([R.explained_features(h["_explanation"], names) for h in hits])
        expected = booster.predict(xgb.DMatrix(F_, feature_names=names))
        np.testing.assert_allclose(R.score_to_model(np.array([h["_score"] for h in hits])), expected, atol=TOL)
        assert list(np.argsort(-expected, kind="stable")) == list(range(len(hits)))

        # A pool rank is within one shard's window: a model with one refuses an index of 4 shards.
        ranked = ["cos_profile", "rank_text"]
        ranked_booster = xgb.train(
            {"objective": "reg:squarederror", "max_depth": 2},
            xgb.DMatrix(X[:, 1:3], label=X[:, 1], feature_names=ranked),
            3,
        )
        assert R.feature_source(ranked[1]) == {"name": "rank_text", "source": "rank", "of": "cos_profile"}
        es.index(
            index="two-models",
            id="r@1",
            refresh=True,
            document={
                "model_id": "r",
                "version": 1,
                "status": "active",
                "spec": {"names": ranked},
                "booster": bytes(ranked_booster.save_raw("json")).decode(),
                "plugin_features": [R.feature_source(n) for n in ranked],
            },
        )
        exc = error_of(lambda: knn("r"))
        assert exc.meta.status == 400
        assert (
            "has feature [rank_text] of source [rank], which ranks within one shard's rescore window: it "
            "rescores indices of one shard only, and index [two-items] has 4 shards"
        ) in reason(exc)
    finally:
        node.down(base=state)


def test_attach_makes_a_registered_model_servable(plugin_es, world, embedder, es_settings, capsys):
    es = plugin_es
    req = requests(es, world, embedder)[0]
    model = Registry(es, world).register(
        RankerModel.from_booster("plain", SPEC, train("rank:ndcg", 3, seed=9)), status="active"
    )
    assert model.plugin_features == R.plugin_features(SPEC)  # registration attaches them
    # A model registered before the plugin was there has none: the plugin says so, attach fixes it.
    es.update(index=world.index("models"), id="plain@1", doc={"plugin_features": None}, refresh="wait_for")
    exc = error_of(lambda: search(es, world, req, model_id="plain"))
    assert exc.meta.status == 400 and "model [plain] version [1] has no [plugin_features]" in reason(exc)

    args = [*connection_args(es_settings), "--index-prefix", world.index_prefix]
    out = run_cli(capsys, *args, "plugin", "attach", "plain", "--json")
    assert out.code == 0, out.err
    assert json.loads(out.out) == {"model_id": "plain", "version": 1, "plugin_features": R.plugin_features(SPEC)}
    hits = search(es, world, req, model_id="plain")
    assert {h["_explanation"]["description"].split(" (")[0] for h in hits} == {"vecrank model [plain] version [1]"}

    # A feature that maps to no field is refused when the model is registered, not at query time.
    other = FeatureSpec(item_numeric=("runtime",))
    with pytest.raises(R.PluginFeatureError, match="feature 'item.runtime' reads field 'runtime', which is not mapped"):
        Registry(es, world).register(
            RankerModel.from_booster(
                "runtime",
                other,
                xgb.train(
                    {"objective": "rank:ndcg"},
                    xgb.DMatrix(
                        np.zeros((4, len(other.names)), np.float32),
                        label=[0, 1, 0, 1],
                        qid=[0, 0, 1, 1],
                        feature_names=other.names,
                    ),
                    2,
                ),
            )
        )
    assert Registry(es, world).list("runtime") == []
    out = run_cli(capsys, *args, "plugin", "attach", "missing-model")
    assert out.code == 1 and "missing-model" in out.err
