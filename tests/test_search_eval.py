"""The search evaluation: the search log, its leak-free requests, and a run on a real node."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_offline import _past
from test_rank import TOPICS, _replay_config, embedder, synthetic_world, world  # noqa: F401 - fixtures

from vecrank.interactions import DAY_MS, Interactions
from vecrank.rank import features as feats
from vecrank.rank import queries
from vecrank.rank import search_eval as se
from vecrank.rank.evaluate import EvalConfig, load_past
from vecrank.rank.model import RankerModel, Registry, search_model_id
from vecrank.rank.offline import Catalog, Past
from vecrank.rank.ranker import Ranker
from vecrank.rank.recommender import Recommender
from vecrank.rank.store import refresh_all_users
from vecrank.rank.train import TrainConfig, TrainingTable, train_ranker

T0 = 1_600_000_000_000


def _day(d: float) -> int:
    return T0 + int(d * DAY_MS)


def test_the_search_log_is_read_with_every_bad_row_named(tmp_path):
    good = tmp_path / "searches.jsonl"
    good.write_text(
        '{"user": 7, "query": " Dark  Comedy", "item": 12.0, "timestamp": 1600000000}\n'
        '{"query": "space", "item": "a", "timestamp": "2020-09-13T12:26:40Z"}\n'
    )
    assert se.read_searches(good) == [
        se.Search("7", " Dark  Comedy", "12", 1_600_000_000_000),
        se.Search(None, "space", "a", 1_600_000_000_000),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"user": 1, "query": "", "item": 1, "timestamp": 1}\n'
        '{"user": 1, "query": "x", "timestamp": 1}\n'
        '{"user": 1, "query": "x", "item": 2, "timestamp": "soon"}\n'
        "not json\n"
    )
    with pytest.raises(se.SearchLogError) as err:
        se.read_searches(bad)
    message = str(err.value)
    assert message.startswith("4 unusable row(s)")
    for line, what in ((1, "field query"), (2, "field item"), (3, "field timestamp"), (4, "malformed JSON")):
        assert f"bad.jsonl:{line}: {what}" in message, message


def test_a_request_is_made_before_the_first_touch_of_what_it_chose():
    catalog = Catalog.build({i: (np.eye(4)[n], {}) for n, i in enumerate("abcd")})
    events = [
        {"user_id": "u", "item_id": "a", "type": "rating", "value": 5.0, "timestamp": _day(10)},
        {"user_id": "u", "item_id": "b", "type": "rating", "value": 4.0, "timestamp": _day(30)},
        {"user_id": "u", "item_id": "d", "type": "rating", "value": 4.0, "timestamp": _day(1)},
    ]
    like, _ = _past(catalog, events)
    past = Past(
        Interactions.from_events(events),
        catalog,
        refits=[_day(5)],
        cf_config=like.cf_config,
        state_config=like.state_config,
        spec=like.spec,
    )
    searches = [
        se.Search("u", "Dark Comedy", "a", _day(20)),  # tagged after rating it: made before the rating
        se.Search("u", "dark  comedy ", "b", _day(12)),  # the same query; chosen before its rating
        se.Search("u", "dark comedy", "c", _day(400)),  # past the horizon of the request
        se.Search(None, "space", "c", _day(3)),
    ]  # anonymous: a request of its own
    requests = se.search_requests(searches, past, horizon_days=180)
    assert [(r.user, r.query, r.cut_ms, r.chosen) for r in requests] == [
        (None, "space", _day(3), (("c", _day(3)),)),
        ("u", "dark comedy", _day(10), (("a", _day(10)), ("b", _day(12)))),
    ]
    # What the request sees: the history before its instant, so never what it chose.
    state = past.state("u", requests[1].cut_ms)
    assert [e["item_id"] for e in state.history] == ["d"] and not state.seen & requests[1].relevant


def _synthetic_searches(events, items):
    """A user who rated a good film searched its subject just before: the query names the subject
    (BM25 and the text find four films of it), the behaviour says which of them is good."""
    subject = {it["id"]: it["title"].split("A film about ", 1)[1].split(",")[0] for it in items}
    return [
        se.Search(e["user"], subject[e["item"]], e["item"], e["timestamp"] - 60_000)
        for e in events
        if e["value"] == 5.0 and e["item"].split("-")[0] in TOPICS
    ]


def test_search_evaluation_on_a_real_node_is_leak_free(es, settings_for, world, monkeypatch):  # noqa: F811
    items, events = world
    searches = _synthetic_searches(events, items)
    replay = _replay_config()
    config = EvalConfig(refits=4, horizon_days=30)
    past = load_past(es, settings_for, replay_config=replay, config=config)
    seen_cuts = []
    real_state = past.state

    def spy(user, cut_ms):
        state = real_state(user, cut_ms)
        seen_cuts.append((cut_ms, [e["timestamp"] for e in state.history]))
        return state

    monkeypatch.setattr(past, "state", spy)
    report = se.run(
        Recommender(es, settings_for),
        past,
        searches,
        replay_config=replay,
        horizon_days=30,
        first_test_quantile=0.5,
        train_config=TrainConfig(num_boost_round=60, early_stopping_rounds=20),
    )
    out = report.to_dict()
    # Leak-free: every replayed state holds only events before its request's instant ...
    assert seen_cuts and all(all(t < cut for t in times) for cut, times in seen_cuts)
    # ... and each ranker learned from requests (and choices) before its own instant only.
    for ranker in out["training"]["rankers"]:
        earlier = [r for r in se.search_requests(searches, past, horizon_days=30) if r.cut_ms < ranker["instant_ms"]]
        assert 0 < ranker["requests"] <= len(earlier)
    assert set(out["systems"]) == {"bm25", "knn", "hybrid", "vecrank", "blend"}
    assert (
        out["split"]["evaluated_users"] >= 10 and out["split"]["evaluated_requests"] >= out["split"]["evaluated_users"]
    )
    for key in ("best_other", "ratio", "difference", "ci95"):
        assert key in out["comparison"]
    assert out["comparison"]["best_other"] in se.SEARCH_BASELINES
    # The query finds its subject's four films; what the user and the others did orders them: the
    # ranker must do at least as well as the best query-only system (seeded: the same figures each run).
    ndcg = {name: s["ndcg@10"] for name, s in out["systems"].items()}
    assert ndcg["bm25"] > 0.2, ndcg
    assert ndcg["vecrank"] > max(ndcg[n] for n in se.SEARCH_BASELINES), ndcg
    assert json.loads(json.dumps(out))["split"]["bm25_fields"][0] == "text"
    assert report.model is None  # no final_model asked for


def test_the_one_search_gathers_the_pool_the_offline_replay_builds(es, settings_for, world):  # noqa: F811
    """The serving pool's one search (kNN first, then BM25, a BM25 rescore) holds exactly what
    :func:`queries.search_pool_ids` makes of a separate kNN and BM25 search, each hit with its BM25 score."""
    rec = Recommender(es, settings_for)
    index, fields = settings_for.index("items"), queries.text_fields(rec.field_types)
    size = 8  # the pool's kNN: 8 of the 96 items, so that BM25 adds its own best
    unmatched, sizes = 0, []
    for text in ("rocket launch", "a haunted house part 3", "pasta"):
        vector = rec.embedder.encode([text], show_progress_bar=False)[0]
        hits, bm25 = rec.search_pool_hits(text, vector, None, size=size, source=False, with_vectors=False)
        knn = es.search(index=index, **queries.query_knn_body(vector, size=size, filter=None))["hits"]["hits"]
        body = queries.bm25_body(text, fields=fields, size=1000, filter=None)
        matched = es.search(index=index, **body)["hits"]["hits"]
        expected = queries.search_pool_ids([h["_id"] for h in knn], [h["_id"] for h in matched], size=size)
        assert sorted(h["_id"] for h in hits) == sorted(expected), text
        sizes.append(len(expected))
        every = {h["_id"]: h["_score"] for h in matched}
        assert bm25 == {i: every[i] for i in expected if i in every}, text  # kNN hits keep their BM25 score too
        unmatched += len(set(expected[:size]) - set(bm25))
    assert unmatched, "every kNN hit matched the text: the pool's two halves were not both tried"
    assert max(sizes) == 2 * size, sizes  # BM25 added its best to the kNN's, up to the pool's size


def _profile_model(spec, config):
    """A small profile model (serving needs one beside the search model)."""
    rng = np.random.default_rng(0)
    table = TrainingTable(feature_names=spec.names)
    for g in range(20):
        table.add(
            f"g{g}",
            "u",
            0,
            [f"i{j}" for j in range(10)],
            [1.0] + [0.0] * 9,
            rng.normal(size=(10, len(spec.names))).astype(np.float32),
        )
    booster, _ = train_ranker(table, None, TrainConfig(num_boost_round=5))
    return RankerModel.from_booster("vecrank", spec, booster, training={"config": config.to_dict()})


def test_requests_with_search_text_are_ranked_by_the_search_model_in_two_round_trips(es, settings_for, world):  # noqa: F811
    items, events = world
    replay = _replay_config()
    config = EvalConfig(refits=4, horizon_days=30)
    rec = Recommender(es, settings_for)
    past = load_past(es, settings_for, replay_config=replay, config=config)
    report = se.run(
        rec,
        past,
        _synthetic_searches(events, items),
        replay_config=replay,
        horizon_days=30,
        train_config=TrainConfig(num_boost_round=60, early_stopping_rounds=20),
        final_model=True,
    )
    registry = Registry(es, settings_for)
    assert report.model.spec.names[-3:] == list(feats.SEARCH)
    assert report.training["rankers"][-1]["instant_ms"] is None  # trained on every request
    search = registry.register(report.model, status="active")
    assert search.model_id == search_model_id("vecrank")
    assert {"name": "bm25", "source": "score", "transform": "positive"} in search.plugin_features
    ranker = Ranker(rec, registry.register(_profile_model(replay.spec, replay), status="active"), search_model=search)
    user = events[0]["user"]
    seen = {e["item"] for e in events if e["user"] == user}
    calls = [0]
    inner = es.transport.perform_request

    def counted(*args, **kwargs):
        calls[0] += 1
        return inner(*args, **kwargs)

    # What a serving process has done before: users' states stored for the model's rule (`model
    # activate` does it), the live index, the collaborative meta and the embedder read once.
    refresh_all_users(es, settings_for, config=replay.state)
    rec.documents([items[0]["id"]])
    rec.cf_meta()
    rec.embedder.encode(["warm"], show_progress_bar=False)
    es.transport.perform_request = counted
    try:
        out = ranker.recommend(user=user, query="rocket launch", k=5, explain=True)
    finally:
        es.transport.perform_request = inner
    assert calls == [2]  # the user document, then one search (the query kNN or-ed with BM25)
    assert out.ranked_by == f"{search.model_id}@{search.version}" and out.path == "profile+query"
    scores = [r.score for r in out.items]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert not seen & {r.item_id for r in out.items}
    names = search.spec.names
    for r in out.items:  # the row the model scored is the one returned, the BM25 score among its features
        assert search.predict(r.features[None, :])[0] == pytest.approx(r.score, abs=1e-6)
        assert set(r.contributions) == {*names, "bias"}
    matched = [r for r in out.items if "rocket launch" in r.candidate.fields.get("title", "")]
    assert matched and all(np.isfinite(r.features[names.index("bm25")]) for r in matched)
    # Without a user: the search model still ranks (the query path); without text the profile model does.
    anonymous = ranker.recommend(query="rocket launch", k=3)
    assert anonymous.ranked_by == out.ranked_by and anonymous.path == "query" and anonymous.cold_start
    assert ranker.recommend(user=user, k=3).ranked_by == "vecrank@1"
