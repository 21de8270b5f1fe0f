"""Ranking in Python and inside Elasticsearch by the plugin, end to end through the Ranker.

One catalog and its events go through the whole stack (items, events, signals, ``vecrank cf
fit``, the users' stored states, a model trained on replays of the past, registered with its
``plugin_features`` and activated); then the same requests are ranked both ways and compared on
the same hits: the order, the scores, and the feature rows (the Python path's against what the
plugin explains it scored with). The profile path's round trips are counted on the client's
transport.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import numpy as np
import pytest
from test_rank import synthetic_world  # noqa: E402  (tests/ is on the path, as for clihelp)
from test_search_eval import _synthetic_searches  # noqa: E402

from vecrank.ingest.cf import fit_index
from vecrank.ingest.embed import Embedder
from vecrank.ingest.events import ingest_events
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.ingest.signals import refresh_signals
from vecrank.interactions import DAY_MS
from vecrank.rank import rescore as R
from vecrank.rank import search_eval as se
from vecrank.rank.evaluate import EvalConfig, ReplayConfig, fit_rankers, load_past
from vecrank.rank.exposure import ColdSlots, place_cold
from vecrank.rank.features import FeatureSpec
from vecrank.rank.model import Registry
from vecrank.rank.offline import PoolConfig
from vecrank.rank.queries import SEARCH_POOL, flatten_mapping
from vecrank.rank.ranker import Ranker
from vecrank.rank.recommender import Recommender
from vecrank.rank.state import StateConfig
from vecrank.rank.store import refresh_all_users, refresh_profiles
from vecrank.rank.train import TrainConfig

pytestmark = pytest.mark.slow

POOL = PoolConfig(text=20, cf=20, cooc=10, seq=10, ease=10, popular=10, trending=10)
USERS = [f"u{n}" for n in range(0, 64, 7)]  # every topic (n % 4) more than once
K = 10
SCORE_TOL = 1e-4


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def _replay_config(client, settings, *, facets, item_fields) -> ReplayConfig:
    """As ``vecrank/cli/rank.py::_replay_config`` builds it from the live items mapping."""
    from vecrank.ingest import indices

    live = indices.live_index(client, settings)
    types = flatten_mapping(client.indices.get_mapping(index=live)[live]["mappings"]["properties"])
    spec = FeatureSpec.for_fields(item_fields, facets, types, pool=POOL.to_dict())
    return ReplayConfig(pool=POOL, state=StateConfig(facets=tuple(facets)), spec=spec)


@pytest.fixture(scope="module")
def served(plugin_es, es_settings, embedder, tmp_path_factory):
    """A catalog, events, fresh signals, collaborative vectors, the users' states, and an active
    model trained on replays and registered with its plugin features."""
    settings = dataclasses.replace(es_settings, index_prefix=f"vrt-{uuid.uuid4().hex[:10]}")
    tmp = tmp_path_factory.mktemp("ranker")
    items, events = synthetic_world()
    # A numeric field, so that the plugin's `field` source is part of the model too.
    items = [{**it, "year": 1980 + int(it["id"].rsplit("-", 1)[1])} for it in items]
    (tmp / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    now = max(e["timestamp"] for e in events) + DAY_MS
    try:
        assert ingest_items(
            plugin_es, settings, tmp / "items.jsonl", ItemSource(template="{title}"), embedder=embedder
        ).written == len(items)
        assert (
            ingest_events(
                plugin_es, settings, tmp / "events.jsonl", progress=False, refresh_states=refresh_profiles
            ).failed
            == 0
        )
        refresh_signals(plugin_es, settings, as_of=now)
        replay = _replay_config(plugin_es, settings, facets=("topic",), item_fields=("year",))
        assert fit_index(plugin_es, settings, replay.cf).switched
        assert refresh_all_users(plugin_es, settings, config=replay.state) == 64
        config = EvalConfig(refits=2, horizon_days=120, train_cuts=2, max_train_requests=300)
        past = load_past(plugin_es, settings, replay_config=replay, config=config)
        models, _ = fit_rankers(
            past,
            [None],
            replay_config=replay,
            config=config,
            train_config=TrainConfig(num_boost_round=60, early_stopping_rounds=20),
        )
        registry = Registry(plugin_es, settings)
        model = registry.set_status("vecrank", registry.register(models[None]).version, "active")
        rec = Recommender(plugin_es, settings, embedder=embedder)
        seen = {}
        for e in events:
            seen.setdefault(e["user"], set()).add(e["item"])
        yield {
            "settings": settings,
            "rec": rec,
            "model": model,
            "now": now,
            "items": items,
            "events": events,
            "seen": seen,
        }
    finally:
        names = list(
            plugin_es.indices.get(index=f"{settings.index_prefix}-*", expand_wildcards="all", ignore_unavailable=True)
        )
        if names:
            plugin_es.indices.delete(index=",".join(names))


class _Searches:
    """Records what ``client.search`` answers (the plugin path's one search), asking for ``explain``
    so that each hit carries the feature row the plugin scored it with."""

    def __init__(self, client, *, explain: bool):
        self.search, self.explain, self.hits = client.search, explain, []

    def __call__(self, *args, **kwargs):
        if self.explain:
            kwargs["explain"] = True
        resp = self.search(*args, **kwargs)
        self.hits.append(resp["hits"]["hits"])
        return resp


class _Requests:
    """Counts the requests the client's transport sends (``client.options(...)`` copies share it)."""

    def __init__(self, transport):
        self.perform, self.sent = transport.perform_request, []

    def __call__(self, method, target, *args, **kwargs):
        self.sent.append(f"{method} {target.split('?')[0]}")
        return self.perform(method, target, *args, **kwargs)


def _assert_same_ranking(in_python, in_es, what) -> None:
    """The same items in the same order, with the same model scores. Exact order, ties included
    (Python breaks ties of the model score by item id, ``rank_order``; the plugin sorts by score,
    then Lucene doc id, which gives the same order on this index)."""
    py_ids, es_ids = [r.item_id for r in in_python.items], [r.item_id for r in in_es.items]
    assert py_ids and es_ids == py_ids, (what, py_ids, es_ids)
    np.testing.assert_allclose(
        [r.score for r in in_es.items], [r.score for r in in_python.items], rtol=0, atol=SCORE_TOL, err_msg=str(what)
    )


def test_plugin_and_python_rank_the_same(plugin_es, served, monkeypatch):
    rec, model = served["rec"], served["model"]
    assert model.plugin_features == R.plugin_features(model.spec)
    assert [f["name"] for f in model.plugin_features] == model.spec.names
    assert {"name": "cooc", "source": "param_map", "param": "cooc", "key_field": "item_id"} in model.plugin_features
    assert {"name": "item.year", "source": "field", "field": "year", "transform": "identity"} in model.plugin_features
    assert any(f["source"] == "rank" for f in model.plugin_features)
    assert any(f["source"] == "count" for f in model.plugin_features)  # n_sources
    ranker = Ranker(rec, model)
    assert ranker.plugin_usable() and ranker.config.pool == POOL

    searches = _Searches(plugin_es, explain=True)
    monkeypatch.setattr(plugin_es, "search", searches)
    compared, rows, worst = 0, [], 0.0
    for user in USERS:
        in_python = ranker.recommend(user=user, k=K, rerank="python", now_ms=served["now"])
        searches.hits.clear()
        in_es = ranker.recommend(user=user, k=K, rerank="plugin", now_ms=served["now"])
        assert (in_python.rerank, in_es.rerank) == ("python", "plugin")
        assert (in_python.path, in_es.path) == ("profile", "profile")
        assert in_python.ranked_by == in_es.ranked_by == f"vecrank@{model.version}"
        assert len(in_python.items) == K, user
        _assert_same_ranking(in_python, in_es, user)
        assert len({round(r.score, 6) for r in in_python.items}) > 1, f"{user}: every item scores the same"

        # The plugin's own account of each shown hit: the model score and the feature row.
        (hits,) = searches.hits
        assert [h["_id"] for h in hits] == [r.item_id for r in in_es.items]
        python_scores = {r.item_id: r.score for r in in_python.items}
        rows.extend(_assert_same_rows(in_python, in_es, hits, model.spec.names, user))
        for ranked in in_es.items:
            worst = max(worst, abs(ranked.score - python_scores[ranked.item_id]))
        # Every shown item was scored inside Elasticsearch, documents and all.
        assert all(r.candidate.fields.get("title") for r in in_es.items)
        compared += 1
    assert compared == len(USERS)
    every = np.stack(rows)
    assert len(set(np.round(every[:, model.spec.names.index("cos_profile")], 5))) > 1
    assert not np.isnan(every[:, model.spec.names.index("cf_score")]).all(), "cf fit gave no collaborative score"
    print(f"{compared} users compared, max |score difference| {worst:.1e}")

    # auto: the plugin, unless the feature rows are needed (explain, request logging).
    monkeypatch.undo()
    assert ranker.recommend(user="u1", k=5, now_ms=served["now"]).rerank == "plugin"
    explained = ranker.recommend(user="u1", k=5, explain=True, now_ms=served["now"])
    assert explained.rerank == "python" and set(explained.items[0].contributions) == {*model.spec.names, "bias"}


def _assert_same_rows(in_python, in_es, hits, names, what) -> list[np.ndarray]:
    """Each shown hit's feature row and model score as the plugin explains them equal the Python
    path's for the same item; returns the rows."""
    python_rows = {r.item_id: r.features for r in in_python.items}
    python_scores = {r.item_id: r.score for r in in_python.items}
    rows = []
    for hit, ranked in zip(hits, in_es.items):
        explained = R.explained_features(hit["_explanation"], names)
        expected = python_rows[hit["_id"]]
        assert np.array_equal(np.isnan(explained), np.isnan(expected)), (
            what,
            hit["_id"],
            [n for n, a, b in zip(names, explained, expected) if np.isnan(a) != np.isnan(b)],
        )
        np.testing.assert_allclose(
            explained, expected, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=f"{what} {hit['_id']}: {names}"
        )
        assert R.explained_model_score(hit["_explanation"]) == pytest.approx(python_scores[hit["_id"]], abs=SCORE_TOL)
        assert ranked.score == pytest.approx(R.explained_model_score(hit["_explanation"]), abs=1e-5)
        rows.append(explained)
    return rows


@pytest.fixture(scope="module")
def search_model(served):
    """The served world's search model, trained by the search evaluation on searches a user made
    just before liking a film (the film's subject as the query), registered with its plugin features."""
    rec, settings = served["rec"], served["settings"]
    replay = ReplayConfig.from_dict(served["model"].training["config"])
    config = EvalConfig(refits=2, horizon_days=120)
    past = load_past(rec.client, settings, replay_config=replay, config=config)
    report = se.run(
        rec,
        past,
        _synthetic_searches(served["events"], served["items"]),
        replay_config=replay,
        horizon_days=120,
        train_config=TrainConfig(num_boost_round=60, early_stopping_rounds=20),
        final_model=True,
    )
    return Registry(rec.client, settings).register(report.model, status="active")


SEARCHES = [(user, query) for user in (*USERS[:6], None) for query in ("rocket launch", "a haunted house", "bread")]


def test_search_requests_rank_the_same_in_python_and_with_the_plugin(plugin_es, served, search_model, monkeypatch):
    names = search_model.spec.names
    assert search_model.plugin_features == R.plugin_features(search_model.spec)
    assert {"name": "bm25", "source": "score", "transform": "positive"} in search_model.plugin_features
    assert {"name": "rank_query", "source": "rank", "of": "cos_query"} in search_model.plugin_features
    ranker = Ranker(served["rec"], served["model"], search_model=search_model)
    assert ranker.plugin_usable(search_model)
    searches = _Searches(plugin_es, explain=True)
    monkeypatch.setattr(plugin_es, "search", searches)
    rows = []
    for user, query in SEARCHES:
        what = (user, query)
        in_python = ranker.recommend(user=user, query=query, k=K, rerank="python", now_ms=served["now"])
        searches.hits.clear()
        in_es = ranker.recommend(user=user, query=query, k=K, rerank="plugin", now_ms=served["now"])
        assert (in_python.rerank, in_es.rerank) == ("python", "plugin")
        assert in_python.path == in_es.path == ("query" if user is None else "profile+query"), what
        assert in_python.ranked_by == in_es.ranked_by == f"{search_model.model_id}@{search_model.version}"
        assert len(in_python.items) == K, what
        _assert_same_ranking(in_python, in_es, what)
        (hits,) = searches.hits
        assert [h["_id"] for h in hits] == [r.item_id for r in in_es.items]
        rows.extend(_assert_same_rows(in_python, in_es, hits, names, what))
        assert all(r.candidate.fields.get("title") for r in in_es.items)  # the shown documents came back
        if user is not None:
            assert not {r.item_id for r in in_es.items} & served["seen"][user], what
    every = np.stack(rows)
    bm25 = every[:, names.index("bm25")]
    # Both kinds of pool member were shown and compared: matched by the text, and found by the kNN alone.
    assert np.isfinite(bm25).any() and np.isnan(bm25).any()
    assert len(set(np.round(every[:, names.index("cos_query")], 5))) > 1
    # auto: the plugin for the search model too, unless the feature rows are needed.
    monkeypatch.undo()
    assert ranker.recommend(user="u1", query="bread", k=5, now_ms=served["now"]).rerank == "plugin"
    assert ranker.recommend(user="u1", query="bread", k=5, explain=True, now_ms=served["now"]).rerank == "python"


def test_the_profile_path_takes_two_round_trips_with_the_plugin(plugin_es, served, monkeypatch):
    rec, model = served["rec"], served["model"]
    ranker = Ranker(rec, model)
    # The first request reads what stays fixed (the live index and its mapping, the collaborative
    # model's block, whether the plugin is installed); requests after it do not.
    ranker.recommend(user="u2", k=K, rerank="plugin", now_ms=served["now"])
    ranker.recommend(user="u2", k=K, rerank="python", now_ms=served["now"])
    requests = _Requests(plugin_es.transport)
    monkeypatch.setattr(plugin_es.transport, "perform_request", requests)
    items_index, users_index = rec.settings.index("items"), rec.settings.index("users")

    out = ranker.recommend(user="u5", k=K, rerank="plugin", now_ms=served["now"])
    assert out.rerank == "plugin" and len(out.items) == K
    # The user document (its stored state is current), then one search carrying the rescore.
    assert requests.sent == [f"GET /{users_index}/_doc/u5", f"POST /{items_index}/_search"], requests.sent

    requests.sent.clear()
    out = ranker.recommend(user="u5", k=K, rerank="python", now_ms=served["now"])
    assert out.rerank == "python" and len(out.items) == K
    # In Python: the user document, the pool's search (with its vectors), then the shown
    # documents (the pool was fetched with only the fields the features read).
    assert requests.sent == [
        f"GET /{users_index}/_doc/u5",
        f"POST /{items_index}/_search",
        f"POST /{items_index}/_mget",
    ], requests.sent


def test_a_search_request_takes_two_round_trips_and_sends_no_candidate_vectors(
    plugin_es, served, search_model, monkeypatch
):
    rec = served["rec"]
    ranker = Ranker(rec, served["model"], search_model=search_model)
    for mode in ("plugin", "python"):  # the first requests read what stays fixed, and embed once
        ranker.recommend(user="u2", query="black holes", k=K, rerank=mode, now_ms=served["now"])
    requests = _Requests(plugin_es.transport)
    monkeypatch.setattr(plugin_es.transport, "perform_request", requests)
    bodies = []
    search = plugin_es.search

    def recorded(*args, **kwargs):
        response = search(*args, **kwargs)
        bodies.append((kwargs, response))
        return response

    monkeypatch.setattr(plugin_es, "search", recorded)
    items_index, users_index = rec.settings.index("items"), rec.settings.index("users")
    for mode in ("plugin", "python"):
        requests.sent.clear()
        bodies.clear()
        out = ranker.recommend(user="u5", query="black holes", k=K, rerank=mode, now_ms=served["now"])
        assert out.rerank == mode and out.path == "profile+query" and len(out.items) == K
        # The user document, then one search: the pool, the BM25 rescore and (plugin) the model's.
        assert requests.sent == [f"GET /{users_index}/_doc/u5", f"POST /{items_index}/_search"], (mode, requests.sent)
        ((kwargs, response),) = bodies
        hits = response["hits"]["hits"]
        if mode == "plugin":
            assert [r["window_size"] for r in kwargs["rescore"]] == [2 * SEARCH_POOL] * 2
            assert "vecrank" in kwargs["rescore"][1] and kwargs["size"] == K
            # Only the shown items come back, and no vectors.
            assert len(hits) == K and "fields" not in kwargs and not any("fields" in h for h in hits)
            assert not any("embedding" in (h.get("_source") or {}) for h in hits)
        else:
            # The whole pool with its vectors: here every item the user has not seen (fewer than the kNN's k).
            assert len(hits) == len(served["items"]) - len(served["seen"]["u5"]) < SEARCH_POOL
            assert all("embedding" in h["fields"] for h in hits)


def test_filters_and_exclusions_hold_on_the_plugin_path(served):
    rec, model = served["rec"], served["model"]
    ranker = Ranker(rec, model, rerank="plugin")
    topic_of = {it["id"]: it["topic"] for it in served["items"]}
    for user in ("u0", "u1", "u6"):
        seen = served["seen"][user]
        plain = ranker.recommend(user=user, k=K, now_ms=served["now"])
        assert plain.rerank == "plugin" and len(plain.items) == K
        assert not {r.item_id for r in plain.items} & seen, user
        for topic in ("space", "horror"):
            if not [i for i, t in topic_of.items() if t == topic and i not in seen]:
                continue
            got = ranker.recommend(user=user, k=K, filters={"topic": topic}, now_ms=served["now"])
            assert got.rerank == "plugin" and got.items, (user, topic)
            assert {topic_of[r.item_id] for r in got.items} == {topic}, (user, topic)
            assert {r.candidate.fields["topic"] for r in got.items} == {topic}
            assert not {r.item_id for r in got.items} & seen, (user, topic)
            # The filtered request ranks the filtered pool as Python does.
            in_python = ranker.recommend(
                user=user, k=K, filters={"topic": topic}, rerank="python", now_ms=served["now"]
            )
            _assert_same_ranking(in_python, got, (user, topic))
        # The caller's own clauses apply as well.
        year = ranker.recommend(
            user=user, k=K, extra_filters=[{"range": {"year": {"gte": 1995}}}], now_ms=served["now"]
        )
        assert year.items and all(r.candidate.fields["year"] >= 1995 for r in year.items), user


def test_a_model_without_plugin_features_is_ranked_in_python(plugin_es, served):
    settings, model = served["settings"], served["model"]
    bare = Registry(plugin_es, settings).get(model.model_id, model.version)
    bare.plugin_features = None
    ranker = Ranker(served["rec"], bare)
    assert not ranker.plugin_usable()
    assert ranker.recommend(user="u3", k=5, now_ms=served["now"]).rerank == "python"
    with pytest.raises(Exception, match="cannot be ranked by the plugin"):
        ranker.recommend(user="u3", k=5, rerank="plugin", now_ms=served["now"])


def _with_policy(model, policy: ColdSlots):
    """The registered model (the plugin scores with it) served under another cold-slots policy."""
    config = {**model.training["config"], "cold_slots": policy.to_dict()}
    return dataclasses.replace(model, training={**model.training, "config": config})


def test_cold_slots_give_the_same_top_50_in_python_and_with_the_plugin(plugin_es, served, monkeypatch):
    rec, model, now = served["rec"], served["model"], served["now"]
    assert Ranker(rec, model).config.cold_slots == ColdSlots()  # trained and registered with the default
    items = rec.settings.index("items")
    counts = {
        hit["_id"]: hit["_source"]["signals"]["interactions"]
        for hit in plugin_es.search(index=items, size=1000, source=["signals.interactions"])["hits"]["hits"]
    }
    assert len(counts) == len(served["items"])
    # Every item of this small world has about a dozen interactions: a threshold at the median
    # makes about half of them cold, so that the slots have something to move.
    policy = ColdSlots(threshold=int(np.median(list(counts.values()))) + 1)
    ranker, off = Ranker(rec, _with_policy(model, policy)), Ranker(rec, _with_policy(model, ColdSlots(threshold=0)))
    big = 50
    searches = _Searches(plugin_es, explain=False)
    monkeypatch.setattr(plugin_es, "search", searches)
    moved = 0
    for user in USERS:
        in_python = ranker.recommend(user=user, k=big, rerank="python", now_ms=now)
        searches.hits.clear()
        in_es = ranker.recommend(user=user, k=big, rerank="plugin", now_ms=now)
        assert in_es.rerank == "plugin" and len(in_python.items) > 2 * policy.every, user
        _assert_same_ranking(in_python, in_es, user)
        # The plugin's search returned the whole ranked pool (the rescore window), not 50 ...
        (hits,) = searches.hits
        assert len(hits) > big or len(hits) == len(in_es.items), (user, len(hits))
        # ... and the shown 50 are that model order through the policy, cold mask from the index.
        cold = [counts[h["_id"]] < policy.threshold for h in hits]
        picked = place_cold(np.arange(len(hits)), cold, k=big, policy=policy)
        assert [r.item_id for r in in_es.items] == [hits[i]["_id"] for i in picked], user
        # Against the model's own order: the head is untouched, the slots hold cold items.
        plain = [r.item_id for r in off.recommend(user=user, k=big, rerank="plugin", now_ms=now).items]
        shown = [r.item_id for r in in_es.items]
        assert shown[: 2 * policy.every - 1] == plain[: 2 * policy.every - 1], user
        cold_below = [h["_id"] for h in hits if counts[h["_id"]] < policy.threshold and h["_id"] not in shown[:19]]
        if cold_below and len(shown) >= 2 * policy.every:
            assert shown[2 * policy.every - 1] == cold_below[0], user  # the first slot: the best cold one left
        moved += shown != plain
        # The shown documents come back whole, as on the path without slots.
        assert all(r.candidate.fields.get("title") for r in in_es.items)
    assert moved, "the policy moved nothing: no user had a cold candidate below position 20"
    print(f"{len(USERS)} users compared at k = {big}; the slots changed the list of {moved}")

    # k < 20: no slot, and the plugin's search asks for k, as before.
    searches.hits.clear()
    small = ranker.recommend(user="u1", k=K, rerank="plugin", now_ms=now)
    (hits,) = searches.hits
    assert len(hits) == K and [r.item_id for r in small.items] == [h["_id"] for h in hits]

    # Still two round trips with slots: the user document, then the one search.
    monkeypatch.undo()
    ranker.recommend(user="u5", k=big, rerank="plugin", now_ms=now)
    requests = _Requests(plugin_es.transport)
    monkeypatch.setattr(plugin_es.transport, "perform_request", requests)
    assert len(ranker.recommend(user="u5", k=big, rerank="plugin", now_ms=now).items) > 20
    assert requests.sent == [f"GET /{rec.settings.index('users')}/_doc/u5", f"POST /{items}/_search"]
