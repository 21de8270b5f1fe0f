"""Item catalogs into the live items index: validate, skip unchanged, embed, bulk-write.

One pass over the input in batches. For each batch the main thread validates, asks Elasticsearch
which items are unchanged (same ``content_hash``), takes vectors from the input or the embedding
cache and encodes the rest; a writer thread sends the previous batch with ``streaming_bulk``
meanwhile, so embedding and writing overlap. Memory is bounded by two batches in flight.

Every row read ends up counted once: written, skipped (unchanged), deleted or failed, and every
failure is a dead letter naming the file, line, field and reason. Writes are idempotent by item
id, so a run that was killed can simply be run again: what was written is skipped as unchanged,
and what was embedded but not written comes from the embedding cache.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from vecrank.errors import VecrankError
from vecrank.ingest import indices
from vecrank.ingest.bulk import bulk_with_retries
from vecrank.ingest.deadletter import DeadLetters
from vecrank.ingest.records import BadRecord, Deduplicator, ItemRow, Record, read_records, validate_item
from vecrank.ingest.template import TextTemplate

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.ingest.cache import EmbeddingCache
    from vecrank.ingest.embed import TextEmbedder
    from vecrank.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemSource:
    """How to read a catalog: which field is the id, how the text is built, optional extras."""

    template: str
    id_field: str = "id"
    vector_field: str | None = None
    tombstone_field: str | None = None
    format: str | None = None
    field_types: dict[str, str] = field(default_factory=dict)


@dataclass
class IngestSummary:
    """What one ingest did. ``read == written + skipped_unchanged + deleted + failed`` always."""

    index: str = ""
    read: int = 0
    written: int = 0
    skipped_unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    embedded: int = 0
    from_cache: int = 0
    precomputed: int = 0
    duplicates: int = 0
    truncated: int = 0
    retried: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    dead_letter_path: str | None = None
    dry_run: bool = False
    seconds: float = 0.0

    def reconciles(self) -> bool:
        return self.read == self.written + self.skipped_unchanged + self.deleted + self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "reconciles": self.reconciles(),
            "items_per_second": round(self.read / self.seconds, 1) if self.seconds else None,
        }


@dataclass
class _Pending:
    """A batch ready for the writer: actions and, per action, where it came from."""

    actions: list[dict[str, Any]]
    origins: list[ItemRow]


class _Failures:
    """Dead letters shared by the reading and the writing thread."""

    def __init__(self, dead: DeadLetters, summary: IngestSummary, strict: bool):
        self._dead, self._summary, self._strict = dead, summary, strict
        self._lock = threading.Lock()

    def bad_record(self, bad: BadRecord) -> None:
        with self._lock:
            self._dead.add(bad)
            self._summary.failed += 1
        if self._strict:
            where = f"{bad.source}:{bad.line}" + (f" field {bad.field!r}" if bad.field else "")
            raise VecrankError(
                f"{where}: {bad.reason}"
                + (f" ({bad.detail})" if bad.detail else "")
                + " — stopping because of --strict"
            )

    def write_failed(self, row: ItemRow, reason: str, detail: str) -> None:
        with self._lock:
            self._dead.add_failure(
                source=row.source,
                line=row.line,
                reason=reason,
                field=None,
                detail=detail,
                record={"id": row.id, **row.fields},
            )
            self._summary.failed += 1


def text_hash(model: str, text: str) -> str:
    """The embedding cache key: the text alone decides the vector, whatever else changed."""
    return hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()


def ingest_items(
    client: Elasticsearch,
    settings: Settings,
    path: str | Path,
    source: ItemSource,
    *,
    embedder: TextEmbedder,
    cache: EmbeddingCache | None = None,
    index_options: indices.VectorIndexOptions | None = None,
    dead_letter_path: str | Path | None = None,
    strict: bool = False,
    dry_run: bool = False,
    batch_size: int = 256,
    bulk_chunk: int = 500,
    max_retries: int = 5,
    progress: bool | None = None,
) -> IngestSummary:
    """Ingest one catalog file (or ``"-"`` for stdin) into the live items index.

    Args:
        client: Elasticsearch client.
        settings: names the index (``<prefix>-items``).
        path: JSONL, CSV or Parquet file, or ``"-"``.
        source: id field, text template, optional vector/tombstone fields and declared field types.
        embedder: makes the vectors (its model must match the index's ``_meta``).
        cache: embedding cache; vectors found there are not computed again.
        index_options: for the first version, when the index does not exist yet.
        dead_letter_path: JSONL file for rows that fail; ``None`` only counts them.
        strict: stop at the first bad row.
        dry_run: validate and compare with the index, write nothing and embed nothing.
        batch_size: rows per batch (embedding and the unchanged check work per batch).
        bulk_chunk: documents per bulk request.
        max_retries: retries of a document on 429/502/503/504 and connection errors, with
            capped exponential backoff.
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        The :class:`IngestSummary`; ``failed`` rows are in the dead-letter file.

    Raises:
        vecrank.ingest.indices.IndexError_: the index holds vectors of another model or template.
        VecrankError: with ``strict``, the first bad row (file:line, field, reason).
    """
    started = time.monotonic()
    template = TextTemplate(source.template)
    spec = indices.IndexSpec(
        model=embedder.model_name,
        dims=embedder.dimensions,
        template=source.template,
        id_field=source.id_field,
        similarity=embedder.similarity,
        index_options=index_options or indices.VectorIndexOptions(),
        field_types=dict(source.field_types),
    )
    live = indices.live_index(client, settings)
    new_index = live is None  # then nothing can be unchanged: the per-batch lookup is skipped
    if dry_run:
        if live is not None and not indices.spec_of(client, live).vectors_compatible(spec):
            indices.ensure_items_index(client, settings, spec)  # raises the explanation
    else:
        live = indices.ensure_items_index(client, settings, spec)
    summary = IngestSummary(
        index=live or indices.alias_name(settings),
        dry_run=dry_run,
        dead_letter_path=str(dead_letter_path) if dead_letter_path else None,
    )
    dedup = Deduplicator()
    packed = not dry_run and packs_vectors(client)
    records = read_records(path, format=source.format)
    bar = _progress_bar(progress, path)
    writer = _Writer(client, summary, max_retries=max_retries, bulk_chunk=bulk_chunk) if not dry_run else None

    with DeadLetters(dead_letter_path) as dead:
        failures = _Failures(dead, summary, strict)
        if writer is not None:
            writer.start(failures)
        try:
            for batch in _batches(records, batch_size):
                rows = []
                for item in batch:
                    summary.read += 1
                    checked = (
                        item
                        if isinstance(item, BadRecord)
                        else validate_item(
                            item,
                            id_field=source.id_field,
                            template=template,
                            vector_field=source.vector_field,
                            dims=embedder.dimensions,
                            tombstone_field=source.tombstone_field,
                            field_types=source.field_types,
                        )
                    )
                    if isinstance(checked, BadRecord):
                        failures.bad_record(checked)
                    else:
                        dedup.add(checked.id, checked.line)
                        rows.append(checked)
                pending = _prepare(
                    client, None if new_index else live, rows, embedder, cache, summary, dry_run, packed, target=live
                )
                if writer is not None and pending.actions:
                    writer.put(pending)
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if writer is not None:
                writer.finish()
            if bar is not None:
                bar.close()
        summary.failures = dict(dead.counts)
    summary.duplicates = dedup.duplicates
    if dedup.duplicates:
        sample = ", ".join(f"{i} (lines {a} and {b})" for i, a, b in dedup.samples[:3])
        log.warning("%d duplicate id(s) in the input; the last row of each wins: %s", dedup.duplicates, sample)
    if summary.truncated:
        log.warning(
            "%d text(s) longer than the model's window (%d tokens) were truncated when embedded",
            summary.truncated,
            embedder.max_seq_length,
        )
    if not dry_run:
        client.indices.refresh(index=live)
    summary.seconds = round(time.monotonic() - started, 3)
    if not summary.reconciles():  # a bug, not bad input: say so loudly
        log.error("ingest counts do not reconcile: %s", summary.to_dict())
    return summary


def packs_vectors(client: Elasticsearch) -> bool:
    """Whether every node takes base64 float32 vectors (Elasticsearch 9.3+).

    Sent that way a 384-dimension vector is a quarter of its JSON size and costs almost nothing
    to serialize; on two cores that time is taken from the model.
    """
    nodes = client.nodes.info(filter_path="nodes.*.version").get("nodes", {})
    versions = [tuple(int(p) for p in n["version"].split("-")[0].split(".")[:2]) for n in nodes.values()]
    return bool(versions) and min(versions) >= (9, 3)


def vector_value(vector: np.ndarray, packed: bool) -> str | list[float]:
    if packed:
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch.helpers import pack_dense_vector

        return pack_dense_vector(np.asarray(vector, dtype=np.float32))
    return np.asarray(vector, dtype=np.float32).tolist()


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress_bar(progress: bool | None, path: str | Path) -> Any:  # a tqdm bar (untyped) or None
    if progress is None:
        progress = sys.stderr.isatty() and log.isEnabledFor(logging.INFO)
    if not progress:
        return None

    return tqdm(desc=f"ingest {Path(str(path)).name}", unit=" items", unit_scale=True, file=sys.stderr)


def _prepare(
    client: Elasticsearch,
    lookup: str | None,
    rows: list[ItemRow],
    embedder: TextEmbedder,
    cache: EmbeddingCache | None,
    summary: IngestSummary,
    dry_run: bool,
    packed: bool,
    *,
    target: str | None,
) -> _Pending:
    """Decide per row: delete, skip (unchanged) or index; find or compute the vectors to index.

    ``lookup`` is the index to compare content hashes with (None: a new index, nothing to
    compare); ``target`` the index written to.
    """
    live = target
    existing = _existing(client, lookup, {r.id for r in rows})
    deletes = [r for r in rows if r.deleted]
    changed = [r for r in rows if not r.deleted and existing.get(r.id, {}).get("content_hash") != r.content_hash]
    summary.skipped_unchanged += len(rows) - len(deletes) - len(changed)
    if dry_run:
        summary.deleted += len(deletes)
        summary.written += len(changed)
        return _Pending([], [])

    vectors = _vectors(changed, embedder, cache, summary)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    actions: list[dict[str, Any]] = []
    origins: list[ItemRow] = []
    for row in deletes:
        actions.append({"_op_type": "delete", "_index": live, "_id": row.id})
        origins.append(row)
    for row, vector in zip(changed, vectors):
        doc = {indices.stored_field_name(k): v for k, v in row.fields.items()}
        doc.update(
            {
                "item_id": row.id,
                "text": row.text,
                "content_hash": row.content_hash,
                "embedding": vector_value(vector, packed),
                "indexed_at": now,
            }
        )
        if existing.get(row.id, {}).get("signals"):
            doc["signals"] = existing[row.id]["signals"]  # written by `signals refresh`; keep them
        actions.append({"_op_type": "index", "_index": live, "_id": row.id, "_source": doc})
        origins.append(row)
    return _Pending(actions, origins)


def _existing(client: Elasticsearch, index: str | None, ids: set[str]) -> dict[str, dict[str, Any]]:
    if index is None or not ids:
        return {}
    resp = client.mget(index=index, ids=sorted(ids), source_includes=["content_hash", "signals"])
    return {d["_id"]: d.get("_source", {}) for d in resp["docs"] if d.get("found")}


def resolve_vectors(
    texts: list[str], given: list[np.ndarray | Any | None], embedder: TextEmbedder, cache: EmbeddingCache | None
) -> tuple[list[Any], list[str], int]:
    """Vectors for ``texts`` in order: the ``given`` one where there is one, else the embedding
    cache's, else the model's (then cached).

    Returns:
        The vectors, where each came from (``"given"``, ``"cache"`` or ``"model"``), and how many
        of the embedded texts were longer than the model's window.
    """
    model = embedder.model_name
    keys = [text_hash(model, t) for t in texts]
    cached = (
        cache.get_many(model, [k for k, g in zip(keys, given) if g is None], dims=embedder.dimensions)
        if cache is not None
        else {}
    )
    todo = sorted({k: t for k, t, g in zip(keys, texts, given) if g is None and k not in cached}.items())
    fresh: dict[str, np.ndarray] = {}
    truncated = 0
    if todo:
        batch = [t for _, t in todo]
        truncated = embedder.count_truncated(batch)
        encoded = embedder.encode(batch, normalize_embeddings=True, show_progress_bar=False)
        fresh = {k: encoded[i] for i, (k, _) in enumerate(todo)}
        if cache is not None:
            cache.put_many(model, fresh)
    origins = ["given" if g is not None else "cache" if k in cached else "model" for k, g in zip(keys, given)]
    vectors = [g if o == "given" else cached[k] if o == "cache" else fresh[k] for k, g, o in zip(keys, given, origins)]
    return vectors, origins, truncated


def _vectors(
    rows: list[ItemRow], embedder: TextEmbedder, cache: EmbeddingCache | None, summary: IngestSummary
) -> list[np.ndarray]:
    """Vectors for ``rows``: precomputed in the input, else cached, else embedded; counted."""
    vectors, origins, truncated = resolve_vectors([r.text for r in rows], [r.vector for r in rows], embedder, cache)
    summary.truncated += truncated
    summary.precomputed += origins.count("given")
    summary.from_cache += origins.count("cache")
    summary.embedded += origins.count("model")
    return vectors


class _Writer:
    """Sends batches with ``streaming_bulk`` on its own thread while the next batch is embedded."""

    def __init__(
        self,
        client: Elasticsearch,
        summary: IngestSummary,
        *,
        max_retries: int,
        bulk_chunk: int,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        self.client, self.summary = client, summary
        self.max_retries, self.bulk_chunk = max_retries, bulk_chunk
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, failures: _Failures) -> None:
        self._failures = failures
        self._thread = threading.Thread(target=self._run, name="vecrank-bulk-writer", daemon=True)
        self._thread.start()

    def put(self, pending: _Pending) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(pending)

    def finish(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            while (pending := self._queue.get()) is not None:
                self._send(pending)
        except BaseException as exc:  # handed to the reading thread at its next put/finish
            self._error = exc
            while self._queue.get() is not None:  # unblock the producer
                pass

    def _send(self, pending: _Pending) -> None:
        def count_retry(n: int) -> None:
            self.summary.retried += n

        results = bulk_with_retries(
            self.client,
            list(zip(pending.actions, pending.origins)),
            chunk_size=self.bulk_chunk,
            max_retries=self.max_retries,
            initial_backoff=self.initial_backoff,
            max_backoff=self.max_backoff,
            on_retry=count_retry,
        )
        for outcome in results:
            if outcome.ok or (outcome.op == "delete" and outcome.status == 404):  # already gone: done
                if outcome.op == "delete":
                    self.summary.deleted += 1
                else:
                    self.summary.written += 1
            else:
                self._failures.write_failed(outcome.origin, outcome.reason, outcome.detail)


def delete_items(client: Elasticsearch, settings: Settings, ids: Iterable[str]) -> dict[str, int]:
    """Delete items by id from the live index. Ids that are not there count as ``missing``."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import helpers

    live = indices.live_index(client, settings)
    if live is None:
        raise VecrankError(f"no items index behind {indices.alias_name(settings)}")
    counts: Counter[str] = Counter()
    actions = ({"_op_type": "delete", "_index": live, "_id": str(i)} for i in ids)
    for ok, info in helpers.streaming_bulk(client, actions, raise_on_error=False, max_retries=5):
        status = info["delete"].get("status")
        counts["deleted" if ok else "missing" if status == 404 else "failed"] += 1
    client.indices.refresh(index=live)
    return dict(counts)


def iter_ids(path: str | Path) -> Iterator[str]:
    """Ids from a file with one id per line (``-`` for stdin); blank lines and ``#`` comments skipped."""
    stream = sys.stdin if str(path) == "-" else open(path, encoding="utf-8")
    try:
        for line in stream:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line
    finally:
        if stream is not sys.stdin:
            stream.close()


__all__ = ["IngestSummary", "ItemSource", "Record", "delete_items", "ingest_items", "iter_ids", "text_hash"]
