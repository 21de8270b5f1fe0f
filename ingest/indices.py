"""Versioned item indices behind an alias: mapping, ``_meta``, create, list, switch, rollback, delete.

The alias ``<prefix>-items`` points at exactly one ``<prefix>-items-v<N>``. A new version is
built beside the live one and the alias moves in one atomic ``_aliases`` call, so searches never
see a half-built index. ``_meta.vecrank`` records which model made the vectors; writing vectors of
another model into an index is refused.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vecrank import __version__
from vecrank.errors import VecrankError
from vecrank.ingest.eventspec import DATE_FORMAT
from vecrank.ingest.signals import signals_mapping

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)

#: an item's collaborative neighbour lists (ingest.cf): in the fit's own lists index; fits before
#: it had one wrote them on the items, whose ``_source`` Elasticsearch reads for a whole rescore window
LIST_FIELDS = ("cf_neighbours", "cf_next", "cf_ease")
#: what a collaborative fit writes on an item, or wrote there
CF_FIELDS = ("cf_vector", *LIST_FIELDS)
# Our own fields in an item document; catalog fields with these names are stored as "src_<name>".
RESERVED_FIELDS = frozenset({"item_id", "text", "embedding", "content_hash", "signals", "indexed_at", *CF_FIELDS})
FIELD_TYPES = frozenset({"keyword", "text", "long", "integer", "float", "double", "boolean", "date"})
_HNSW = {"hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw"}
_FLAT = {"flat", "int8_flat", "int4_flat", "bbq_flat"}
_VERSION = re.compile(r"-v(\d+)$")


class IndexError_(VecrankError):  # noqa: N801 - keeps clear of the builtin IndexError
    """An index operation was refused; the message says why and what to run instead."""


@dataclass(frozen=True)
class VectorIndexOptions:
    """``index_options`` of the ``embedding`` field. Default: int8-quantized HNSW.

    Example:
        >>> VectorIndexOptions().to_dict()
        {'type': 'int8_hnsw', 'm': 16, 'ef_construction': 100}
    """

    type: str = "int8_hnsw"
    m: int | None = 16
    ef_construction: int | None = 100
    confidence_interval: float | None = None
    oversample: float | None = None  # rescore_vector.oversample for quantized types

    def __post_init__(self) -> None:
        if self.type not in _HNSW | _FLAT:
            raise ValueError(f"index type {self.type!r} is not one of {', '.join(sorted(_HNSW | _FLAT))}")
        if self.confidence_interval is not None and not self.type.startswith(("int8", "int4")):
            raise ValueError(f"confidence_interval applies to int8/int4 types, not {self.type}")
        if self.oversample is not None and self.type in {"hnsw", "flat"}:
            raise ValueError(f"oversample applies to quantized types, not {self.type}")

    def to_dict(self) -> dict[str, Any]:
        """Exactly the JSON Elasticsearch takes under ``index_options``."""
        out: dict[str, Any] = {"type": self.type}
        if self.type in _HNSW:
            if self.m is not None:
                out["m"] = self.m
            if self.ef_construction is not None:
                out["ef_construction"] = self.ef_construction
        if self.confidence_interval is not None:
            out["confidence_interval"] = self.confidence_interval
        if self.oversample is not None:
            out["rescore_vector"] = {"oversample": self.oversample}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VectorIndexOptions:
        data = dict(data)
        oversample = (data.pop("rescore_vector", None) or {}).get("oversample")
        known = {k: data[k] for k in ("type", "m", "ef_construction", "confidence_interval") if k in data}
        if data["type"] not in _HNSW:
            known.setdefault("m", None)
            known.setdefault("ef_construction", None)
        return cls(**known, oversample=oversample)


@dataclass(frozen=True)
class IndexSpec:
    """What an items index is built from; stored in ``_meta.vecrank`` and compared on every write."""

    model: str
    dims: int
    template: str
    id_field: str = "id"
    similarity: str = "cosine"
    index_options: VectorIndexOptions = field(default_factory=VectorIndexOptions)
    field_types: dict[str, str] = field(default_factory=dict)
    cf_dims: int | None = None  # the collaborative vectors' dimensions (``vecrank cf fit``), None before any
    vecrank_version: str = __version__

    def __post_init__(self) -> None:
        if self.similarity not in {"cosine", "dot_product", "l2_norm", "max_inner_product"}:
            raise ValueError(f"similarity {self.similarity!r} is not one Elasticsearch supports")
        bad = {k: v for k, v in self.field_types.items() if v not in FIELD_TYPES}
        if bad:
            raise ValueError(f"field types {bad} not in {', '.join(sorted(FIELD_TYPES))}")

    def to_meta(self) -> dict[str, Any]:
        meta = asdict(self)
        meta["index_options"] = self.index_options.to_dict()
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> IndexSpec:
        # Keys that describe the index's life, not what it is built from (created_at,
        # signals_as_of), are not part of the spec.
        meta = {k: v for k, v in meta.items() if k in {f.name for f in fields(cls)}}
        meta["index_options"] = VectorIndexOptions.from_dict(meta["index_options"])
        return cls(**meta)

    def vectors_compatible(self, other: IndexSpec) -> bool:
        """Vectors of one can go into the other: same model, dimensions and text template."""
        return (self.model, self.dims, self.template) == (other.model, other.dims, other.template)


def items_mapping(spec: IndexSpec) -> dict[str, Any]:
    """The full mapping of an items index (properties, dynamic templates and ``_meta``)."""

    properties: dict[str, Any] = {
        "item_id": {"type": "keyword"},
        "text": {"type": "text"},
        "content_hash": {"type": "keyword"},
        "available": {"type": "boolean"},  # a catalog field; absent means available
        "indexed_at": {"type": "date"},
        "embedding": {
            "type": "dense_vector",
            "dims": spec.dims,
            "index": True,
            "similarity": spec.similarity,
            "index_options": spec.index_options.to_dict(),
        },
        "signals": signals_mapping(),
    }
    if spec.cf_dims:
        # Collaborative item factors (ingest.cf): scored by dot product, so max_inner_product;
        # small enough (tens of dims) to keep as floats.
        properties["cf_vector"] = {
            "type": "dense_vector",
            "dims": spec.cf_dims,
            "index": True,
            "similarity": "max_inner_product",
            "index_options": {"type": "hnsw"},
        }
        # The neighbour lists that fits before the lists index wrote on the items (a reindex of
        # such a version copies them): read whole, never searched.
        for name in LIST_FIELDS:
            properties[name] = {"type": "object", "enabled": False}
    for name, kind in spec.field_types.items():
        # Ingest stores declared dates as epoch milliseconds (fieldtypes); read them as such.
        properties[stored_field_name(name)] = {"type": kind, **({"format": DATE_FORMAT} if kind == "date" else {})}
    return {
        "dynamic": True,
        # Catalog strings become exact-match facets (genres, brand...); long prose stays in _source.
        "dynamic_templates": [
            {
                "strings_as_keywords": {
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 512},
                }
            }
        ],
        "properties": properties,
        "_meta": {"vecrank": {**spec.to_meta(), "created_at": _now()}},
    }


def stored_field_name(name: str) -> str:
    return f"src_{name}" if name in RESERVED_FIELDS else name


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- names and versions -----------------------------------------------------------------------


def alias_name(settings: Settings) -> str:
    return settings.index("items")


def version_name(settings: Settings, version: int) -> str:
    return f"{alias_name(settings)}-v{version}"


def versions(client: Elasticsearch, settings: Settings) -> dict[int, str]:
    """Existing versions: number -> index name."""
    found = client.indices.get(
        index=f"{alias_name(settings)}-v*",
        ignore_unavailable=True,
        allow_no_indices=True,
        filter_path="*.settings.index.provided_name",
    )
    out = {}
    for name in found:
        m = _VERSION.search(name)
        if m and name == version_name(settings, int(m.group(1))):
            out[int(m.group(1))] = name
    return dict(sorted(out.items()))


def live_index(client: Elasticsearch, settings: Settings) -> str | None:
    """The index the alias points at, or None when there is no alias yet."""
    alias = alias_name(settings)
    if not client.indices.exists_alias(name=alias):
        return None
    targets = list(client.indices.get_alias(name=alias))
    if len(targets) != 1:
        raise IndexError_(
            f"alias {alias} points at {len(targets)} indices ({', '.join(targets)}); "
            f"fix it with `vecrank index switch`"
        )
    return targets[0]


def require_live(client: Elasticsearch, settings: Settings) -> str:
    """:func:`live_index`, raising where there is none.

    Raises:
        VecrankError: no alias yet (no catalog ingested).
    """
    live = live_index(client, settings)
    if live is None:
        raise VecrankError(f"no items index behind {alias_name(settings)}; ingest a catalog first")
    return live


def spec_of(client: Elasticsearch, index: str) -> IndexSpec:
    return IndexSpec.from_meta(meta_of(client, index))


def meta_of(client: Elasticsearch, index: str) -> dict[str, Any]:
    """The index's ``_meta.vecrank`` (its spec, the signals instant, the collaborative model's block)."""
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]
    meta = (mapping.get("_meta") or {}).get("vecrank")
    if not meta:
        raise IndexError_(f"index {index} has no _meta.vecrank: it was not made by vecrank")
    return meta


def create_index_if_missing(client: Elasticsearch, name: str, mappings: dict[str, Any]) -> str:
    """Creates index ``name`` with ``mappings`` unless it exists; a concurrent creation is fine.

    Args:
        client: The Elasticsearch client.
        name: The index.
        mappings: Its ``mappings`` body.

    Returns:
        ``name``.
    """
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import BadRequestError

    if client.indices.exists(index=name):
        return name
    try:
        client.indices.create(index=name, mappings=mappings)
        log.info("Created index %s", name)
    except BadRequestError as exc:
        # Another writer created it between our check and our create: that is fine.
        if exc.error != "resource_already_exists_exception":
            raise
    return name


def create_version(
    client: Elasticsearch,
    settings: Settings,
    spec: IndexSpec,
    *,
    shards: int = 1,
    replicas: int = 0,
    point_alias_if_new: bool = True,
    meta: dict[str, Any] | None = None,
) -> str:
    """Create the next ``items-v<N>``. The alias moves to it only if there was no alias yet.

    ``meta`` adds keys to ``_meta.vecrank`` (the collaborative model's block, ``cf``)."""
    existing = versions(client, settings)
    name = version_name(settings, max(existing, default=0) + 1)
    mappings = items_mapping(spec)
    if meta:
        mappings["_meta"]["vecrank"].update(meta)
    body: dict[str, Any] = {
        "settings": {"number_of_shards": shards, "number_of_replicas": replicas},
        "mappings": mappings,
    }
    if point_alias_if_new and live_index(client, settings) is None:
        body["aliases"] = {alias_name(settings): {"is_write_index": True}}
    client.indices.create(index=name, **body)
    log.info("Created %s (model %s, %d dims, %s)", name, spec.model, spec.dims, spec.index_options.type)
    return name


def ensure_items_index(client: Elasticsearch, settings: Settings, spec: IndexSpec) -> str:
    """The live items index for writing vectors of ``spec``; created as v1 if there is none.

    Raises:
        IndexError_: the live index holds vectors of another model or template.
    """
    live = live_index(client, settings)
    if live is None:
        return create_version(client, settings, spec)
    current = spec_of(client, live)
    if not current.vectors_compatible(spec):
        raise IndexError_(
            f"{live} holds vectors of model {current.model} ({current.dims} dims, template "
            f"{current.template!r}); this run uses {spec.model} ({spec.dims} dims, template {spec.template!r}). "
            "Build a new version with `vecrank index reindex --model ... --template ...` instead"
        )
    return live


def switch(client: Elasticsearch, settings: Settings, version: int) -> str:
    """Point the alias at ``items-v<version>`` in one atomic request."""
    target = version_name(settings, version)
    if version not in versions(client, settings):
        raise IndexError_(f"no index {target}")
    spec_of(client, target)  # refuse indices vecrank did not make
    alias = alias_name(settings)
    actions: list[dict[str, Any]] = [{"remove": {"index": f"{alias}-v*", "alias": alias, "must_exist": False}}]
    actions.append({"add": {"index": target, "alias": alias, "is_write_index": True}})
    client.indices.update_aliases(actions=actions)
    log.info("Alias %s -> %s", alias, target)
    return target


def switch_to(client: Elasticsearch, settings: Settings, index: str) -> str:
    """:func:`switch` to the version ``index`` names (``<prefix>-items-v<N>``)."""
    found = _VERSION.search(index)
    if found is None:
        raise IndexError_(f"{index} is not a versioned items index")
    return switch(client, settings, int(found.group(1)))


@dataclass
class Written:
    """What :func:`write_version` wrote: documents written and failed, the first 20 failures."""

    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def version_documents(client: Elasticsearch, index: str, *, size: int = 500) -> Iterable[dict[str, Any]]:
    """Every document of ``index`` with its vectors, for a copy into the next version. ``index``
    is refreshed first: a copy must carry every write acknowledged before it began (a ``signals
    refresh`` a moment earlier, say), and a search sees a write only once the index is refreshed."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import helpers

    client.indices.refresh(index=index)
    return helpers.scan(client, index=index, size=size, preserve_order=False, source={"exclude_vectors": False})


def write_version(client: Elasticsearch, target: str, actions: Any) -> Written:
    """Bulk-write a new version's documents (429s retried), never raising on a failed document:
    failures are counted and the first 20 kept; then ``target`` is refreshed."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import helpers

    out = Written()
    for ok, info in helpers.streaming_bulk(
        client, actions, chunk_size=500, max_retries=5, raise_on_error=False, raise_on_exception=False
    ):
        if ok:
            out.ok += 1
        else:
            out.failed += 1
            if len(out.failures) < 20:
                out.failures.append(str(info)[:300])
    client.indices.refresh(index=target)
    return out


def copy_problems(client: Elasticsearch, source: str, target: str, written: Written) -> list[str]:
    """What a full copy of ``source`` into ``target`` got wrong: a document count that differs,
    documents that failed to write."""
    problems = []
    n_source, n_target = client.count(index=source)["count"], client.count(index=target)["count"]
    if n_source != n_target:
        problems.append(f"{n_target} documents in {target} but {n_source} in {source}")
    if written.failed:
        problems.append(f"{written.failed} documents failed to write, e.g. {written.failures[:1]}")
    return problems


def finish_version(
    client: Elasticsearch, settings: Settings, live: str, target: str, problems: list[str], *, switch: bool
) -> bool:
    """The end of building the version ``target`` from ``live``: verified, merged into one segment
    (:func:`merge_segments`), and with ``switch`` the alias moved to it. Returns whether the alias moved.

    Raises:
        VecrankError: ``problems`` were found (the alias still points at ``live``).
    """
    if problems:
        raise VecrankError(f"{target} failed verification, the alias still points at {live}: {'; '.join(problems)}")
    merge_segments(client, target)
    if switch:
        switch_to(client, settings, target)
    return switch


#: How long the force merge of a new version may take before the client gives up waiting (the
#: merge itself goes on in Elasticsearch).
MERGE_TIMEOUT_S = 3600.0


def merge_segments(client: Elasticsearch, index: str) -> None:
    """Force-merges a freshly built, not yet live version into one segment.

    A kNN search walks one HNSW graph per segment and a rescore sets up its readers per segment:
    on the MovieLens catalog (9,742 items, 8 segments after the bulk copy) one segment took a ranked
    search from 24.5 to 18 ms and a bare kNN from 9 to 5 ms (Elasticsearch's ``took``, p50). Run
    before the alias switch, while nothing writes to the index, as Elasticsearch advises; later
    writes (a ``signals refresh``) add segments again, which its merge policy handles. It took
    15 s here for 27 MB; it grows with the vectors' size (an HNSW graph is rebuilt).
    """
    started = time.monotonic()
    client.options(request_timeout=MERGE_TIMEOUT_S).indices.forcemerge(index=index, max_num_segments=1)
    log.info("merged %s into one segment (%.1fs)", index, time.monotonic() - started)


def rollback(client: Elasticsearch, settings: Settings) -> str:
    """Point the alias at the newest version older than the live one."""
    live = live_index(client, settings)
    if live is None:
        raise IndexError_(f"alias {alias_name(settings)} does not exist; nothing to roll back")
    match = _VERSION.search(live)
    if match is None:
        raise IndexError_(f"live index {live} has no version suffix; nothing to roll back")
    live_version = int(match.group(1))
    older = [v for v in versions(client, settings) if v < live_version]
    if not older:
        raise IndexError_(f"{live} is the oldest version; nothing to roll back to")
    return switch(client, settings, max(older))


def delete_version(client: Elasticsearch, settings: Settings, version: int) -> str:
    """Delete ``items-v<version>``, and the collaborative lists index it names when no other
    version names it; the live version cannot be deleted."""
    name = version_name(settings, version)
    if version not in versions(client, settings):
        raise IndexError_(f"no index {name}")
    if name == live_index(client, settings):
        raise IndexError_(f"{name} is live behind {alias_name(settings)}; switch the alias first")
    lists = (meta_of(client, name).get("cf") or {}).get("lists_index")
    client.indices.delete(index=name)
    named = {
        (meta_of(client, other).get("cf") or {}).get("lists_index") for other in versions(client, settings).values()
    }
    if lists and lists not in named:
        client.indices.delete(index=lists, ignore_unavailable=True)
    return name


def describe_versions(client: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    """One row per version: docs, size, model, template, index type, creation time, live or not."""
    names = versions(client, settings)
    if not names:
        return []
    live = live_index(client, settings)
    stats = client.indices.stats(index=",".join(names.values()), metric="docs,store")["indices"]
    rows = []
    for number, name in names.items():
        meta = client.indices.get_mapping(index=name)[name]["mappings"].get("_meta", {}).get("vecrank", {})
        total = stats.get(name, {}).get("total", {})
        rows.append(
            {
                "version": number,
                "index": name,
                "live": name == live,
                "docs": total.get("docs", {}).get("count", 0),
                "size_mb": round(total.get("store", {}).get("size_in_bytes", 0) / 2**20, 2),
                "model": meta.get("model"),
                "dims": meta.get("dims"),
                "index_type": (meta.get("index_options") or {}).get("type"),
                "template": meta.get("template"),
                "created_at": meta.get("created_at"),
            }
        )
    return rows
