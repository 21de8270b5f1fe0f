"""Download the public datasets the demo and the offline evaluation use, from their official
sources, into the layout ``shared/data/`` has (see ``shared/data/SOURCES.md``).

* MovieLens ml-latest-small, from GroupLens: ``https://files.grouplens.org/datasets/movielens/ml-latest-small.zip``.
  Its four CSV files are checked against the SHA-256 sums recorded in SOURCES.md.
* TMDB 5000 movies, from Kaggle ("TMDB 5000 Movie Dataset", ``tmdb/tmdb-movie-metadata``). Kaggle
  needs an account: with the ``kaggle`` command configured (``~/.kaggle/kaggle.json``) this script
  runs it; otherwise it prints what to download by hand. Without TMDB the catalog still works,
  with titles, genres and tags but no plot overviews.

This script cannot be tested on vecrank's own machines, which reach no site but package
registries; the tests and the quickstart read ``../shared/data/`` instead. The data is for
non-commercial use: read the licences in SOURCES.md before using it.

Usage:
    python3 scripts/download_data.py --out ../shared/data
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
MOVIELENS_SHA256 = {
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
    "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
}
KAGGLE_DATASET = "tmdb/tmdb-movie-metadata"
TMDB_FILE = "tmdb_5000_movies.csv"


def download_movielens(out: Path) -> list[str]:
    """Fetch the GroupLens zip, verify every CSV, write them under ``movielens-latest-small/``."""
    folder = out / "movielens-latest-small"
    folder.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(MOVIELENS_URL, timeout=120) as resp:
        archive = zipfile.ZipFile(io.BytesIO(resp.read()))
    problems = []
    for info in archive.infolist():
        name = Path(info.filename).name
        if not name or not name.endswith((".csv", ".txt")):
            continue
        data = archive.read(info)
        expected = MOVIELENS_SHA256.get(name)
        if expected and hashlib.sha256(data).hexdigest() != expected:
            problems.append(f"{name}: SHA-256 differs from SOURCES.md (the upstream file changed?)")
        (folder / name).write_bytes(data)
    return problems


def download_tmdb(out: Path) -> str | None:
    """Fetch TMDB 5000 with the kaggle command into ``tmdb-5000-movies/``; None when done."""
    folder = out / "tmdb-5000-movies"
    folder.mkdir(parents=True, exist_ok=True)
    kaggle = shutil.which("kaggle")
    if kaggle is None:
        return (
            f"TMDB 5000 needs a Kaggle account: download '{KAGGLE_DATASET}' (file {TMDB_FILE}) from "
            f"kaggle.com, zip it as {folder / (TMDB_FILE + '.zip')}, or install and configure the kaggle "
            "command and run this again"
        )
    proc = subprocess.run(
        [kaggle, "datasets", "download", "-d", KAGGLE_DATASET, "-f", TMDB_FILE, "-p", str(folder)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return f"kaggle failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
    plain = folder / TMDB_FILE
    if plain.exists():  # the adapter reads it from a zip, as SOURCES.md stores it
        with zipfile.ZipFile(folder / (TMDB_FILE + ".zip"), "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(plain, TMDB_FILE)
        plain.unlink()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="where movielens-latest-small/ and tmdb-5000-movies/ go",
    )
    parser.add_argument("--skip-tmdb", action="store_true", help="MovieLens only")
    args = parser.parse_args(argv)
    try:
        problems = download_movielens(args.out)
    except OSError as exc:
        print(f"error: could not download {MOVIELENS_URL}: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"MovieLens ml-latest-small in {args.out / 'movielens-latest-small'}")
    if not args.skip_tmdb:
        missing = download_tmdb(args.out)
        if missing:
            print(f"note: {missing}", file=sys.stderr)
        else:
            print(f"TMDB 5000 in {args.out / 'tmdb-5000-movies'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
