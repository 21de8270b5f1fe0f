#!/usr/bin/env python3
"""Turn MovieLens ml-latest-small plus TMDB 5000 into the files ``vecrank ingest`` reads.

Inputs (read in place, never copied into the repository):

* ``<data-dir>/movielens-latest-small/``: ``movies.csv``, ``tags.csv``, ``links.csv`` and
  ``ratings.csv`` of MovieLens ml-latest-small (GroupLens, https://grouplens.org/datasets/movielens/,
  file ``ml-latest-small.zip``).
* ``<data-dir>/tmdb-5000-movies/tmdb_5000_movies.csv.zip``: the Kaggle "TMDB 5000 Movie Dataset"
  (https://www.kaggle.com/datasets/tmdb/tmdb-movie-metadata), read from inside the zip.

Inside this project they live in ``shared/data/`` next to the repository, as described in
``shared/data/SOURCES.md``. Anywhere else, download them from those official sources into a
folder with the same layout and pass it as ``--data-dir``. Mind their terms: MovieLens is for
non-commercial research and must be cited (Harper and Konstan, ACM TiiS 5(4), 2015); TMDB data
is for non-commercial use with the attribution "This product uses the TMDB API but is not
endorsed or certified by TMDB".

Outputs, in ``--out-dir`` (default ``data-prepared/`` in the repository root, which git ignores):

* ``items.jsonl``: one movie a line: ``id`` (movieId), ``title`` (without the trailing
  ``" (year)"``), ``year`` (int, absent when the title has none), ``genres`` (list; MovieLens'
  ``"(no genres listed)"`` becomes ``[]``), ``released`` (the TMDB release date, else January 1st
  of the title's year), and, where ``links.csv`` joins the movie to TMDB 5000, ``overview``,
  ``tagline`` and ``keywords``; ``tmdb_id`` wherever ``links.csv`` has one. The users' tags are
  not part of the catalog: each was applied by a user at an instant, like a rating, and an item
  text holding every tag ever applied would show each replayed request tags from its future.
* ``events.jsonl``: one rating a line: ``user``, ``item``, ``type`` ("rating"), ``value`` (the
  rating) and ``timestamp`` (epoch seconds). Streamed, never held in memory.
* ``searches.jsonl``: one tag a line, as search intent: ``user``, ``query`` (the tag's text),
  ``item`` (the tagged movie) and ``timestamp`` — the generic search-log format that
  ``vecrank evaluate --task search --searches`` reads (a user who tagged a movie "dark comedy"
  stands for that user searching "dark comedy" and choosing it).

Then, for example::

    vecrank ingest items data-prepared/items.jsonl --template "{title} ({year}). {genres}. {overview}" \\
        --field year=integer --field released=date --field overview=text --field tagline=text
    vecrank ingest events data-prepared/events.jsonl

Standard library only, so it runs before vecrank is installed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
DEFAULT_OUT_DIR = REPO / "data-prepared"

MOVIELENS_DIR = "movielens-latest-small"
TMDB_ZIP = Path("tmdb-5000-movies") / "tmdb_5000_movies.csv.zip"
TMDB_MEMBER = "tmdb_5000_movies.csv"
ITEMS_FILE = "items.jsonl"
EVENTS_FILE = "events.jsonl"
SEARCHES_FILE = "searches.jsonl"

#: The text template to embed the items with. Every part but the title may be empty; vecrank's
#: TextTemplate drops the separators around empty fields ("Babylon 5. Sci-Fi." has no year).
#: Keywords and tagline stay out of it: adding them lengthens the texts by a third and pushes 12
#: past all-MiniLM-L6-v2's 256-token window, for little the overview does not already say.
RECOMMENDED_TEMPLATE = "{title} ({year}). {genres}. {overview}"
#: Field types to declare with ``--field``: strings would otherwise become keyword facets, and the
#: long prose fields are for reading, not for exact matching.
RECOMMENDED_FIELD_TYPES = {
    "year": "integer",
    "released": "date",
    "tmdb_id": "integer",
    "overview": "text",
    "tagline": "text",
}

NO_GENRES = "(no genres listed)"
# "Toy Story (1995)", also "(2006–2007)" for series; MovieLens leaves a trailing space sometimes.
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$")


class DataError(Exception):
    """An input file is missing or not what this script expects."""


def split_title(raw: str) -> tuple[str, int | None]:
    """Splits a MovieLens title into the title and its year.

    Args:
        raw: The ``title`` column, e.g. ``"Toy Story (1995)"``.

    Returns:
        ``(title, year)``; ``year`` is ``None`` when the title carries none.

    Example:
        >>> split_title("Toy Story (1995)")
        ('Toy Story', 1995)
        >>> split_title("Death Note: Desu nôto (2006–2007)")
        ('Death Note: Desu nôto', 2006)
        >>> split_title("Babylon 5")
        ('Babylon 5', None)
    """
    match = _TITLE_YEAR.match(raw)
    if match is None or not match.group("title"):
        return raw.strip(), None
    return match.group("title"), int(match.group("year"))


def parse_genres(raw: str) -> list[str]:
    """MovieLens' pipe-separated genres as a list; ``"(no genres listed)"`` is the empty list.

    Example:
        >>> parse_genres("Adventure|Animation"), parse_genres("(no genres listed)")
        (['Adventure', 'Animation'], [])
    """
    return [g for g in (part.strip() for part in raw.split("|")) if g and g != NO_GENRES]


def json_names(raw: str, *, where: str) -> list[str]:
    """The ``name`` of each object in a TMDB JSON list column such as ``keywords``.

    Args:
        raw: The column text, e.g. ``'[{"id": 1, "name": "pixar"}]'``.
        where: Names the row for the error message.

    Raises:
        DataError: The text is not a JSON list of objects.
    """
    if not raw.strip():
        return []
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc})") from None
    if not isinstance(values, list):
        raise DataError(f"{where}: expected a JSON list, got {type(values).__name__}")
    names = [str(v.get("name", "")).strip() for v in values if isinstance(v, dict)]
    return [n for n in names if n]


def _csv_rows(path: Path, expected: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Rows of a MovieLens CSV; newline="" lets the csv module take CRLF and LF alike."""
    if not path.is_file():
        raise DataError(f"missing {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in expected if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column(s) {', '.join(missing)} (header {reader.fieldnames})")
        yield from reader


