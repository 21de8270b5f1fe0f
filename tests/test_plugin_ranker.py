"""Ranking in Python and inside Elasticsearch by the plugin give the same order: the Ranker end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vecrank.ingest.embed import Embedder
from vecrank.ingest.events import ingest_events
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.ingest.signals import refresh_signals
from vecrank.rank import features as feats
from vecrank.rank.evaluate import EvalConfig, load_events, train_model
from vecrank.rank.model import Registry
from vecrank.rank.ranker import Ranker
from vecrank.rank.recommender import Recommender
from vecrank.rank.train import TrainConfig

from test_rank import synthetic_world  # noqa: E402  (tests/ is on the path, as for clihelp)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def served(plugin_es, es_settings, embedder, tmp_path_factory):
    """A catalog, events, fresh signals and an active model registered with its plugin features."""
    import dataclasses
    import uuid

    settings = dataclasses.replace(es_settings, index_prefix=f"vrt-{uuid.uuid4().hex[:10]}")
    tmp = tmp_path_factory.mktemp("ranker")
    items, events = synthetic_world()
    (tmp / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    ingest_items(plugin_es, settings, tmp / "items.jsonl", ItemSource(template="{title}"), embedder=embedder)
    ingest_events(plugin_es, settings, tmp / "events.jsonl", progress=False)
    refresh_signals(plugin_es, settings)
    rec = Recommender(plugin_es, settings, embedder=embedder)
    model = train_model(rec, load_events(plugin_es, settings), feats.FeatureSpec(facets=("topic",), cooc=True),
                        cutoff_ms=max(e["timestamp"] for e in events) + 1,
                        config=EvalConfig(pool=40, max_train_requests=300, popular_mix=10, cooc_mix=10),
                        train_config=TrainConfig(num_boost_round=60, early_stopping_rounds=20))
    registry = Registry(plugin_es, settings)
    model = registry.set_status("vecrank", registry.register(model).version, "active")
    yield settings, rec, model
    for name in plugin_es.indices.get(index=f"{settings.index_prefix}-*"):
        plugin_es.indices.delete(index=name)


def test_plugin_and_python_rank_the_same(plugin_es, served):
    settings, rec, model = served
    assert model.plugin_features and [f["name"] for f in model.plugin_features] == model.spec.names
    assert {"name": "cooc", "source": "param_map", "param": "cooc", "key_field": "item_id"} in model.plugin_features
    ranker = Ranker(rec, model, pool=40)
    assert ranker.plugin_usable()
    compared = 0
    for user in [f"u{n}" for n in range(0, 64, 5)]:
        in_python = ranker.recommend(user=user, k=10, rerank="python")
        in_es = ranker.recommend(user=user, k=10, rerank="plugin")
        assert (in_python.rerank, in_es.rerank) == ("python", "plugin")
        assert [r.item_id for r in in_es.items] == [r.item_id for r in in_python.items], user
        # Everything was scored inside Elasticsearch, the kNN hits and the additions alike.
        assert all(r.candidate.model_score is not None for r in in_es.items)
        assert {r.candidate.origin for r in in_es.items} - {"knn"}, "no addition in the top 10"
        np.testing.assert_allclose([r.score for r in in_es.items], [r.score for r in in_python.items], atol=1e-5)
        compared += 1
    assert compared == 13
    # auto: the plugin, unless the feature rows are needed (explain, request logging).
    assert ranker.recommend(user="u1", k=5).rerank == "plugin"
    explained = ranker.recommend(user="u1", k=5, explain=True)
    assert explained.rerank == "python" and explained.items[0].contributions


def test_a_model_without_plugin_features_is_ranked_in_python(plugin_es, served):
    settings, rec, model = served
    bare = Registry(plugin_es, settings).get(model.model_id, model.version)
    bare.plugin_features = None
    ranker = Ranker(rec, bare, pool=40)
    assert not ranker.plugin_usable() and ranker.recommend(user="u3", k=5).rerank == "python"
    with pytest.raises(Exception, match="cannot be ranked by the plugin"):
        ranker.recommend(user="u3", k=5, rerank="plugin")

