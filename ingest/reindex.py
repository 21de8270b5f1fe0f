"""Build the next items version from the live one, verify it, then move the alias atomically.

The new version may change the model, the text template, the vector index options or declared
field types. Documents are read from the live index (their catalog fields are all stored), the
text is rendered again, and a vector is computed only where the model or the text changed and the
embedding cache does not already have it. Searches keep using the old version until the alias
moves, in one atomic request, after the counts and a sample of vectors check out. The old version
stays for ``rollback``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.ingest import indices
from vecrank.ingest.fieldtypes import FieldTypeError, apply_field_types, template_view
from vecrank.ingest.items import packs_vectors, resolve_vectors, vector_value
from vecrank.ingest.records import content_hash
from vecrank.ingest.template import TextTemplate

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.ingest.cache import EmbeddingCache
    from vecrank.ingest.embed import TextEmbedder
    from vecrank.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ReindexSummary:
    source: str = ""
    target: str = ""
    switched: bool = False
    docs: int = 0
    copied_vectors: int = 0
    from_cache: int = 0
    embedded: int = 0
    failed: int = 0
    verified_sample: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def catalog_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The catalog's own fields of a stored item document (undoing the ``src_`` renames)."""
    out = {}
    for key, value in doc.items():
        if key in indices.RESERVED_FIELDS:
            continue
        if key.startswith("src_") and key[4:] in indices.RESERVED_FIELDS:
            key = key[4:]
        out[key] = value
    return out


def _typed(fields: dict[str, Any], field_types: dict[str, str]) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The fields converted to their declared types as ingest converts them, and what the
    template sees of them; unchanged where a value does not convert (the new version's mapping
    then rejects the document, and the failure is counted)."""
    if not field_types:
        return fields, fields
    try:
        typed = apply_field_types(fields, field_types)
    except FieldTypeError as exc:
        log.debug("not converting a stored document: %s", exc)
        return fields, fields
    return typed, template_view(typed, field_types)


def reindex(
    client: Elasticsearch,
    settings: Settings,
    *,
    embedder: TextEmbedder,
    template: str | None = None,
    index_options: indices.VectorIndexOptions | None = None,
    field_types: dict[str, str] | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    verify_sample: int = 20,
    switch: bool = True,
    progress: bool | None = None,
) -> ReindexSummary:
    """Build ``items-v<N+1>`` from the live version and (by default) switch the alias to it.

    Args:
        embedder: the model for the new version (the live one's model to keep it).
        template: a new text template; default the live one's.
        index_options: new ``dense_vector`` index options; default the live one's.
        field_types: declared catalog field types; default the live one's.
        cache: embedding cache; vectors found there are not computed again.
        verify_sample: documents whose stored vector is checked against a fresh computation.
        switch: move the alias when verification passes.

    Raises:
        VecrankError: nothing is live, or verification failed (the alias did not move; the new
            version is left for inspection and can be deleted with ``vecrank index delete``).
    """
    started = time.monotonic()
    live = indices.require_live(client, settings)
    old = indices.spec_of(client, live)
    new = indices.IndexSpec(
        model=embedder.model_name,
        dims=embedder.dimensions,
        template=template or old.template,
        id_field=old.id_field,
        similarity=embedder.similarity,
        index_options=index_options or old.index_options,
        field_types=old.field_types if field_types is None else field_types,
        cf_dims=old.cf_dims,
    )
    # The collaborative vectors and neighbours do not depend on the text: they are copied, and
    # so is the model's block in _meta.
    carried = {k: v for k, v in indices.meta_of(client, live).items() if k == "cf"}
    target = indices.create_version(client, settings, new, point_alias_if_new=False, meta=carried)
    summary = ReindexSummary(source=live, target=target)
    render = TextTemplate(new.template).render
    same_model = (old.model, old.dims) == (new.model, new.dims)
    packed = packs_vectors(client)

    def actions() -> Iterator[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        for hit in indices.version_documents(client, live, size=batch_size):
            batch.append(hit)
            if len(batch) >= batch_size:
                yield from _convert(batch)
                batch = []
        if batch:
            yield from _convert(batch)

    def _convert(hits: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rows = []
        for hit in hits:
            src = hit["_source"]
            fields, shown = _typed(catalog_fields(src), new.field_types)
            text = render(shown)
            rows.append((hit["_id"], src, fields, text))
        # The stored vector is reused where neither the model nor the text changed.
        given = [src.get("embedding") if same_model and text == src.get("text") else None for _, src, _, text in rows]
        vectors, origins, _ = resolve_vectors([r[3] for r in rows], given, embedder, cache)
        summary.copied_vectors += origins.count("given")
        summary.from_cache += origins.count("cache")
        summary.embedded += origins.count("model")
        for (doc_id, src, fields, text), vector in zip(rows, vectors):
            # Same text: keep the hash (it may cover a precomputed vector); new text: hash as ingest would.
            digest = src.get("content_hash") if text == src.get("text") else content_hash(text, fields)
            doc = {k: v for k, v in src.items() if k in indices.RESERVED_FIELDS}
            doc.update({indices.stored_field_name(k): v for k, v in fields.items()})
            doc.update({"text": text, "embedding": vector_value(vector, packed), "content_hash": digest})
            yield {"_op_type": "index", "_index": target, "_id": doc_id, "_source": doc}

    written = indices.write_version(client, target, actions())
    summary.docs, summary.failed, summary.failures = written.ok, written.failed, written.failures
    problems = indices.copy_problems(client, live, target, written) + verify(
        client, target, embedder=embedder, sample=verify_sample, summary=summary
    )
    summary.seconds = round(time.monotonic() - started, 3)
    summary.switched = indices.finish_version(client, settings, live, target, problems, switch=switch)
    return summary


def verify(
    client: Elasticsearch, target: str, *, embedder: TextEmbedder, sample: int, summary: ReindexSummary
) -> list[str]:
    """A random sample of stored vectors equals a fresh computation of their text (the counts are
    :func:`vecrank.ingest.indices.copy_problems`')."""
    problems = []
    n_target = client.count(index=target)["count"]
    if sample and n_target:
        seed = random.Random(n_target).randrange(1 << 30)
        hits = client.search(
            index=target,
            size=sample,
            source={"exclude_vectors": False},
            query={"function_score": {"random_score": {"seed": seed, "field": "_seq_no"}}},
        )["hits"]["hits"]
        stored = np.array([h["_source"]["embedding"] for h in hits], dtype=np.float32)
        fresh = embedder.encode(
            [h["_source"]["text"] for h in hits], normalize_embeddings=True, show_progress_bar=False
        )
        cosines = np.sum(stored * fresh, axis=1) / (np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh, axis=1))
        summary.verified_sample = len(hits)
        bad = [h["_id"] for h, c in zip(hits, cosines) if c < 0.999]
        if bad:
            problems.append(f"{len(bad)} of {len(hits)} sampled vectors differ from their text's embedding ({bad[:5]})")
    return problems
