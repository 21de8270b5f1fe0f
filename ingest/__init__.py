"""vecrank.ingest: item catalogs and interaction events into Elasticsearch.

Built in the "Ingest" issue: readers for JSONL/CSV/Parquet, validation with dead letters, text
templates, sentence-transformers embeddings, bulk writes, reindexing behind aliases, signals.
"""

# This folder is importable only as vecrank.ingest (through the vecrank/ingest symlink, or the package-dir
# mapping of an installed wheel): imported as `ingest` from the repository root it would be a second
# copy of every module, with its own classes and state.
if __name__ != "vecrank.ingest":
    raise ImportError(
        f"the ingest/ folder is the package vecrank.ingest; import it as vecrank.ingest, not as {__name__!r}"
    )
