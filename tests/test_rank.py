"""The ranker: features, labels, the registry, serving, and an end-to-end run on a synthetic
dataset where both semantics (topics) and behaviour (item quality) matter."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from vecrank.ingest.embed import Embedder
from vecrank.ingest.events import ingest_events
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.rank import features as feats
from vecrank.rank.evaluate import EvalConfig, run, write_outputs
from vecrank.rank.model import RankerModel, Registry
from vecrank.rank.profiles import DAY_MS
from vecrank.rank.ranker import Ranker
from vecrank.rank.recommender import Candidate, Recommender, RetrieveConfig
from vecrank.rank.train import LabelConfig, TrainConfig, TrainingTable, train_ranker

T0 = 1_600_000_000_000


# --- features on fixtures ------------------------------------------------------------------------

def test_features_on_a_fixture():
    spec = feats.FeatureSpec(item_numeric=("year",), facets=("genre",), history_k=2)
    v = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0])}
    cands = [
        Candidate("x", 0.9, 0.8, {"year": 1999, "genre": "Horror",
                                  "signals": {"ctr": 0.1, "popularity_30d": np.e - 1, "rating_mean": 4.5,
                                              "rating_count": 3, "last_interaction": T0 - 2 * DAY_MS}},
                  vector=np.array([1.0, 1.0, 0])),
        Candidate("y", 0.5, None, {"genre": ["Comedy"]}, vector=None),
    ]
    history = [{"item_id": "a", "type": "click", "timestamp": T0 - 10 * DAY_MS},
               {"item_id": "b", "type": "rating", "value": 1.0, "timestamp": T0 - DAY_MS}]
    ctx = feats.RequestContext(now_ms=T0, path="profile", history=history, history_vectors=v,
                               query_vector=np.array([0, 0, 2.0]), history_facets={"genre": {"a": {"Horror"}, "b": {"Comedy"}}})
    m = feats.compute(spec, cands, ctx)
    row = dict(zip(spec.names, m[0]))
    assert m.shape == (2, len(spec.names)) and m.dtype == np.float32
    assert row["knn_score"] == pytest.approx(0.9) and row["cos_profile"] == pytest.approx(0.8)
    assert row["cos_query"] == pytest.approx(0.0)
    assert row["cos_hist_max"] == pytest.approx(1 / np.sqrt(2), abs=1e-6)  # only "a" is positive history
    assert row["pop_30d"] == pytest.approx(1.0) and row["rating_count"] == pytest.approx(np.log1p(3))
    assert row["days_since_interaction"] == pytest.approx(2.0)
    assert row["item.year"] == 1999 and row["affinity.genre"] == pytest.approx(1.0)
    assert row["hist_len"] == pytest.approx(np.log1p(2)) and row["days_since_active"] == pytest.approx(1.0)
    assert row["query_present"] == 1.0 and row["path_code"] == 0.0
    other = dict(zip(spec.names, m[1]))
    assert np.isnan(other["cos_profile"]) and np.isnan(other["cos_query"]) and np.isnan(other["ctr"])
    assert np.isnan(other["item.year"]) and other["affinity.genre"] == 0.0  # Comedy was only disliked


def test_labels_take_the_best_later_event():
    labels = LabelConfig().labels([{"item_id": "a", "type": "rating", "value": 4.0},
                                   {"item_id": "a", "type": "rating", "value": 5.0},
                                   {"item_id": "b", "type": "rating", "value": 3.5}, {"item_id": "c", "type": "click"},
                                   {"item_id": "d", "type": "impression"}])
    assert labels == {"a": 2.0, "c": 1.0}


def test_spec_round_trip_and_mismatch_refusal():
    spec = feats.FeatureSpec(item_numeric=("year",), facets=("genre",))
    assert feats.FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(feats.FeatureSpecMismatch, match="only in the model: \\['extra'\\]"):
        spec.check([*spec.names, "extra"])
    other = feats.FeatureSpec()
    table = TrainingTable(feature_names=other.names)
    rng = np.random.default_rng(0)
    for g in range(6):
        table.add(f"r{g}", "u", 0, [f"i{j}" for j in range(5)], [1.0, 0, 0, 0, 0], rng.normal(size=(5, len(other.names))))
    booster, _ = train_ranker(table, None, TrainConfig(num_boost_round=3))
    with pytest.raises(feats.FeatureSpecMismatch):
        RankerModel.from_booster("m", spec, booster)


def test_training_table_parquet_round_trip(tmp_path):
    spec = feats.FeatureSpec()
    table = TrainingTable(feature_names=spec.names)
    matrix = np.arange(3 * len(spec.names), dtype=np.float32).reshape(3, -1)
    matrix[1, 2] = np.nan
    table.add("r1", "u1", 5, ["a", "b", "c"], [2.0, 0.0, 1.0], matrix)
    table.to_parquet(tmp_path / "t.parquet")
    back = TrainingTable.from_parquet(tmp_path / "t.parquet")
    assert back.item_id == ["a", "b", "c"] and back.label == [2.0, 0.0, 1.0] and list(back.groups()) == [3]
    assert np.array_equal(np.isnan(back.features), np.isnan(matrix))
    assert np.allclose(np.nan_to_num(back.features), np.nan_to_num(matrix))


# --- a synthetic world: topics (semantics) and quality (behaviour) ---------------------------

TOPICS = {
    "space": ["astronauts", "rocket launch", "distant planets", "the space station", "black holes", "a mission to Mars"],
    "cooking": ["baking bread", "pasta recipes", "a pastry contest", "grilled vegetables", "ramen broth", "street food"],
    "horror": ["a haunted house", "a masked killer", "zombie outbreak", "a cursed doll", "a demon possession", "vampires"],
    "sport": ["a football final", "marathon runners", "a boxing champion", "tennis rivals", "a cycling race", "basketball"],
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
            events.append({"user": user, "item": f"{other}-{3 * j}", "type": "rating", "value": 4.0,
                           "timestamp": T0 + int(rng.random() * 400 * DAY_MS)})
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
    assert ingest_events(es, settings_for, epath, progress=False).failed == 0
    return items, events


def indexing_total(es, index: str) -> int:
    es.indices.refresh(index=index)
    return es.indices.stats(index=index, metric="indexing")["_all"]["primaries"]["indexing"]["index_total"]


@pytest.mark.slow
def test_trained_model_beats_popularity_and_knn_only(es, settings_for, embedder, world, tmp_path):
    from vecrank.rank.evaluate import load_events

    rec = Recommender(es, settings_for, embedder=embedder, config=RetrieveConfig())
    spec = feats.FeatureSpec(facets=("topic",), cooc=True)
    writes_before = indexing_total(es, settings_for.index("items"))
    report = run(rec, load_events(es, settings_for), spec, catalog_size=len(world[0]),
                 config=EvalConfig(test_fraction=0.25, horizon_days=60, train_cuts=3, pool=40),
                 train_config=TrainConfig(num_boost_round=200, early_stopping_rounds=30))
    ndcg = {name: s["ndcg@10"] for name, s in report.systems.items()}
    assert report.split["evaluated_users"] >= 30  # the users whose own cut falls after T
    assert report.training["train"]["positive_rows"] > 50
    assert ndcg["vecrank"] > ndcg["popular"] and ndcg["vecrank"] > ndcg["knn"], ndcg
    for other in ("popular", "knn"):  # the margin is not noise
        assert report.comparison["vs"][other]["ci95"][0] > 0, report.comparison
    # Read-only: the past came from the events; no item was rewritten, and the caller's
    # Recommender is as it was.
    assert indexing_total(es, settings_for.index("items")) == writes_before
    assert rec.config == RetrieveConfig()
    files = write_outputs(report, tmp_path / "eval")
    assert json.loads(open(files["json"]).read())["systems"]["vecrank"]["ndcg@10"] == ndcg["vecrank"]
    assert open(files["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # Register, activate, serve: the same model ranks live requests, with its version attached.
    registry = Registry(es, settings_for)
    model = registry.register(report.model)
    assert (model.version, model.status) == (1, "candidate")
    registry.set_status("vecrank", 1, "active")
    served = registry.get("vecrank")
    assert served.version == 1 and served.spec == spec and served.metrics["comparison"] == report.comparison
    ranker = Ranker(Recommender(es, settings_for, embedder=embedder), served, pool=40, log_requests=True)
    rec_out = ranker.recommend(user="u1", k=5, explain=True)
    assert rec_out.model == "vecrank@1" and len(rec_out.items) == 5
    assert set(rec_out.items[0].contributions) == {*spec.names, "bias"}
    total = sum(rec_out.items[0].contributions.values())
    assert total == pytest.approx(rec_out.items[0].score, abs=1e-3)
    assert {"retrieval", "features", "model", "total"} <= set(rec_out.timings_ms)
    cold = ranker.recommend(query="rockets and astronauts", k=3)
    assert cold.path == "query" and cold.model.startswith("none (path query not in vecrank@1")
    es.indices.refresh(index=settings_for.index("feature-log"))
    logged = es.search(index=settings_for.index("feature-log"), query={"term": {"request_id": rec_out.request_id}},
                       size=10)["hits"]["hits"]
    assert len(logged) == 5 and len(logged[0]["_source"]["features"]) == len(spec.names)
    again = Registry(es, settings_for).register(report.model)
    assert again.version == 2
    registry.set_status("vecrank", 2, "active")
    assert [m.status for m in registry.list("vecrank")] == ["archived", "active"]


def test_registry_refuses_a_malformed_booster(es, settings_for):
    from vecrank.errors import VecrankError

    model = RankerModel(model_id="bad", spec=feats.FeatureSpec(), booster_json='{"learner": "nope"}')
    with pytest.raises(Exception):
        Registry(es, settings_for).register(model)
    with pytest.raises(VecrankError, match="model .bad. has no active version; versions: none"):
        Registry(es, settings_for).get("bad")


@pytest.mark.slow
def test_cli_evaluate_model_and_ranked_recommend(es, settings_for, world, tmp_path, capsys):
    from clihelp import connection_args, run_cli

    base = [*connection_args(settings_for), "--index-prefix", settings_for.index_prefix]
    result = run_cli(capsys, *base, "evaluate", "--facet", "topic", "--horizon-days", "60", "--train-cuts", "2",
                     "--pool", "40", "--test-fraction", "0.25", "--activate", "--out", str(tmp_path / "eval"), "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["model"] == {"id": "vecrank", "version": 1, "status": "active"}
    assert set(out["systems"]) == {"popular", "cooccurrence", "als", "knn", "vecrank"}
    assert (tmp_path / "eval" / "evaluation.png").is_file()
    listed = json.loads(run_cli(capsys, *base, "model", "list", "--json").out)
    assert [(m["model"], m["version"], m["status"]) for m in listed] == [("vecrank", 1, "active")]
    ranked = run_cli(capsys, *base, "recommend", "--user", "u1", "-k", "3", "--explain", "--pool", "40")
    assert ranked.code == 0, ranked.err
    assert "ranked by vecrank@1" in ranked.out and "TOP FEATURES" in ranked.out
    plain = run_cli(capsys, *base, "recommend", "--user", "u1", "-k", "3", "--no-rank")
    assert "no ranker (kNN order)" in plain.out
    assert run_cli(capsys, *base, "model", "archive", "vecrank", "1").code == 0
    assert "no ranker" in run_cli(capsys, *base, "recommend", "--user", "u1", "-k", "3").out


def test_training_rows_from_the_serving_feature_log(es, settings_for, embedder, world, tmp_path, capsys):
    from vecrank.rank.train import from_feature_log

    spec = feats.FeatureSpec(facets=("topic",))
    rng = np.random.default_rng(1)
    seed_table = TrainingTable(feature_names=spec.names)
    for g in range(8):
        seed_table.add(f"s{g}", "u", 0, [f"i{j}" for j in range(6)], [1.0] + [0.0] * 5,
                       rng.normal(size=(6, len(spec.names))))
    booster, _ = train_ranker(seed_table, None, TrainConfig(num_boost_round=5))
    model = Registry(es, settings_for).register(RankerModel.from_booster("logged", spec, booster))
    ranker = Ranker(Recommender(es, settings_for, embedder=embedder), model, pool=20, log_requests=True)
    now = max(e["timestamp"] for e in world[1]) + DAY_MS
    served = {u: ranker.recommend(user=u, k=5, now_ms=now) for u in ("u1", "u2", "u3")}

    first, second = served["u1"].items[0].item_id, served["u2"].items[3].item_id
    clicks = [{"user": "u1", "item": first, "type": "click", "timestamp": now + 3_600_000,
               "request_id": served["u1"].request_id},
              {"user": "u2", "item": second, "type": "purchase", "timestamp": now + 7_200_000},
              {"user": "u3", "item": served["u3"].items[0].item_id, "type": "click", "timestamp": now + 30 * DAY_MS}]
    path = tmp_path / "clicks.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in clicks))
    ingest_events(es, settings_for, path, progress=False)
    es.indices.refresh(index=settings_for.index("feature-log"))

    table = from_feature_log(es, settings_for, spec, horizon_days=7)
    assert table.summary()["requests"] == 3 and len(table) == 15
    got = {(u, i): lab for u, i, lab in zip(table.user_id, table.item_id, table.label) if lab > 0}
    assert got == {("u1", first): 1.0, ("u2", second): 3.0}  # u3's click came after the 7-day window
    row = next(i for i, (u, item) in enumerate(zip(table.user_id, table.item_id)) if (u, item) == ("u1", first))
    logged = table.features[row]
    served_row = served["u1"].items[0].features
    assert np.array_equal(np.isnan(logged), np.isnan(served_row))
    assert np.allclose(np.nan_to_num(logged), np.nan_to_num(served_row), atol=1e-6)
    booster, info = train_ranker(table, None, TrainConfig(num_boost_round=5))
    assert info["train_rows"] == 15
    assert from_feature_log(es, settings_for, feats.FeatureSpec(), horizon_days=7).summary()["rows"] == 0

    from clihelp import connection_args, run_cli

    result = run_cli(capsys, *connection_args(settings_for), "--index-prefix", settings_for.index_prefix,
                     "train", "--from-log", "--facet", "topic", "--no-cooc", "--horizon-days", "7", "--model-id", "fromlog",
                     "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert (out["id"], out["version"], out["training"]["source"]) == ("fromlog", 1, "feature-log")
    assert out["training"]["train"]["requests"] + out["training"]["valid"]["requests"] == 3


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


def test_the_split_time_ignores_impressions_logged_by_serving():
    from vecrank.rank.evaluate import Timeline

    ratings = [{"user_id": "u", "item_id": f"i{n}", "type": "rating", "value": 4.0, "timestamp": n * 1000}
               for n in range(1, 101)]
    served = [{"user_id": "u", "item_id": "i1", "type": "impression", "value": None, "timestamp": 10**9 + n}
              for n in range(500)]  # a load test last week: many impressions, all recent
    timeline = Timeline(ratings + served)
    assert timeline.quantile(0.8) == Timeline(ratings).quantile(0.8) == 80_200
