"""A running service follows the items alias: after ``index reindex --model M2`` (another text model,
other dimensions) it answers over the new index with M2's query vectors, without a restart; the
periodic check notices a rollback by itself."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import pytest
from test_serve import Server

from vecrank.ingest import indices
from vecrank.ingest.embed import Embedder, packaged_model_path
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.ingest.reindex import reindex

WORDS = ["dogs", "cats", "rockets", "bread", "ghosts", "tennis", "storms", "pirates", "whales", "trains"]


@pytest.fixture(scope="module")
def m2(tmp_path_factory):
    """A second sentence-transformers model of 48 dimensions: the packaged MiniLM with a dense
    projection on top, saved as a local model folder (what ``--model PATH`` takes)."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError:  # sentence-transformers before 5.x
        from sentence_transformers.models import Dense

    torch.manual_seed(0)
    base = SentenceTransformer(str(packaged_model_path()), device="cpu")
    dims = (getattr(base, "get_embedding_dimension", None) or base.get_sentence_embedding_dimension)()
    dense = Dense(dims, 48, activation_function=torch.nn.Identity())
    path = tmp_path_factory.mktemp("m2") / "minilm-48"
    SentenceTransformer(modules=[*base, dense], device="cpu").save(str(path))
    return str(path)


@pytest.fixture
def world(es, es_settings, tmp_path):
    settings = dataclasses.replace(es_settings, index_prefix=f"vrx-{uuid.uuid4().hex[:10]}")
    rows = [{"id": f"i{n}", "title": f"A story about {w}"} for n, w in enumerate(WORDS)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = ingest_items(es, settings, tmp_path / "items.jsonl", ItemSource(template="{title}"), embedder=Embedder())
    assert summary.written == len(WORDS)
    yield settings
    names = list(es.indices.get(index=f"{settings.index_prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


def _knn_ids(es, settings, vector, k=3):
    hits = es.search(
        index=settings.index("items"),
        knn={"field": "embedding", "query_vector": [float(x) for x in vector], "k": k, "num_candidates": 50},
        source=False,
        size=k,
    )["hits"]["hits"]
    return [h["_id"] for h in hits]


def test_the_service_follows_a_reindex_to_another_model(es, world, m2):
    from vecrank.serve import RecommendService, ServeConfig, create_app

    settings = world
    service = RecommendService(
        settings,
        # A long budget: the first request after the switch may wait for M2 to load.
        ServeConfig(model_refresh_s=1.0, request_budget_s=60, log_exposures=False, log_features=False),
    )
    try:
        with Server(create_app(service, threads=2, auth=False)) as api:
            status, _, body = api.call("GET", "/recommendations?query=dogs&k=3")
            assert status == 200, body
            assert body["items"][0]["item_id"] == "i0"
            status, _, health = api.call("GET", "/health")
            assert health["items"]["dims"] == 384 and health["items"]["index"].endswith("-items-v1")

            summary = reindex(es, settings, embedder=Embedder(m2))  # `vecrank index reindex --model M2`
            assert summary.switched
            assert (indices.spec_of(es, indices.live_index(es, settings)).dims) == 48
            # At once, well within the periodic check: Elasticsearch refuses the old model's
            # 384 dimensions, the service re-reads the alias and answers with M2's vectors.
            for query in ("dogs", "ghosts"):
                status, _, body = api.call("GET", f"/recommendations?query={query}&k=3")
                assert status == 200, body
                expected = _knn_ids(es, settings, Embedder(m2).encode([query])[0])
                assert [it["item_id"] for it in body["items"]] == expected
            status, _, health = api.call("GET", "/health")
            assert health["items"] == {"index": summary.target, "model": m2, "dims": 48}, health

            # A rollback, noticed by the periodic check alone (no request fails first).
            assert indices.rollback(es, settings).endswith("-items-v1")
            time.sleep(1.2)
            status, _, health = api.call("GET", "/health")
            assert health["items"]["dims"] == 384 and health["items"]["index"].endswith("-items-v1"), health
            status, _, body = api.call("GET", "/recommendations?query=dogs&k=3")
            assert status == 200 and body["items"][0]["item_id"] == "i0", body
    finally:
        service.close()