def read_links(path: Path) -> dict[str, int]:
    """movieId -> tmdbId for the rows that have one."""
    links: dict[str, int] = {}
    for row in _csv_rows(path, ("movieId", "tmdbId")):
        tmdb = row["tmdbId"].strip()
        if tmdb:
            links[row["movieId"]] = int(tmdb)
    return links


def read_tmdb(zip_path: Path) -> dict[int, dict[str, Any]]:
    """TMDB id -> {overview, tagline, keywords} from the CSV inside the Kaggle zip."""
    if not zip_path.is_file():
        raise DataError(f"missing {zip_path}")
    out: dict[int, dict[str, Any]] = {}
    with zipfile.ZipFile(zip_path) as archive:
        try:
            member = archive.open(TMDB_MEMBER)
        except KeyError:
            raise DataError(f"{zip_path} has no {TMDB_MEMBER} (it has {archive.namelist()})") from None
        with member, io.TextIOWrapper(member, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                where = f"{zip_path}:{TMDB_MEMBER} id {row.get('id')}"
                info: dict[str, Any] = {}
                for name in ("overview", "tagline"):
                    text = (row.get(name) or "").strip()
                    if text:
                        info[name] = text
                released = (row.get("release_date") or "").strip()
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", released):
                    info["released"] = released
                keywords = json_names(row.get("keywords") or "", where=where + " keywords")
                if keywords:
                    info["keywords"] = keywords
                out[int(row["id"])] = info
    return out


def build_items(data_dir: Path) -> Iterator[dict[str, Any]]:
    """The movies as vecrank catalog records, in ``movies.csv`` order."""
    ml = data_dir / MOVIELENS_DIR
    links = read_links(ml / "links.csv")
    # TMDB needs a Kaggle account (scripts/download_data.py); without it the movies have no overview.
    tmdb = read_tmdb(data_dir / TMDB_ZIP) if (data_dir / TMDB_ZIP).is_file() else {}
    for row in _csv_rows(ml / "movies.csv", ("movieId", "title", "genres")):
        movie_id = row["movieId"]
        title, year = split_title(row["title"])
        item: dict[str, Any] = {"id": int(movie_id), "title": title}
        if year is not None:
            item["year"] = year
        item["genres"] = parse_genres(row["genres"])
        tmdb_id = links.get(movie_id)
        if tmdb_id is not None:
            item.update(tmdb.get(tmdb_id, {}))
            item["tmdb_id"] = tmdb_id
        if "released" not in item and year is not None:
            item["released"] = f"{year:04d}-01-01"
        yield item


def iter_ratings(data_dir: Path) -> Iterator[dict[str, Any]]:
    """The ratings as vecrank events, streamed from ``ratings.csv``."""
    path = data_dir / MOVIELENS_DIR / "ratings.csv"
    for row in _csv_rows(path, ("userId", "movieId", "rating", "timestamp")):
        yield {
            "user": int(row["userId"]),
            "item": int(row["movieId"]),
            "type": "rating",
            "value": float(row["rating"]),
            "timestamp": int(row["timestamp"]),
        }


def iter_tags(data_dir: Path) -> Iterator[dict[str, Any]]:
    """The tags as search-log rows (user, query, item, timestamp), from ``tags.csv``; blank tags are skipped."""
    path = data_dir / MOVIELENS_DIR / "tags.csv"
    for row in _csv_rows(path, ("userId", "movieId", "tag", "timestamp")):
        if row["tag"].strip():
            yield {
                "user": int(row["userId"]),
                "query": row["tag"].strip(),
                "item": int(row["movieId"]),
                "timestamp": int(row["timestamp"]),
            }


def _write_jsonl(handle: TextIO, record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    handle.write("\n")


def prepare(data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Writes ``items.jsonl``, ``events.jsonl`` and ``searches.jsonl`` into ``out_dir``.

    Files are written under a temporary name and renamed at the end, so an interrupted run
    never leaves a half-written file where ingest would pick it up.

    Args:
        data_dir: Holds ``movielens-latest-small/`` and ``tmdb-5000-movies/``.
        out_dir: Created if missing.

    Returns:
        The summary: counts, output paths, the recommended template and field types.

    Raises:
        DataError: An input is missing or malformed.
    """
    started = time.monotonic()
    if not (data_dir / MOVIELENS_DIR).is_dir():
        raise DataError(
            f"no MovieLens data in {data_dir}: expected {MOVIELENS_DIR}/ (from ml-latest-small.zip, "
            f"https://grouplens.org/datasets/movielens/) and, optionally, {TMDB_ZIP} (Kaggle's TMDB "
            "5000 Movie Dataset); scripts/download_data.py fetches them; see --help"
        )
    if not (data_dir / TMDB_ZIP).is_file():
        print(f"note: no {data_dir / TMDB_ZIP}: the movies get no TMDB overview, tagline or keywords", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    items_path, events_path = out_dir / ITEMS_FILE, out_dir / EVENTS_FILE
    counts = Counter()
    tmp_items, tmp_events = items_path.with_suffix(".jsonl.tmp"), events_path.with_suffix(".jsonl.tmp")
    with tmp_items.open("w", encoding="utf-8", newline="\n") as out:
        for item in build_items(data_dir):
            counts["movies"] += 1
            counts["with_year"] += "year" in item
            counts["with_genres"] += bool(item["genres"])
            counts["with_released"] += "released" in item
            counts["with_tmdb_id"] += "tmdb_id" in item
            counts["with_overview"] += "overview" in item
            _write_jsonl(out, item)
    users: set[int] = set()
    rated: set[int] = set()
    with tmp_events.open("w", encoding="utf-8", newline="\n") as out:
        for event in iter_ratings(data_dir):
            counts["ratings"] += 1
            users.add(event["user"])
            rated.add(event["item"])
            _write_jsonl(out, event)
    searches_path = out_dir / SEARCHES_FILE
    tmp_searches = searches_path.with_suffix(".jsonl.tmp")
    with tmp_searches.open("w", encoding="utf-8", newline="\n") as out:
        for search in iter_tags(data_dir):
            counts["searches"] += 1
            _write_jsonl(out, search)
    tmp_items.replace(items_path)
    tmp_events.replace(events_path)
    tmp_searches.replace(searches_path)
    return {
        "movies": counts["movies"],
        "with_year": counts["with_year"],
        "with_genres": counts["with_genres"],
        "with_released": counts["with_released"],
        "with_tmdb_id": counts["with_tmdb_id"],
        "with_overview": counts["with_overview"],
        "ratings": counts["ratings"],
        "users": len(users),
        "rated_movies": len(rated),
        "items_path": str(items_path),
        "events_path": str(events_path),
        "searches": counts["searches"],
        "searches_path": str(searches_path),
        "template": RECOMMENDED_TEMPLATE,
        "field_types": RECOMMENDED_FIELD_TYPES,
        "seconds": round(time.monotonic() - started, 2),
    }


def ingest_commands(summary: dict[str, Any]) -> list[str]:
    """The two ``vecrank ingest`` commands for the prepared files."""
    fields = " ".join(f"--field {k}={v}" for k, v in summary["field_types"].items())
    return [
        f'vecrank ingest items {summary["items_path"]} --template "{summary["template"]}" {fields}',
        f"vecrank ingest events {summary['events_path']}",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Turn MovieLens ml-latest-small + TMDB 5000 into vecrank's items and events JSONL. "
        "The data is read from --data-dir (this project: shared/data next to the repository; "
        "elsewhere: download ml-latest-small.zip from https://grouplens.org/datasets/movielens/ "
        "and tmdb_5000_movies.csv.zip from Kaggle's 'TMDB 5000 Movie Dataset', laid out as in "
        "shared/data/SOURCES.md). Non-commercial use only; see the module docstring for terms.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder with movielens-latest-small/ and tmdb-5000-movies/ (default: %(default)s)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help="where items.jsonl and events.jsonl go; keep it out of git (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary (counts, paths, template, field types) as JSON on stdout"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the adapter; returns the exit code (0 done, 1 bad or missing input)."""
    args = _parser().parse_args(argv)
    try:
        summary = prepare(args.data_dir, args.out_dir)
    except (DataError, OSError, ValueError, csv.Error, zipfile.BadZipFile) as exc:
        print(f"prepare_movielens: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({**summary, "commands": ingest_commands(summary)}, indent=2))
        return 0
    for key in (
        "movies",
        "with_year",
        "with_genres",
        "with_released",
        "with_tmdb_id",
        "with_overview",
        "ratings",
        "users",
        "rated_movies",
        "searches",
    ):
        print(f"{key.replace('_', ' '):>14}  {summary[key]:>7,}")
    print(
        f"wrote {summary['items_path']}, {summary['events_path']} and {summary['searches_path']} "
        f"in {summary['seconds']}s"
    )
    print(f'template: "{summary["template"]}"')
    print("next:")
    for command in ingest_commands(summary):
        print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
