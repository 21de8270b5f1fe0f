"""The ranker: features, labels, the registry, serving, and an end-to-end run on a synthetic
dataset where both semantics (topics) and behaviour (item quality) matter."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import xgboost
from test_registry import random_booster

from vecrank.ingest.cf import CFConfig, fit_index
from vecrank.ingest.embed import Embedder
from vecrank.ingest.events import ingest_events
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.interactions import DAY_MS, Interactions, is_positive
from vecrank.rank import features as feats
from vecrank.rank.evaluate import EvalConfig, ReplayConfig, load_past, refit_instants, run, write_outputs
from vecrank.rank.model import RankerModel, Registry
from vecrank.rank.offline import PoolConfig
from vecrank.rank.profiles import Interest, Profile
from vecrank.rank.ranker import Ranker
from vecrank.rank.recommender import Candidate, Recommender
from vecrank.rank.state import LikedItem, StateConfig, UserState
from vecrank.rank.store import refresh_all_users, refresh_profiles
from vecrank.rank.train import LabelConfig, TrainConfig, TrainingTable, train_ranker

T0 = 1_600_000_000_000


# --- features on fixtures ------------------------------------------------------------------------


def _fixture_state() -> UserState:
    """A user who clicked a (Horror) and c (Drama), disliked b and was shown x."""
    history = (
        {"item_id": "b", "type": "rating", "value": 1.0, "timestamp": T0 - DAY_MS},
        {"item_id": "x", "type": "impression", "timestamp": T0 - DAY_MS // 2},  # shown: no interaction
        {"item_id": "c", "type": "click", "timestamp": T0 - 3 * DAY_MS},
        {"item_id": "a", "type": "click", "timestamp": T0 - 10 * DAY_MS},
    )
    profile = Profile(
        interests=(Interest(np.array([1.0, 0.0, 0.0], dtype=np.float32), 1.0, ("a",)),),
        n_events=3,
        positive_weight=2.0,
        negative_weight=1.0,
    )
    liked = (
        LikedItem("c", np.array([0.0, 2.0, 0.0], dtype=np.float32), {"genre": frozenset({"Drama"})}),
        LikedItem("a", np.array([1.0, 0.0, 0.0], dtype=np.float32), {"genre": frozenset({"Horror"})}),
    )
    return UserState(
        history=history,
        profile=profile,
        cf_vector=np.array([1.0, 2.0], dtype=np.float32),
        cf_version="cf1",
        cooc={"x": 0.5, "z": 0.25},
        seq={"y": 0.3},
        liked=liked,
    )


def test_features_on_a_fixture():
    pool = PoolConfig(text=1, cf=1, cooc=1, seq=1, popular=2, trending=1)
    spec = feats.FeatureSpec.for_fields(
        ["year", "released"], ["genre"], {"year": "integer", "released": "date"}, pool=pool.to_dict()
    )
    assert (spec.item_numeric, spec.item_dates, spec.facets) == (("year",), ("released",), ("genre",))
    signals = {
        "ctr": 0.1,
        "popularity_1d": 0,
        "popularity_7d": np.e - 1,
        "popularity_30d": np.e**2 - 1,
        "popularity_365d": 5.0,
        "trend": 0.5,
        "popular_rank": 1,
        "trending_rank": 3,
        "last_interaction": T0 - 2 * DAY_MS,
        "first_interaction": T0 - 50 * DAY_MS,
        "rating_mean": 4.5,
        "rating_count": 3,
    }
    cands = [
        Candidate(
            "x",
            0.9,
            None,
            {"year": 1999, "released": T0 - 100 * DAY_MS, "genre": "Horror", "signals": signals},
            vector=np.array([1.0, 1.0, 0.0]),
            cf_vector=np.array([1.0, 0.0]),
        ),
        Candidate("y", 0.5, None, {"genre": ["Comedy"]}, vector=None, cf_vector=np.array([0.0, 1.0])),
        Candidate(
            "z",
            0.4,
            None,
            {"genre": ["Drama", "Horror"], "year": 2005, "signals": {"popular_rank": 2}},
            vector=np.array([0.0, 3.0, 0.0]),
            cf_vector=None,
        ),
    ]
    ctx = feats.RequestContext(now_ms=T0, path="profile", state=_fixture_state(), query_vector=np.array([0, 0, 2.0]))
    m = feats.compute(spec, cands, ctx)
    assert m.shape == (3, len(spec.names)) and m.dtype == np.float32
    x, y, z = (dict(zip(spec.names, row)) for row in m)
    r2 = 1 / np.sqrt(2)
    # semantic: cosines to the profile, the query and the liked items (c and a)
    assert (x["cos_profile"], x["cos_query"]) == pytest.approx((r2, 0.0)) and z["cos_profile"] == 0.0
    assert (x["cos_hist_max"], x["cos_hist_mean"]) == pytest.approx((r2, r2))
    assert (z["cos_hist_max"], z["cos_hist_mean"]) == pytest.approx((1.0, 0.5))
    assert all(np.isnan(y[n]) for n in ("cos_profile", "cos_query", "cos_hist_max", "cos_hist_mean"))
    # collaborative: the fold-in's dot product; the user's co-occurrence and sequence scores
    assert (x["cf_score"], y["cf_score"]) == (1.0, 2.0) and np.isnan(z["cf_score"])
    assert (x["cooc"], z["cooc"], y["seq"]) == pytest.approx((0.5, 0.25, 0.3))
    assert np.isnan(y["cooc"]) and np.isnan(x["seq"]) and np.isnan(z["seq"])
    # behavioural, from the signals
    assert (x["ctr"], x["pop_1d"], x["pop_7d"], x["pop_30d"], x["pop_365d"]) == pytest.approx(
        (0.1, 0.0, 1.0, 2.0, math.log1p(5.0))
    )
    assert (x["trend"], x["popular_rank"], x["trending_rank"], z["popular_rank"]) == (0.5, 1.0, 3.0, 2.0)
    assert (x["days_since_interaction"], x["item_age"]) == pytest.approx((2.0, 50.0))
    assert (x["rating_mean"], x["rating_count"]) == pytest.approx((4.5, math.log1p(3)))
    assert all(np.isnan(y[n]) for n in ("ctr", "pop_30d", "trend", "popular_rank", "item_age", "rating_mean"))
    # pool ranks: highest first, NaN takes no place
    assert (x["rank_cf"], y["rank_cf"]) == (2.0, 1.0) and np.isnan(z["rank_cf"])
    assert (x["rank_text"], z["rank_text"], x["rank_cooc"], z["rank_cooc"], y["rank_seq"]) == (1, 2, 1, 2, 1)
    assert np.isnan(y["rank_text"]) and np.isnan(x["rank_seq"])
    # n_sources: x is the text, co-occurrence and popular source's (its cf rank 2 is past cf's 1);
    # y the collaborative and sequence source's; z only the popular one's (rank 2 <= 2).
    assert (x["n_sources"], y["n_sources"], z["n_sources"]) == (3.0, 2.0, 1.0)
    # item fields and dates
    assert (x["item.year"], z["item.year"], x["age.released"]) == (1999.0, 2005.0, 100.0)
    assert np.isnan(y["item.year"]) and np.isnan(y["age.released"]) and np.isnan(z["age.released"])
    # user: three interactions (the impression is none), the latest one a day ago
    for row in (x, y, z):
        assert row["hist_len"] == pytest.approx(math.log1p(3)) and row["days_since_active"] == pytest.approx(1.0)
        assert (row["query_present"], row["path_code"]) == (1.0, 0.0)
    # affinity: the share of the liked items (c Drama, a Horror) sharing a genre
    assert (x["affinity.genre"], y["affinity.genre"], z["affinity.genre"]) == (0.5, 0.0, 1.0)

    # Without a collaborative model, a query or liked items, those features are missing.
    bare = feats.compute(spec, cands, feats.RequestContext(now_ms=T0, path="query", state=UserState()))
    col = dict(zip(spec.names, bare.T))
    for name in (
        "cf_score",
        "cooc",
        "seq",
        "cos_profile",
        "cos_hist_max",
        "affinity.genre",
        "rank_cf",
        "rank_text",
        "days_since_active",
    ):
        assert np.isnan(col[name]).all(), name
    assert (col["hist_len"] == 0).all() and (col["path_code"] == 3).all() and (col["query_present"] == 0).all()


def test_labels_take_the_best_later_event():
    events = [
        {"item_id": "a", "type": "rating", "value": 4.0},
        {"item_id": "a", "type": "rating", "value": 5.0},
        {"item_id": "b", "type": "rating", "value": 3.5},
        {"item_id": "c", "type": "click"},
        {"item_id": "d", "type": "impression"},
        {"item_id": "e", "type": "purchase"},
        {"item_id": "f", "type": "cart"},
        {"item_id": "g", "type": "rating", "value": None},
    ]
    # The default is the evaluation's rule: 1 for what is_positive calls a like, else nothing.
    assert LabelConfig().labels(events) == {"a": 1.0, "c": 1.0, "e": 1.0, "f": 1.0}
    assert all((LabelConfig().grade(e) > 0) == is_positive(e) for e in events)
    # Graded relevance, when asked for: the best later event wins.
    graded = LabelConfig(type_grades={"click": 1.0, "purchase": 3.0}, rating_grades=((5.0, 2.0), (4.0, 1.0)))
    assert graded.labels(events) == {"a": 2.0, "c": 1.0, "e": 3.0}


def test_the_cli_pool_options_are_the_pool_configs_sources_and_defaults():
    from vecrank.cli.rank import POOL_OPTIONS
    from vecrank.rank.offline import SOURCES

    assert tuple(POOL_OPTIONS) == SOURCES
    assert {name: default for name, (default, _) in POOL_OPTIONS.items()} == PoolConfig().to_dict()


def test_spec_round_trip_and_mismatch_refusal():
    spec = feats.FeatureSpec.for_fields(
        ["year", "released"], ["genre"], {"year": "integer", "released": "date"}, pool=PoolConfig().to_dict()
    )
    assert spec.sources == (
        ("rank_text", 100),
        ("rank_cf", 100),
        ("rank_cooc", 50),
        ("rank_seq", 50),
        ("rank_ease", 50),
        ("popular_rank", 50),
        ("trending_rank", 50),
    )
    assert {"item.year", "age.released", "affinity.genre", "n_sources"} <= set(spec.names)
    assert feats.FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert "n_sources" not in feats.FeatureSpec().names  # no pool, no source count
    with pytest.raises(feats.FeatureSpecMismatch, match="only in the model: \\['extra'\\]"):
        spec.check([*spec.names, "extra"])
    with pytest.raises(feats.FeatureSpecMismatch, match="version 1 is not this vecrank's"):
        feats.FeatureSpec.from_dict({**spec.to_dict(), "version": 1})
    with pytest.raises(feats.FeatureSpecMismatch, match="do not match the spec's"):
        feats.FeatureSpec.from_dict({**spec.to_dict(), "names": spec.names[:-1]})
    other = feats.FeatureSpec()
    table = TrainingTable(feature_names=other.names)
    rng = np.random.default_rng(0)
    for g in range(6):
        table.add(
            f"r{g}", "u", 0, [f"i{j}" for j in range(5)], [1.0, 0, 0, 0, 0], rng.normal(size=(5, len(other.names)))
        )
    booster, _ = train_ranker(table, None, TrainConfig(num_boost_round=3))
    with pytest.raises(feats.FeatureSpecMismatch):
        RankerModel.from_booster("m", spec, booster)


def test_training_table_parquet_round_trip(tmp_path):
    spec = feats.FeatureSpec()
    table = TrainingTable(feature_names=spec.names)
    matrix = np.arange(3 * len(spec.names), dtype=np.float32).reshape(3, -1)
    matrix[1, 2] = np.nan
    table.add("r1", "u1", 5, ["a", "b", "c"], [1.0, 0.0, 1.0], matrix, label_ms=[9.0, np.inf, 20.0])
    table.add("r2", "u2", 7, ["d"], [0.0], matrix[:1])
    table.to_parquet(tmp_path / "t.parquet")
    back = TrainingTable.from_parquet(tmp_path / "t.parquet")
    assert back.item_id == ["a", "b", "c", "d"] and back.label == [1.0, 0.0, 1.0, 0.0]
    assert list(back.groups()) == [3, 1] and back.cut_ms == [5, 5, 5, 7]
    assert back.label_ms == [9.0, np.inf, 20.0, 7.0]  # without label_ms a row's label is known at its cut
    assert np.array_equal(np.isnan(back.features), np.isnan(np.vstack([matrix, matrix[:1]])))
    assert np.allclose(np.nan_to_num(back.features), np.nan_to_num(np.vstack([matrix, matrix[:1]])))
    # What a ranker trained at instant 10 may learn: r1 (cut 5) with the like known at 9 only.
    early = back.before(10)
    assert early.item_id == ["a", "b", "c"] and early.label == [1.0, 0.0, 0.0]
    assert len(back.before(5)) == 0  # nothing was cut before 5


# --- a synthetic world: topics (semantics) and quality (behaviour) ---------------------------

TOPICS = {
    "space": [
        "astronauts",
        "rocket launch",
        "distant planets",
        "the space station",
        "black holes",
        "a mission to Mars",
    ],
    "cooking": [
        "baking bread",
        "pasta recipes",
        "a pastry contest",
        "grilled vegetables",
        "ramen broth",
        "street food",
    ],
    "horror": [
        "a haunted house",
        "a masked killer",
        "zombie outbreak",
        "a cursed doll",
        "a demon possession",
        "vampires",
    ],
    "sport": [
        "a football final",
        "marathon runners",
        "a boxing champion",
        "tennis rivals",
        "a cycling race",
        "basketball",
    ],
}


def synthetic_world(seed: int = 7):
    rng = random.Random(seed)
    items, quality = [], {}
    for topic, subjects in TOPICS.items():
        for i in range(24):
            item_id = f"{topic}-{i}"
            items.append({"id": item_id, "title": f"A film about {subjects[i % 6]}, part {i}", "topic": topic})
            quality[item_id] = i % 3 == 0  # a third of every topic is good
    users = {f"u{n}": list(TOPICS)[n % 4] for n in range(64)}
    events = []
    for user, topic in users.items():
        pool = [it["id"] for it in items if it["topic"] == topic]
        rng.shuffle(pool)
        for j, item_id in enumerate(pool[:18]):
            ts = T0 + int((j * 22 + rng.random() * 10) * DAY_MS)  # spread over ~400 days
            rating = 5.0 if quality[item_id] else rng.choice([1.0, 2.0, 2.5])
            events.append({"user": user, "item": item_id, "type": "rating", "value": rating, "timestamp": ts})
        other = rng.choice([t for t in TOPICS if t != topic])
        for j in range(2):  # a little cross-topic noise
            events.append(
                {
                    "user": user,
                    "item": f"{other}-{3 * j}",
                    "type": "rating",
                    "value": 4.0,
                    "timestamp": T0 + int(rng.random() * 400 * DAY_MS),
                }
            )
    return items, events


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def world(es, settings_for, embedder, tmp_path):
    items, events = synthetic_world()
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    assert ingest_items(es, settings_for, path, ItemSource(template="{title}"), embedder=embedder).written == len(items)
    epath = tmp_path / "events.jsonl"
    epath.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert ingest_events(es, settings_for, epath, progress=False, refresh_states=refresh_profiles).failed == 0
    return items, events


def indexing_total(es, index: str) -> int:
    es.indices.refresh(index=index)
    return es.indices.stats(index=index, metric="indexing")["_all"]["primaries"]["indexing"]["index_total"]


def _replay_config(facets=("topic",)) -> ReplayConfig:
    pool = PoolConfig(text=30, cf=30, cooc=15, seq=15, ease=15, popular=10, trending=10)
    spec = feats.FeatureSpec.for_fields([], facets, {f: "keyword" for f in facets}, pool=pool.to_dict())
    return ReplayConfig(
        pool=pool, state=StateConfig(facets=tuple(facets)), cf=CFConfig(factors=8, iterations=10), spec=spec
    )


@pytest.mark.slow
def test_trained_model_beats_popularity_and_text_only(es, settings_for, embedder, world, tmp_path):
    replay_config = _replay_config()
    config = EvalConfig(test_fraction=0.25, horizon_days=60, train_cuts=3, refits=4)
    writes_before = indexing_total(es, settings_for.index("items"))
    past = load_past(es, settings_for, replay_config=replay_config, config=config)
    assert past.refits == refit_instants(past.log, 4) and len(past.refits) == 3
    report = run(
        past,
        replay_config=replay_config,
        config=config,
        final_model=True,
        train_config=TrainConfig(num_boost_round=200, early_stopping_rounds=30),
    )
    ndcg = {name: s["ndcg@10"] for name, s in report.systems.items()}
    assert set(ndcg) == {"popular", "cooccurrence", "itemknn", "als", "ease", "text", "vecrank"}
    assert report.split["evaluated_users"] >= 30
    assert all(r["requests"] > 20 for r in report.training["rankers"])
    # Quality is behavioural and topics are semantic: the fused ranker needs both.
    assert ndcg["vecrank"] > ndcg["popular"] and ndcg["vecrank"] > ndcg["text"], ndcg
    for other in ("popular", "text"):  # the margin is not noise
        assert report.comparison["vs"][other]["ci95"][0] > 0, report.comparison
    # Read-only: the past came from the events; no item was rewritten.
    assert indexing_total(es, settings_for.index("items")) == writes_before
    files = write_outputs(report, tmp_path / "eval")
    assert json.loads(open(files["json"]).read())["systems"]["vecrank"]["ndcg@10"] == ndcg["vecrank"]
    assert open(files["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # The serving model records the config it was trained with; serve it after a cf fit.
    assert ReplayConfig.from_dict(report.model.training["config"]) == replay_config
    fit = fit_index(es, settings_for, replay_config.cf)
    assert fit.switched
    assert refresh_all_users(es, settings_for, config=replay_config.state) == 64
    registry = Registry(es, settings_for)
    model = registry.register(report.model)
    assert (model.version, model.status) == (1, "candidate")
    registry.set_status("vecrank", 1, "active")
    served = registry.get("vecrank")
    assert served.version == 1 and served.spec == replay_config.spec
    assert served.metrics["comparison"] == report.comparison
    ranker = Ranker(Recommender(es, settings_for, embedder=embedder), served, log_requests=True, rerank="python")
    rec_out = ranker.recommend(user="u1", k=5, explain=True)
    assert (rec_out.ranked_by, rec_out.path, len(rec_out.items)) == ("vecrank@1", "profile", 5)
    assert set(rec_out.items[0].contributions) == {*replay_config.spec.names, "bias"}
    total = sum(rec_out.items[0].contributions.values())
    assert total == pytest.approx(rec_out.items[0].score, abs=1e-3)
    assert {"state", "retrieval", "features", "model", "total"} <= set(rec_out.timings_ms)
    seen = {e["item"] for e in world[1] if e["user"] == "u1"}
    assert not seen & {r.item_id for r in rec_out.items}
    row = dict(zip(replay_config.spec.names, rec_out.items[0].features))
    assert not math.isnan(row["cf_score"]) and not math.isnan(row["cos_profile"])  # both halves are served
    cold = ranker.recommend(query="rockets and astronauts", k=3)
    # Not a path the model was trained for: retrieval order, said so, and no score at all (no placeholder).
    assert (cold.path, cold.ranked_by, cold.rerank) == ("query", None, None) and len(cold.items) == 3
    assert "profile path only, not query" in cold.unranked_reason
    assert all(r.score is None and r.features is None for r in cold.items)
    shown = cold.to_dict()
    assert shown["ranked_by"] is None and not any("score" in item for item in shown["items"])
    es.indices.refresh(index=settings_for.index("feature-log"))
    logged = es.search(
        index=settings_for.index("feature-log"), query={"term": {"request_id": rec_out.request_id}}, size=10
    )["hits"]["hits"]
    assert len(logged) == 5 and len(logged[0]["_source"]["features"]) == len(replay_config.spec.names)
    assert [h["_source"]["score"] for h in sorted(logged, key=lambda h: h["_source"]["position"])] == pytest.approx(
        [r.score for r in rec_out.items]
    )
    unlogged = es.count(index=settings_for.index("feature-log"), query={"term": {"request_id": cold.request_id}})
    assert unlogged["count"] == 0  # nothing ranked, no feature rows
    again = Registry(es, settings_for).register(report.model)
    assert again.version == 2
    registry.set_status("vecrank", 2, "active")
    assert [m.status for m in registry.list("vecrank")] == ["archived", "active"]


def test_registry_refuses_a_malformed_booster(es, settings_for):
    from vecrank.errors import VecrankError

    model = RankerModel(model_id="bad", spec=feats.FeatureSpec(), booster_json='{"learner": "nope"}')
    with pytest.raises(xgboost.core.XGBoostError):
        Registry(es, settings_for).register(model)
    with pytest.raises(VecrankError, match="model .bad. has no active version; versions: none"):
        Registry(es, settings_for).get("bad")


def test_a_model_of_an_older_spec_keeps_its_version_number_and_is_archived(es, settings_for):
    spec = feats.FeatureSpec()
    booster = random_booster(spec, seed=2)
    registry = Registry(es, settings_for)
    first = registry.register(RankerModel.from_booster("old", spec, booster))
    registry.set_status("old", first.version, "active")
    # As an earlier vecrank stored it: the same document with feature spec version 1.
    doc = es.get(index=registry.index, id="old@1")["_source"]
    doc["spec"] = {**doc["spec"], "version": 1}
    es.index(index=registry.index, id="old@1", document=doc, refresh=True)
    assert registry.list("old") == []  # this vecrank cannot serve it
    second = registry.register(RankerModel.from_booster("old", spec, booster))
    assert second.version == 2  # not 1 again: that id is taken
    registry.set_status("old", 2, "active")
    assert es.get(index=registry.index, id="old@1")["_source"]["status"] == "archived"
    assert [(m.version, m.status) for m in registry.list("old")] == [(2, "active")]


@pytest.mark.slow
def test_cli_evaluate_model_and_ranked_recommend(es, settings_for, world, tmp_path, capsys):
    from clihelp import connection_args, run_cli

    base = [*connection_args(settings_for), "--index-prefix", settings_for.index_prefix]
    fitted = run_cli(capsys, *base, "cf", "fit", "--factors", "8", "--json")
    assert fitted.code == 0, fitted.err
    assert json.loads(fitted.out)["users_refreshed"] == 64
    small = [
        "--pool-text",
        "30",
        "--pool-cf",
        "30",
        "--pool-cooc",
        "15",
        "--pool-seq",
        "15",
        "--pool-ease",
        "15",
        "--pool-popular",
        "10",
        "--pool-trending",
        "10",
    ]
    result = run_cli(
        capsys,
        *base,
        "evaluate",
        "--facet",
        "topic",
        "--horizon-days",
        "60",
        "--train-cuts",
        "2",
        "--refits",
        "4",
        "--test-fraction",
        "0.25",
        *small,
        "--activate",
        "--out",
        str(tmp_path / "eval"),
        "--json",
    )
    assert result.code == 0, result.err
    out = json.loads(result.out)
    # activated, and every user's state recomputed for its rule (cf fit stored the default rule's)
    assert out["model"] == {"id": "vecrank", "version": 1, "status": "active", "users_refreshed": 64}
    assert set(out["systems"]) == {"popular", "cooccurrence", "itemknn", "als", "ease", "text", "vecrank"}
    assert out["training"]["config"]["pool"] == {
        "text": 30,
        "cf": 30,
        "cooc": 15,
        "seq": 15,
        "ease": 15,
        "popular": 10,
        "trending": 10,
    }
    assert (tmp_path / "eval" / "evaluation.png").is_file()
    listed = json.loads(run_cli(capsys, *base, "model", "list", "--json").out)
    assert [(m["model"], m["version"], m["status"]) for m in listed] == [("vecrank", 1, "active")]
    ranked = run_cli(capsys, *base, "recommend", "--user", "u1", "-k", "3", "--explain")
    assert ranked.code == 0, ranked.err
    assert "ranked by vecrank@1" in ranked.out and "TOP FEATURES" in ranked.out
    plain = run_cli(capsys, *base, "recommend", "--user", "u1", "-k", "3", "--no-rank")
    assert "no ranker (kNN order)" in plain.out
    assert run_cli(capsys, *base, "model", "archive", "vecrank", "1").code == 0
    assert "no ranker" in run_cli(capsys, *base, "recommend", "--user", "u1", "-k", "3").out
    # The model's rule carries the topic facet; the states `evaluate --activate` stored are for it.
    # Stored again for the default rule (as cf fit stores them before any model is active), they
    # are stale for the model until `model activate` recomputes every user's.
    from vecrank.ingest import indices
    from vecrank.rank.offline import ReplayConfig
    from vecrank.rank.state import StateConfig, stored_state
    from vecrank.rank.store import get_user, live_cf_meta, refresh_all_users

    rule = ReplayConfig.from_dict(out["training"]["config"]).state
    assert rule.facets == ("topic",)
    text_model = indices.spec_of(es, indices.live_index(es, settings_for)).model
    version = live_cf_meta(es, settings_for).version

    def current(user):
        return stored_state(get_user(es, settings_for, user), model=text_model, config=rule, cf_version=version)

    assert current("u1") is not None
    assert refresh_all_users(es, settings_for, config=StateConfig()) == 64 and current("u1") is None
    activated = run_cli(capsys, *base, "model", "activate", "vecrank", "1")
    assert activated.code == 0 and "64 users' states recomputed" in activated.out, activated.out
    assert current("u1") is not None and current("u1").liked[0].facets.keys() == {"topic"}
    bad = run_cli(capsys, *base, "evaluate", "--facet", "colour")
    assert bad.code == 2 and "no field colour" in bad.err


def test_training_rows_from_the_serving_feature_log(es, settings_for, embedder, world, tmp_path, capsys):
    from vecrank.rank.train import from_feature_log

    replay_config = _replay_config()
    spec = replay_config.spec
    rng = np.random.default_rng(1)
    seed_table = TrainingTable(feature_names=spec.names)
    for g in range(8):
        seed_table.add(
            f"s{g}", "u", 0, [f"i{j}" for j in range(6)], [1.0] + [0.0] * 5, rng.normal(size=(6, len(spec.names)))
        )
    booster, _ = train_ranker(seed_table, None, TrainConfig(num_boost_round=5))
    model = Registry(es, settings_for).register(
        RankerModel.from_booster("logged", spec, booster, training={"config": replay_config.to_dict()})
    )
    ranker = Ranker(Recommender(es, settings_for, embedder=embedder), model, log_requests=True)
    now = max(e["timestamp"] for e in world[1]) + DAY_MS
    served = {u: ranker.recommend(user=u, k=5, now_ms=now) for u in ("u1", "u2", "u3")}

    first, second = served["u1"].items[0].item_id, served["u2"].items[3].item_id
    clicks = [
        {
            "user": "u1",
            "item": first,
            "type": "click",
            "timestamp": now + 3_600_000,
            "request_id": served["u1"].request_id,
        },
        {"user": "u2", "item": second, "type": "purchase", "timestamp": now + 7_200_000},
        {"user": "u3", "item": served["u3"].items[0].item_id, "type": "click", "timestamp": now + 30 * DAY_MS},
    ]
    path = tmp_path / "clicks.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in clicks))
    ingest_events(es, settings_for, path, progress=False, refresh_states=refresh_profiles)
    es.indices.refresh(index=settings_for.index("feature-log"))

    table = from_feature_log(es, settings_for, spec, horizon_days=7)
    assert table.summary()["requests"] == 3 and len(table) == 15
    got = {(u, i): lab for u, i, lab in zip(table.user_id, table.item_id, table.label) if lab > 0}
    # the default labels are the evaluation's: 1 for a like; u3's click came after the 7-day window
    assert got == {("u1", first): 1.0, ("u2", second): 1.0}
    row = next(i for i, (u, item) in enumerate(zip(table.user_id, table.item_id)) if (u, item) == ("u1", first))
    logged = table.features[row]
    served_row = served["u1"].items[0].features
    assert np.array_equal(np.isnan(logged), np.isnan(served_row))
    assert np.allclose(np.nan_to_num(logged), np.nan_to_num(served_row), atol=1e-6)
    booster, info = train_ranker(table, None, TrainConfig(num_boost_round=5))
    assert info["train_rows"] == 15
    assert from_feature_log(es, settings_for, feats.FeatureSpec(), horizon_days=7).summary()["rows"] == 0

    from clihelp import connection_args, run_cli

    small = [
        "--pool-text",
        "30",
        "--pool-cf",
        "30",
        "--pool-cooc",
        "15",
        "--pool-seq",
        "15",
        "--pool-ease",
        "15",
        "--pool-popular",
        "10",
        "--pool-trending",
        "10",
    ]
    result = run_cli(
        capsys,
        *connection_args(settings_for),
        "--index-prefix",
        settings_for.index_prefix,
        "train",
        "--from-log",
        "--skip-cf-fit",
        "--facet",
        "topic",
        *small,
        "--horizon-days",
        "7",
        "--model-id",
        "fromlog",
        "--json",
    )
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert (out["id"], out["version"], out["training"]["source"]) == ("fromlog", 1, "feature-log")
    assert out["training"]["train"]["requests"] + out["training"]["valid"]["requests"] == 3
    # Serving gathers the pool the model was trained on; without a cf fit the live factors' settings are recorded.
    assert out["training"]["config"] == {**replay_config.to_dict(), "cf": CFConfig().to_dict()}
    fit_index(es, settings_for, replay_config.cf)
    again = json.loads(
        run_cli(
            capsys,
            *connection_args(settings_for),
            "--index-prefix",
            settings_for.index_prefix,
            "train",
            "--from-log",
            "--skip-cf-fit",
            "--facet",
            "topic",
            "--model-id",
            "fromlog",
            *small,
            "--horizon-days",
            "7",
            "--json",
        ).out
    )
    assert again["training"]["config"]["cf"] == replay_config.cf.to_dict()


def test_tree_shape_is_chosen_on_the_validation_slice():
    from vecrank.rank.train import select_ranker

    rng = np.random.default_rng(4)
    names = ["signal", "noise"]

    def table(groups: int, seed_offset: int) -> TrainingTable:
        out = TrainingTable(feature_names=names)
        for g in range(groups):
            x = rng.normal(size=(20, 2)).astype(np.float32)
            labels = (x[:, 0] > 1.0).astype(float)  # relevance follows the first feature only
            out.add(f"r{seed_offset}-{g}", "u", g, [f"i{j}" for j in range(20)], list(labels), x)
        return out

    booster, info, chosen = select_ranker(table(60, 0), table(20, 1), TrainConfig(num_boost_round=30))
    scores = {(s["max_depth"], s["min_child_weight"]): s["valid_score"] for s in info["selection"]}
    assert len(scores) == 3 and scores[(chosen.max_depth, chosen.min_child_weight)] == max(scores.values())
    assert info["best_score"] == pytest.approx(max(scores.values()), abs=1e-5)
    _, plain, same = select_ranker(table(10, 2), None, TrainConfig(num_boost_round=5))
    assert "selection" not in plain and same == TrainConfig(num_boost_round=5)  # no validation slice: as given


def _noisy_table(*, seed: int, groups: int) -> TrainingTable:
    """``groups`` requests of 20 items, liked when a noisy copy of feature ``signal`` passes 1."""
    rng = np.random.default_rng(seed)
    table = TrainingTable(feature_names=["signal", "noise"])
    for g in range(groups):
        x = rng.normal(size=(20, 2)).astype(np.float32)
        liked = x[:, 0] + 0.8 * rng.normal(size=20) > 1.0  # a noisy signal: more than one round to learn
        table.add(f"r{g}", "u", g, [f"i{j}" for j in range(20)], list(liked.astype(float)), x)
    return table


def test_the_chosen_shape_is_refit_on_the_whole_table_for_proportionally_more_rounds():
    from vecrank.rank.train import select_ranker

    whole = _noisy_table(seed=5, groups=80)
    train, valid = whole.split_by_time(0.25)
    config = TrainConfig(num_boost_round=30)
    early, early_info, chosen = select_ranker(train, valid, config)
    refit, info, same = select_ranker(train, valid, config, refit_on=whole)
    assert same == chosen and info["selection"] == early_info["selection"]  # the choice is the validation slice's
    rounds = early_info["best_iteration"] + 1
    assert info["refit_rows"] == len(whole) == len(train) + len(valid)
    assert info["refit_rounds"] == max(1, round(rounds * len(whole) / len(train))) > rounds
    assert refit.num_boosted_rounds() == info["refit_rounds"] and early.num_boosted_rounds() == rounds
    x = np.column_stack([np.linspace(-3, 3, 50), np.zeros(50)]).astype(np.float32)
    import xgboost

    scores = refit.predict(xgboost.DMatrix(x, feature_names=["signal", "noise"]))
    assert np.corrcoef(scores, x[:, 0])[0, 1] > 0.8  # the refit model still follows the signal


def test_fit_ranker_returns_the_config_its_booster_was_trained_with():
    from vecrank.rank.train import fit_ranker

    whole = _noisy_table(seed=7, groups=60)
    booster, info, chosen = fit_ranker(whole, TrainConfig(num_boost_round=30))
    # what a registry records as the model's params: the refit's rounds, not the early-stopping cap
    assert chosen.num_boost_round == info["refit_rounds"] == booster.num_boosted_rounds() != 30
    assert (chosen.max_depth, chosen.min_child_weight) in {
        (s["max_depth"], s["min_child_weight"]) for s in info["selection"]
    }
    assert info["train"]["requests"] + info["valid"]["requests"] == 60


def test_by_default_a_higher_collaborative_score_never_lowers_the_ranker_score():
    names = feats.FeatureSpec().names
    rng = np.random.default_rng(6)
    table = TrainingTable(feature_names=names)
    for g in range(60):
        x = rng.normal(size=(20, len(names))).astype(np.float32)
        # liked in a band of cf_score and of rank_ease: unconstrained trees learn the bump
        liked = (np.abs(x[:, names.index("cf_score")]) < 0.6) | (np.abs(x[:, names.index("rank_ease")]) < 0.3)
        table.add(f"r{g}", "u", g, [f"i{j}" for j in range(20)], list(liked.astype(float)), x)
    rows = rng.normal(size=(30, len(names))).astype(np.float32)
    grid = np.linspace(-3, 3, 25, dtype=np.float32)

    def steps(booster: xgboost.Booster, feature: str) -> np.ndarray:
        """Score changes as ``feature`` rises along ``grid`` from each of ``rows``."""
        swept = np.repeat(rows, len(grid), axis=0)
        swept[:, names.index(feature)] = np.tile(grid, len(rows))
        scores = booster.predict(xgboost.DMatrix(swept, feature_names=names)).reshape(len(rows), len(grid))
        return np.diff(scores, axis=1)

    constrained, _ = train_ranker(table, None, TrainConfig(num_boost_round=30))
    free, _ = train_ranker(table, None, TrainConfig(num_boost_round=30, monotone=()))
    assert ("cf_score", 1) in feats.MONOTONE and ("rank_ease", -1) in feats.MONOTONE
    assert steps(constrained, "cf_score").min() >= 0 and steps(constrained, "rank_ease").max() <= 0
    assert steps(free, "cf_score").min() < 0 and steps(free, "rank_ease").max() > 0  # the test can fail


def test_the_refit_instants_ignore_impressions_logged_by_serving():
    ratings = [
        {"user_id": "u", "item_id": f"i{n}", "type": "rating", "value": 4.0, "timestamp": n * 1000}
        for n in range(1, 101)
    ]
    served = [
        {"user_id": "u", "item_id": "i1", "type": "impression", "value": None, "timestamp": 10**9 + n}
        for n in range(500)
    ]  # a load test last week: many impressions, all recent
    both = Interactions.from_events(ratings + served)
    assert both.quantile(0.8) == Interactions.from_events(ratings).quantile(0.8) == 80_200
    assert refit_instants(both, 4) == [25_750, 50_500, 75_250]
