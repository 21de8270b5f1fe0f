"""vecrank.ingest: item catalogs and interaction events into Elasticsearch.

Built in the "Ingest" issue: readers for JSONL/CSV/Parquet, validation with dead letters, text
templates, sentence-transformers embeddings, bulk writes, reindexing behind aliases, signals.
"""
