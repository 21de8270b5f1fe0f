"""Item ingest against the real node with the real model: validation, reconciled counts, dead
letters, unchanged skips, the embedding cache, deletes, retries, model mismatch, resume after a kill."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clihelp import connection_args, run_cli
from esfakes import FlakyBulkClient

from vecrank.ingest import indices
from vecrank.ingest.cache import EmbeddingCache
from vecrank.ingest.embed import Embedder, HashEmbedder
from vecrank.ingest.items import ItemSource, ingest_items

TEMPLATE = "{title}. {genres}. {overview}"
SOURCE = ItemSource(template=TEMPLATE, id_field="id", field_types={"year": "integer"})

ITEMS = [
    {
        "id": 1,
        "title": "Alien",
        "genres": ["Horror", "Sci-Fi"],
        "year": 1979,
        "overview": "The crew of a space tug meets a deadly creature.",
    },
    {
        "id": 2,
        "title": "Toy Story",
        "genres": ["Animation", "Comedy"],
        "year": 1995,
        "overview": "Toys come to life when people leave the room.",
    },
    {"id": 3, "title": "Heat", "genres": ["Crime"], "year": 1995, "overview": "A detective hunts a thief crew in LA."},
    {
        "id": 4,
        "title": "Amélie",
        "genres": ["Comedy", "Romance"],
        "year": 2001,
        "overview": "A shy waitress in Paris decides to change the lives of others.",
    },
]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def write_jsonl(path: Path, rows: list, extra_lines: list[bytes] = ()) -> Path:
    with path.open("wb") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        for line in extra_lines:
            fh.write(line + b"\n")
    return path


def docs(es, settings) -> dict[str, dict]:
    hits = es.search(
        index=settings.index("items"), size=1000, source={"exclude_vectors": False}, query={"match_all": {}}
    )["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def test_catalog_with_bad_rows_reconciles_and_dead_letters_name_file_line_field(es, settings_for, embedder, tmp_path):
    bad = [
        {"title": "no id here", "genres": [], "overview": "x"},  # line 5: missing id
        {"id": 6, "title": "", "genres": [], "overview": ""},  # line 6: empty text
        {
            "id": 1,
            "title": "Alien",
            "genres": ["Horror", "Sci-Fi"],
            "year": 1979,
            "overview": "The crew of a space tug meets a deadly creature.",
        },  # line 7: duplicate id (last wins)
        {"id": 8, "title": "Bad year", "genres": [], "overview": "y", "year": "nineteen"},  # line 8: not an integer
    ]
    catalog = write_jsonl(
        tmp_path / "catalog.jsonl", ITEMS + bad, [b'{"id": 9, "title": oops}', b'{"id": 10, "title": "caf\xe9"}']
    )
    dead = tmp_path / "dead.jsonl"
    summary = ingest_items(es, settings_for, catalog, SOURCE, embedder=embedder, dead_letter_path=dead)

    assert summary.read == 10
    assert summary.written == 5  # 4 items + the duplicate of id 1
    assert summary.failed == 5
    assert summary.reconciles()
    assert summary.duplicates == 1
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    where = sorted((d["line"], d["field"], d["reason"]) for d in letters)
    assert [w[0] for w in where] == [5, 6, 8, 9, 10]
    assert all(d["source"] == str(catalog) for d in letters)
    by_line = {d["line"]: d for d in letters}
    assert by_line[5]["field"] == "id" and by_line[5]["reason"] == "missing id"
    assert by_line[6]["reason"] == "empty text"
    assert (by_line[8]["field"], by_line[8]["reason"]) == ("year", "not an integer")  # caught before Elasticsearch
    assert by_line[9]["reason"] == "malformed JSON"
    assert "UTF-8" in by_line[10]["reason"] or "UTF-8" in (by_line[10]["detail"] or "")

    stored = docs(es, settings_for)
    assert sorted(stored) == ["1", "2", "3", "4"]
    alien = stored["1"]
    assert alien["text"] == "Alien. Horror, Sci-Fi. The crew of a space tug meets a deadly creature."
    assert alien["genres"] == ["Horror", "Sci-Fi"] and alien["year"] == 1979
    vec = np.array(alien["embedding"], dtype=np.float32)
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-3
    expected = embedder.encode([alien["text"]])[0]
    assert float(vec @ expected) > 0.9999

    live = indices.live_index(es, settings_for)
    assert live == settings_for.index("items") + "-v1"
    spec = indices.spec_of(es, live)
    assert (spec.model, spec.dims, spec.template, spec.index_options.type) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        384,
        TEMPLATE,
        "int8_hnsw",
    )
    mapping = es.indices.get_mapping(index=live)[live]["mappings"]["properties"]
    assert mapping["genres"]["type"] == "keyword" and mapping["year"]["type"] == "integer"


def test_reingest_skips_unchanged_and_reembeds_only_changes(es, settings_for, embedder, tmp_path):
    catalog = write_jsonl(tmp_path / "c.jsonl", ITEMS)
    cache_path = tmp_path / "emb.sqlite"
    with EmbeddingCache(cache_path) as cache:
        first = ingest_items(es, settings_for, catalog, SOURCE, embedder=embedder, cache=cache)
        assert (first.written, first.embedded) == (4, 4)
        again = ingest_items(es, settings_for, catalog, SOURCE, embedder=embedder, cache=cache)
        assert (again.written, again.skipped_unchanged, again.embedded, again.from_cache) == (0, 4, 0, 0)

        changed = [dict(r) for r in ITEMS]
        changed[2]["overview"] = "A detective and a master thief face off in Los Angeles."
        changed[3]["year"] = 2002  # not in the text: rewritten, vector from the cache
        third = ingest_items(
            es, settings_for, write_jsonl(tmp_path / "c2.jsonl", changed), SOURCE, embedder=embedder, cache=cache
        )
        assert (third.written, third.skipped_unchanged, third.embedded, third.from_cache) == (2, 2, 1, 1)
        assert third.reconciles()
    assert docs(es, settings_for)["4"]["year"] == 2002


def test_embedding_cache_serves_a_fresh_index(es, settings_for, embedder, tmp_path):
    catalog = write_jsonl(tmp_path / "c.jsonl", ITEMS)
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        ingest_items(es, settings_for, catalog, SOURCE, embedder=embedder, cache=cache)
        es.indices.delete(index=indices.live_index(es, settings_for))
        fresh = ingest_items(es, settings_for, catalog, SOURCE, embedder=embedder, cache=cache)
    assert (fresh.written, fresh.embedded, fresh.from_cache) == (4, 0, 4)


def test_vectors_of_another_model_are_refused(es, settings_for, embedder, tmp_path):
    catalog = write_jsonl(tmp_path / "c.jsonl", ITEMS)
    ingest_items(es, settings_for, catalog, SOURCE, embedder=embedder)
    with pytest.raises(
        indices.IndexError_,
        match=r"holds vectors of model sentence-transformers/all-MiniLM-L6-v2 "
        r"\(384 dims.*this run uses hash-384.*vecrank index reindex",
    ):
        ingest_items(es, settings_for, catalog, SOURCE, embedder=HashEmbedder(384))
    other_template = ItemSource(template="{title}", id_field="id")
    with pytest.raises(indices.IndexError_, match="template"):
        ingest_items(es, settings_for, catalog, other_template, embedder=embedder)


def test_tombstones_and_delete_by_ids(es, settings_for, embedder, tmp_path, capsys):
    source = ItemSource(template=TEMPLATE, tombstone_field="gone")
    ingest_items(es, settings_for, write_jsonl(tmp_path / "c.jsonl", ITEMS), source, embedder=embedder)
    summary = ingest_items(
        es,
        settings_for,
        write_jsonl(tmp_path / "t.jsonl", [{"id": 2, "gone": True}, {"id": 99, "gone": "yes"}]),
        source,
        embedder=embedder,
    )
    assert (summary.deleted, summary.written, summary.failed) == (2, 0, 0)  # 99 was never there: still gone
    assert sorted(docs(es, settings_for)) == ["1", "3", "4"]

    ids = tmp_path / "ids.txt"
    ids.write_text("# to remove\n3\n404\n")
    result = run_cli(
        capsys,
        *connection_args(settings_for),
        "--index-prefix",
        settings_for.index_prefix,
        "ingest",
        "delete",
        "--ids",
        str(ids),
        "--yes",
        "--json",
    )
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"requested": 2, "deleted": 1, "missing": 1}
    assert sorted(docs(es, settings_for)) == ["1", "4"]


def test_strict_stops_at_the_first_bad_row_and_dry_run_writes_nothing(es, settings_for, embedder, tmp_path):
    from vecrank.errors import VecrankError

    catalog = write_jsonl(tmp_path / "c.jsonl", ITEMS + [{"id": 5, "title": ""}])
    with pytest.raises(VecrankError, match=r"c.jsonl:5 field 'title'|c.jsonl:5.*empty text"):
        ingest_items(es, settings_for, catalog, SOURCE, embedder=embedder, strict=True)
    settings_dry = dataclasses.replace(settings_for, index_prefix=settings_for.index_prefix + "-dry")
    summary = ingest_items(
        es, settings_dry, write_jsonl(tmp_path / "d.jsonl", ITEMS), SOURCE, embedder=embedder, dry_run=True
    )
    assert (summary.read, summary.written, summary.embedded) == (4, 4, 0)
    assert not es.indices.exists_alias(name=settings_dry.index("items"))


def test_429_rejections_are_retried_until_written(es, settings_for, embedder, tmp_path):
    flaky = FlakyBulkClient(es, {"1": 2, "3": 1}, status=429)
    summary = ingest_items(flaky, settings_for, write_jsonl(tmp_path / "c.jsonl", ITEMS), SOURCE, embedder=embedder)
    assert flaky.rejected == 3
    assert (summary.written, summary.failed) == (4, 0)
    assert sorted(docs(es, settings_for)) == ["1", "2", "3", "4"]


def test_503_beyond_the_retry_budget_becomes_a_dead_letter(es, settings_for, embedder, tmp_path):
    flaky = FlakyBulkClient(es, {"2": 99}, status=503)
    dead = tmp_path / "dead.jsonl"
    summary = ingest_items(
        flaky,
        settings_for,
        write_jsonl(tmp_path / "c.jsonl", ITEMS),
        SOURCE,
        embedder=embedder,
        dead_letter_path=dead,
        max_retries=2,
    )
    assert (summary.written, summary.failed, summary.retried) == (3, 1, 2)
    (letter,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert letter["line"] == 2 and letter["reason"] == "rejected by Elasticsearch (HTTP 503) after retries"


def test_cli_ingests_csv_with_a_json_summary(es, settings_for, tmp_path, capsys):
    csv_path = tmp_path / "items.csv"
    csv_path.write_text(
        'sku,name,brand\r\nA1,Trail running shoe,Acme\r\nA2,"Rain jacket, packable",Acme\r\n,No id,X\r\n'
    )
    result = run_cli(
        capsys,
        *connection_args(settings_for),
        "--index-prefix",
        settings_for.index_prefix,
        "ingest",
        "items",
        str(csv_path),
        "--id-field",
        "sku",
        "--template",
        "{name} by {brand}",
        "--no-cache",
        "--dead-letter",
        str(tmp_path / "dl.jsonl"),
        "--json",
    )
    assert result.code == 1  # one row failed
    out = json.loads(result.out)
    assert (out["read"], out["written"], out["failed"], out["reconciles"]) == (3, 2, 1, True)
    assert out["failures"] == {"missing id": 1}
    letter = json.loads((tmp_path / "dl.jsonl").read_text())
    assert (letter["line"], letter["field"]) == (4, "sku")
    assert docs(es, settings_for)["A2"]["text"] == "Rain jacket, packable by Acme"


@pytest.mark.slow
def test_an_ingest_killed_midway_resumes_without_duplicates_or_reembedding(es, settings_for, tmp_path):
    words = "red blue green small large cotton wool leather summer winter running hiking classic modern".split()
    rows = [
        {
            "id": f"p{i}",
            "title": f"{words[i % 14]} {words[(i * 7) % 14]} item {i}",
            "genres": [words[(i * 3) % 14]],
            "overview": f"catalog entry number {i}",
        }
        for i in range(3000)
    ]
    catalog = write_jsonl(tmp_path / "big.jsonl", rows)
    env = {**os.environ, "VECRANK_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "vecrank",
        *connection_args(settings_for),
        "--index-prefix",
        settings_for.index_prefix,
        "ingest",
        "items",
        str(catalog),
        "--template",
        TEMPLATE,
        "--batch-size",
        "100",
        "--json",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    alias = settings_for.index("items")
    deadline = time.monotonic() + 240
    written_before = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if es.indices.exists_alias(name=alias):
            es.indices.refresh(index=alias)
            written_before = es.count(index=alias)["count"]
            if written_before >= 500:
                break
    assert proc.poll() is None, "the ingest finished before it could be killed; make the catalog larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    es.indices.refresh(index=alias)
    written_before = es.count(index=alias)["count"]
    assert 0 < written_before < 3000

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    assert summary["read"] == 3000 and summary["reconciles"]
    assert summary["skipped_unchanged"] == written_before
    assert summary["written"] == 3000 - written_before
    # Nothing written before is embedded again; only what the killed run never reached is new.
    assert summary["embedded"] <= 3000 - written_before
    assert summary["embedded"] + summary["from_cache"] == summary["written"]
    assert es.count(index=alias)["count"] == 3000


def test_cli_events_then_signals_refresh_as_of(es, settings_for, embedder, tmp_path, capsys):
    ingest_items(es, settings_for, write_jsonl(tmp_path / "c.jsonl", ITEMS), SOURCE, embedder=embedder)
    ratings = tmp_path / "ratings.csv"
    ratings.write_text(
        "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n2,1,5.0,964982931\r\n"
        "2,3,3.0,1100000000\r\n3,77,4.0,964982224\r\n3,2,oops,964982224\r\n"
    )
    base = [*connection_args(settings_for), "--index-prefix", settings_for.index_prefix]
    result = run_cli(
        capsys,
        *base,
        "ingest",
        "events",
        str(ratings),
        "--column",
        "user=userId",
        "--column",
        "item=movieId",
        "--column",
        "value=rating",
        "--type",
        "rating",
        "--dead-letter",
        str(tmp_path / "dl.jsonl"),
        "--json",
    )
    assert result.code == 1  # an unknown item and a bad value
    out = json.loads(result.out)
    assert (out["read"], out["written"], out["unknown_items"], out["failed"]) == (5, 3, 1, 1)

    result = run_cli(capsys, *base, "signals", "refresh", "--as-of", "2001-01-01T00:00:00Z", "--json")
    assert result.code == 0, result.err
    es.indices.refresh(index=settings_for.index("items"))
    signals = es.get(index=settings_for.index("items"), id="1")["_source"]["signals"]
    assert (signals["rating_count"], signals["rating_mean"]) == (2, 4.5)
    later = es.get(index=settings_for.index("items"), id="3")["_source"]["signals"]  # its rating is from 2004
    assert (later["rating_count"], later["rating_mean"]) == (0, None)
    result = run_cli(capsys, *base, "signals", "refresh", "--json")
    es.indices.refresh(index=settings_for.index("items"))
    assert es.get(index=settings_for.index("items"), id="3")["_source"]["signals"]["rating_count"] == 1
    assert run_cli(capsys, *base, "signals", "refresh", "--windows", "0").code == 2
