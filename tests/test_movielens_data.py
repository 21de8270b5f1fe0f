"""The MovieLens + TMDB adapter on the real files, then a slice of it through the real pipeline.

Reads the public data in ``shared/data/`` next to the repository (see ``shared/data/SOURCES.md``);
the module is skipped where that folder is absent. The ingest tests embed with the real model
into the real test node.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import re
import statistics
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"

if not DATA_DIR.is_dir():
    pytest.skip(
        f"the public MovieLens/TMDB data is not at {DATA_DIR} (see shared/data/SOURCES.md for " "where to download it)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.realdata

SUBSET_SIZE = 300  # the first 300 movies of movies.csv: movieIds 1..341, Toy Story (1) among them
TOY_STORY = "1"


def _load_adapter():
    # scripts/ is not a package: load the script as a module, exactly the file users run.
    spec = importlib.util.spec_from_file_location("prepare_movielens", REPO / "scripts" / "prepare_movielens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


adapter = _load_adapter()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("movielens")
    summary = adapter.prepare(DATA_DIR, out)
    items = [json.loads(line) for line in Path(summary["items_path"]).read_text(encoding="utf-8").splitlines()]
    return summary, {str(item["id"]): item for item in items}


# --------------------------------------------------------------------------------------------
# The adapter alone
# --------------------------------------------------------------------------------------------


def test_counts_match_the_documented_dataset(prepared):
    summary, items = prepared
    assert summary["movies"] == len(items) == 9_742
    assert summary["ratings"] == 100_836
    assert summary["users"] == 610
    assert summary["rated_movies"] == 9_724
    # links.csv has a tmdbId for all but 8 of its 9,742 rows.
    assert summary["with_tmdb_id"] == 9_742 - 8
    # 3,537 movies get a TMDB overview: 3,537 links.csv rows point at one of the 4,803 TMDB 5000
    # films, and every one of those films has an overview (the 4 TMDB rows without one are not
    # linked from MovieLens). It is 3,536 distinct films because two movieIds link to tmdbId 4912.
    # SOURCES.md says "about 3,537"; this is the exact figure.
    assert summary["with_overview"] == 3_537
    assert len({i["tmdb_id"] for i in items.values() if "overview" in i}) == 3_536
    # A release date for every movie with a year: TMDB's for the 3,537 TMDB films, else January 1st
    # of the title's year (the 12 movies without a year have none).
    assert summary["with_released"] == summary["with_year"] == 9_730
    assert "with_tags" not in summary
    with Path(summary["events_path"]).open(encoding="utf-8") as events:
        first = json.loads(next(events))
        assert 1 + sum(1 for _ in events) == 100_836
    assert first == {"user": 1, "item": 1, "type": "rating", "value": 4.0, "timestamp": 964982703}


def test_titles_years_genres_release_dates_and_tmdb_fields_parse(prepared):
    _, items = prepared
    toy = items["1"]
    assert (toy["title"], toy["year"], toy["tmdb_id"]) == ("Toy Story", 1995, 862)
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    # The users' tags are not catalog text (each was applied at an instant, like a rating).
    assert "tags" not in toy
    assert toy["released"] == "1995-10-30"  # TMDB's date
    assert items["4"]["released"] == "1995-01-01"  # no TMDB match: January 1st of the title's year
    assert toy["overview"].startswith("Led by Woody, Andy's toys live happily")
    assert "toy comes to life" in toy["keywords"]
    assert "tagline" not in toy  # TMDB has none for it: absent, not empty

    # A series' year range keeps its first year; MovieLens' trailing spaces do not survive.
    assert (items["171749"]["title"], items["171749"]["year"]) == ("Death Note: Desu nôto", 2006)
    assert items["27008"]["title"] == "From Dusk Till Dawn 2: Texas Blood Money"
    # No year in the title: the field is absent. No genres: an empty list.
    no_year = [i for i in items.values() if "year" not in i]
    assert len(no_year) == 12 and {"Babylon 5", "Black Mirror"} <= {i["title"] for i in no_year}
    assert sum(1 for i in items.values() if not i["genres"]) == 34
    assert all("(no genres listed)" not in i["genres"] for i in items.values())
    # No TMDB match: no overview, tagline or keywords at all.
    assert not {"overview", "tagline", "keywords"} & set(items["2"])  # Jumanji: tmdbId 8844 not in TMDB 5000
    assert sum(1 for i in items.values() if "released" in i and not i["released"].endswith("-01-01")) == 3_518
    for item in items.values():
        assert "tags" not in item
        assert ("released" in item) == ("year" in item)
        if "released" in item:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", item["released"]), item
            if "overview" not in item:
                assert item["released"] == f"{item['year']:04d}-01-01", item
        assert isinstance(item["id"], int) and item["title"] == item["title"].strip()


def _expected_text(item: dict) -> str:
    """What the recommended template should render, built independently of TextTemplate."""
    head = item["title"] + (f" ({item['year']})" if "year" in item else "")
    parts = [head, ", ".join(item["genres"]), item.get("overview", "").strip()]
    parts = [p for p in parts if p]
    text = ". ".join(parts)
    # The template's last ". " survives as a full stop when the overview is missing.
    return text if "overview" in item or text.endswith((".", "!", "?")) else text + "."


def test_recommended_template_renders_clean_text(prepared):
    from vecrank.ingest.template import TextTemplate

    _, items = prepared
    template = TextTemplate(adapter.RECOMMENDED_TEMPLATE)
    assert template.render(items["1"]).startswith(
        "Toy Story (1995). Adventure, Animation, Children, Comedy, Fantasy. Led by Woody,"
    )
    assert template.render(items["4"]) == "Waiting to Exhale (1995). Comedy, Drama, Romance."  # no TMDB
    babylon = next(i for i in items.values() if i["title"] == "Babylon 5")
    assert template.render(babylon) == "Babylon 5. Sci-Fi."  # no year: no "()" left behind
    # The ")" after the year stays when the fields after it are empty (26 movies: a year, no genres).
    assert template.render(items["114335"]) == "La cravate (1957)."
    wrong = {key: template.render(item) for key, item in items.items() if template.render(item) != _expected_text(item)}
    assert not wrong


# --------------------------------------------------------------------------------------------
# A 300-movie slice through the real pipeline
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    from vecrank.ingest.embed import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def subset(es, es_settings, prepared, embedder, tmp_path_factory):
    """The first 300 movies ingested once for the module, under their own index prefix."""
    from vecrank.ingest.items import ItemSource, ingest_items

    summary, _ = prepared
    lines = Path(summary["items_path"]).read_text(encoding="utf-8").splitlines()[:SUBSET_SIZE]
    folder = tmp_path_factory.mktemp("subset")
    path = folder / "items.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = dataclasses.replace(es_settings, index_prefix=f"vrt-ml-{uuid.uuid4().hex[:8]}")
    source = ItemSource(template=adapter.RECOMMENDED_TEMPLATE, field_types=adapter.RECOMMENDED_FIELD_TYPES)
    result = ingest_items(es, settings, path, source, embedder=embedder, dead_letter_path=folder / "dead.jsonl")
    yield settings, {str(json.loads(line)["id"]) for line in lines}, result, folder
    names = list(es.indices.get(index=f"{settings.index_prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


@pytest.mark.slow
def test_subset_ingests_and_knn_finds_toy_story(es, subset, embedder):
    settings, ids, result, _ = subset
    assert TOY_STORY in ids and len(ids) == SUBSET_SIZE
    assert (result.read, result.written, result.failed, result.embedded) == (300, 300, 0, 300)
    assert result.reconciles() and result.truncated == 0
    assert es.count(index=settings.index("items"))["count"] == 300

    query = embedder.encode(["animated toys come to life"])[0].tolist()
    hits = es.search(
        index=settings.index("items"),
        source=["title"],
        knn={"field": "embedding", "query_vector": query, "k": 3, "num_candidates": 300},
    )["hits"]["hits"]
    assert TOY_STORY in [h["_id"] for h in hits], [(h["_id"], h["_source"]["title"]) for h in hits]


@pytest.mark.slow
def test_subset_ratings_become_events_and_rating_signals(es, subset):
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.signals import refresh_signals
    from vecrank.rank.store import refresh_profiles

    settings, ids, _, folder = subset
    # The raw ratings.csv rows of the subset's movies, header and all: the CSV path with a
    # columns mapping is what a user with their own ratings export would run.
    ratings_csv = folder / "ratings.csv"
    toy_story: list[float] = []
    kept = 0
    with (
        (DATA_DIR / "movielens-latest-small" / "ratings.csv").open(encoding="utf-8", newline="") as src,
        ratings_csv.open("w", encoding="utf-8", newline="") as out,
    ):
        reader, writer = csv.reader(src), csv.writer(out)
        writer.writerow(next(reader))
        for row in reader:
            if row[1] in ids:
                writer.writerow(row)
                kept += 1
                if row[1] == TOY_STORY:
                    toy_story.append(float(row[2]))
    assert kept == 9_444 and len(toy_story) == 215

    summary = ingest_events(
        es,
        settings,
        ratings_csv,
        default_type="rating",
        columns={"user": "userId", "item": "movieId", "value": "rating", "timestamp": "timestamp"},
        dead_letter_path=folder / "events-dead.jsonl",
        refresh_states=refresh_profiles,
    )
    assert summary.reconciles()
    assert (summary.read, summary.written, summary.failed, summary.unknown_items) == (kept, kept, 0, 0)
    assert dict(summary.by_type) == {"rating": kept}

    signals = refresh_signals(es, settings)
    assert signals.events_seen == kept and signals.failed == 0 and signals.items_missing == 0
    stored = es.get(index=settings.index("items"), id=TOY_STORY)["_source"]["signals"]
    assert stored["rating_count"] == len(toy_story)
    assert stored["rating_mean"] == pytest.approx(statistics.fmean(toy_story), abs=1e-9)
