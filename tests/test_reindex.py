"""Index versions behind the alias: create, list, switch, rollback, delete, and reindex that
re-embeds only what changed, verifies, and swaps atomically while searches keep working."""

from __future__ import annotations

import json
import threading

import pytest
from clihelp import connection_args, run_cli

from vecrank.errors import VecrankError
from vecrank.ingest import indices
from vecrank.ingest.embed import Embedder, HashEmbedder
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.ingest.reindex import reindex
from vecrank.ingest.template import TextTemplate

OLD = "{title}. {genres}."
NEW = "{title}. {genres}. {tagline}"


def catalog(n: int) -> list[dict]:
    genres = ["Comedy", "Drama", "Horror", "Animation", "Documentary"]
    rows = []
    for i in range(n):
        row = {"id": i, "title": f"Film number {i}", "genres": [genres[i % 5]]}
        if i % 3 == 0:
            row["tagline"] = f"The {i}th story ever told"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def loaded(es, settings_for, embedder, tmp_path):
    path = tmp_path / "items.jsonl"
    rows = catalog(60)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = ingest_items(es, settings_for, path, ItemSource(template=OLD), embedder=embedder)
    assert summary.written == 60
    return rows


def cli(capsys, settings, *args):
    return run_cli(capsys, *connection_args(settings), "--index-prefix", settings.index_prefix, *args)


def test_versions_switch_rollback_delete(es, settings_for, loaded, capsys):
    spec = indices.spec_of(es, indices.live_index(es, settings_for))
    v2 = indices.create_version(es, settings_for, spec)
    assert v2.endswith("-items-v2")
    assert indices.live_index(es, settings_for).endswith("-v1")  # a new version does not go live by itself

    listed = json.loads(cli(capsys, settings_for, "index", "list", "--json").out)
    assert [(r["version"], r["live"], r["docs"]) for r in listed] == [(1, True, 60), (2, False, 0)]

    assert cli(capsys, settings_for, "index", "switch", "2").code == 0
    assert indices.live_index(es, settings_for) == v2
    result = cli(capsys, settings_for, "index", "delete", "2", "--yes")
    assert result.code == 1 and "is live behind" in result.err
    result = cli(capsys, settings_for, "index", "rollback", "--json")
    assert json.loads(result.out)["live"].endswith("-v1")
    result = cli(capsys, settings_for, "index", "rollback")
    assert result.code == 1 and "oldest version" in result.err
    assert cli(capsys, settings_for, "index", "delete", "2", "--yes").code == 0
    assert list(indices.versions(es, settings_for)) == [1]
    result = cli(capsys, settings_for, "index", "switch", "7")
    assert result.code == 1 and "no index" in result.err


def test_reindex_with_new_index_options_copies_every_vector(es, settings_for, loaded, embedder):
    summary = reindex(
        es,
        settings_for,
        embedder=embedder,
        index_options=indices.VectorIndexOptions(type="hnsw", m=24, ef_construction=200),
    )
    assert (summary.docs, summary.copied_vectors, summary.embedded, summary.switched) == (60, 60, 0, True)
    live = indices.live_index(es, settings_for)
    assert live.endswith("-v2") and summary.source.endswith("-v1")
    assert indices.spec_of(es, live).index_options.to_dict() == {"type": "hnsw", "m": 24, "ef_construction": 200}
    assert es.count(index=summary.source)["count"] == 60  # kept for rollback
    assert indices.rollback(es, settings_for) == summary.source


def test_reindex_with_a_new_template_reembeds_only_changed_texts(es, settings_for, loaded, embedder):
    old, new = TextTemplate(OLD), TextTemplate(NEW)
    changed = sum(old.render(r) != new.render(r) for r in loaded)
    assert 0 < changed < len(loaded)  # the rows with a tagline
    summary = reindex(es, settings_for, embedder=embedder, template=NEW)
    assert (summary.embedded, summary.copied_vectors) == (changed, len(loaded) - changed)
    assert summary.verified_sample == 20
    hit = es.get(index=settings_for.index("items"), id="3")["_source"]
    assert hit["text"] == new.render(loaded[3])


def test_reindex_to_another_model(es, settings_for, loaded, embedder, tmp_path):
    other = HashEmbedder(16)
    summary = reindex(es, settings_for, embedder=other)
    assert (summary.embedded, summary.copied_vectors) == (60, 0)
    spec = indices.spec_of(es, indices.live_index(es, settings_for))
    assert (spec.model, spec.dims) == ("hash-16", 16)
    path = tmp_path / "again.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in loaded))
    with pytest.raises(indices.IndexError_, match="holds vectors of model hash-16"):
        ingest_items(es, settings_for, path, ItemSource(template=OLD), embedder=embedder)
    again = ingest_items(es, settings_for, path, ItemSource(template=OLD), embedder=other)
    assert again.skipped_unchanged == 60


class _Drifting(HashEmbedder):
    """Gives different vectors after its first call: the stored vectors stop matching their text."""

    calls = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        out = super().encode(texts, **kwargs)
        return out if self.calls == 1 else -out


def test_a_reindex_that_fails_verification_leaves_the_alias_alone(es, settings_for, loaded):
    with pytest.raises(VecrankError, match=r"failed verification, the alias still points at .*-v1"):
        reindex(es, settings_for, embedder=_Drifting(16))
    assert indices.live_index(es, settings_for).endswith("-v1")


@pytest.mark.slow
def test_searches_see_no_errors_during_a_reindex(es, settings_for, embedder, tmp_path):
    rows = catalog(600)
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest_items(es, settings_for, path, ItemSource(template=OLD), embedder=embedder)
    query = embedder.encode(["a frightening horror film"])[0].tolist()
    alias = settings_for.index("items")
    stop = threading.Event()
    outcomes: list[str] = []

    def search_loop():
        from vecrank.client import make_client

        client = make_client(settings_for)
        while not stop.is_set():
            try:
                resp = client.search(
                    index=alias,
                    knn={"field": "embedding", "query_vector": query, "k": 10, "num_candidates": 50},
                    source=["item_id"],
                )
                outcomes.append("ok" if len(resp["hits"]["hits"]) == 10 else "short")
            except Exception as exc:  # any error is what this test exists to catch
                outcomes.append(f"error: {exc}")

    thread = threading.Thread(target=search_loop)
    thread.start()
    try:
        summary = reindex(es, settings_for, embedder=embedder, template=NEW)
    finally:
        stop.set()
        thread.join()
    assert summary.switched and summary.embedded == 200
    assert len(outcomes) > 20
    assert [o for o in outcomes if o != "ok"] == []


def test_finishing_a_version_merges_it_into_one_segment(es, settings_for):
    """What cf fit and index reindex call once the copy is verified: the new version, not yet
    live, is force-merged (a kNN search walks one graph per segment)."""
    name = settings_for.index("merge-probe")
    es.indices.create(index=name, settings={"number_of_replicas": 0})
    try:
        for n in range(3):  # three refreshes: three segments
            es.index(index=name, id=str(n), document={"n": n}, refresh=True)

        def segments() -> int:
            shard = es.indices.segments(index=name)["indices"][name]["shards"]["0"][0]
            return len(shard["segments"])

        assert segments() == 3
        assert indices.finish_version(es, settings_for, "the-live-one", name, [], switch=False) is False
        assert segments() == 1
        assert es.count(index=name)["count"] == 3
    finally:
        es.indices.delete(index=name)
