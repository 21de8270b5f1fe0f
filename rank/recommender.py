"""Candidates for a user (and an optional search-box query) from Elasticsearch kNN.

``Recommender.candidates`` picks a path and says which it took:

* ``profile`` — the user's stored profile vector (``multi_interest`` with several interests);
* ``profile+query`` — the profile blended with the query text's embedding;
* ``query`` — cold start with search-box text: its embedding alone;
* ``context`` — cold start on an item page: the mean of the context items' vectors;
* ``popular`` — cold start with nothing else: the most popular items by ``signals``.

Every candidate carries its fields, its kNN score and its cosine to the query vector, ready for
the ranker's features. Items the user already consumed are excluded (configurable), unavailable
items always are.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest import indices
from vecrank.ingest.embed import Embedder
from vecrank.rank import queries
from vecrank.rank.offline import top_scores
from vecrank.rank.profiles import Profile, ProfileConfig, build_profile
from vecrank.rank.state import SCORE_MAPS, CFMeta, StateConfig, UserState
from vecrank.rank.store import consumed_ids, fetch_vectors, get_user, live_cf_meta, stored_profile, user_state

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.ingest.embed import TextEmbedder
    from vecrank.ingest.indices import IndexSpec
    from vecrank.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrieveConfig:
    """Retrieval settings; each can also be given per call."""

    k: int = 50
    num_candidates: int | None = None  # default: max(100, 4 × k), capped at 10,000
    exclude_seen: bool = True
    query_weight: float = 0.5  # share of the query text in a profile+query blend
    text_boost: float = 0.0  # > 0 adds a BM25 match on the text, summed with the kNN score
    similarity_floor: float | None = None
    max_interests: int = 1
    mmr_lambda: float | None = None  # 1 = relevance only, 0 = diversity only
    group_field: str | None = None
    max_per_group: int | None = None
    source_fields: tuple[str, ...] | None = None  # None: the whole _source
    with_vectors: bool = False  # return each candidate's stored vector
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.query_weight <= 1.0:
            raise queries.RequestError(f"query_weight must be between 0 and 1, not {self.query_weight}")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise queries.RequestError(f"mmr_lambda must be between 0 and 1, not {self.mmr_lambda}")
        if (self.group_field is None) != (self.max_per_group is None):
            raise queries.RequestError("group_field and max_per_group go together")
        if self.max_per_group is not None and self.max_per_group < 1:
            raise queries.RequestError(f"max_per_group must be at least 1, not {self.max_per_group}")

    def candidates_for(self, k: int) -> int:
        return (
            self.num_candidates if self.num_candidates is not None else min(queries.MAX_NUM_CANDIDATES, max(100, 4 * k))
        )


@dataclass
class Candidate:
    item_id: str
    score: float  # the Elasticsearch score (kNN similarity, plus BM25 when text_boost > 0)
    cosine: float | None  # cosine between the item and the query vector
    fields: dict[str, Any]
    interest: int | None = None  # which interest found it (multi-interest)
    vector: np.ndarray | None = field(default=None, repr=False)
    cf_vector: np.ndarray | None = field(default=None, repr=False)  # the item's collaborative factors
    origin: str = "knn"  # "knn", "popular", "extra"; a pool hit: the sources that found it


@dataclass
class CandidateSet:
    request_id: str
    path: str
    cold_start: bool
    candidates: list[Candidate]
    user: str | None = None
    query: str | None = None
    interests: list[dict[str, Any]] = field(default_factory=list)
    excluded: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    history: list[Mapping[str, Any]] = field(default_factory=list, repr=False)  # the events the profile came from
    query_vector: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "path": self.path,
            "cold_start": self.cold_start,
            "user": self.user,
            "query": self.query,
            "interests": self.interests,
            "excluded": self.excluded,
            "timings_ms": self.timings_ms,
            "candidates": [
                {
                    "item_id": c.item_id,
                    "score": None if c.score != c.score else c.score,
                    "cosine": c.cosine,
                    "interest": c.interest,
                    "origin": c.origin,
                    "fields": c.fields,
                }
                for c in self.candidates
            ],
        }


class Recommender:
    """Retrieval against the live items index.

    Args:
        client: Elasticsearch client.
        settings: names the indices.
        config: retrieval defaults.
        embedder: embeds search-box text; loaded on first use with the live index's model.
    """

    def __init__(
        self,
        client: Elasticsearch,
        settings: Settings,
        *,
        config: RetrieveConfig | None = None,
        embedder: TextEmbedder | None = None,
    ):
        self.client, self.settings = client, settings
        self.config = config or RetrieveConfig()
        self._embedder = embedder
        self._spec = None
        self._field_types: dict[str, str] | None = None
        self._cf_meta: Any = _UNSET

    # --- what the live index is ------------------------------------------------------------

    def _live(self) -> IndexSpec:
        if self._spec is None:
            live = indices.require_live(self.client, self.settings)
            self._spec = indices.spec_of(self.client, live)
            props = self.client.indices.get_mapping(index=live)[live]["mappings"]["properties"]
            self._field_types = queries.flatten_mapping(props)
        return self._spec

    @property
    def field_types(self) -> dict[str, str]:
        self._live()
        return dict(self._field_types or {})

    @property
    def embedder(self) -> TextEmbedder:
        if self._embedder is None:
            self._embedder = Embedder(self._live().model)
        return self._embedder

    # --- the public call ---------------------------------------------------------------------

    def candidates(
        self,
        *,
        user: str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        query: str | None = None,
        context_items: Sequence[str] = (),
        filters: Mapping[str, Any] | None = None,
        extra_filters: Sequence[dict[str, Any]] = (),
        k: int | None = None,
        num_candidates: int | None = None,
        **overrides: Any,
    ) -> CandidateSet:
        """Retrieve candidates in retrieval order. See the module docstring for the paths.

        Args:
            user: user id; its stored profile and history are read from the users index. An
                unknown user is a cold start, not an error.
            history: events to build the profile from instead (item_id, type, value, timestamp).
            query: search-box text.
            context_items: ids of items on screen (an item page), for cold start.
            filters: ``{field: value | [values] | {"gte": ...}}`` on keyword/numeric/date fields.
            extra_filters: the caller's own structured Elasticsearch filter clauses.
            k: how many candidates.
            num_candidates: HNSW candidates per shard (k <= num_candidates <= 10,000).
            overrides: any :class:`RetrieveConfig` field for this call.

        Raises:
            vecrank.rank.queries.RequestError: bad arguments; raised before any search is sent.
        """
        started = time.perf_counter()
        es_ms = 0.0
        cfg = replace(self.config, **overrides) if overrides else self.config
        k = k if k is not None else cfg.k
        num = num_candidates if num_candidates is not None else cfg.candidates_for(k if k else 1)
        queries.check_knn_size(k, num)
        spec = self._live()
        clauses = queries.filter_clauses(filters, self._field_types or {}) + list(extra_filters)
        if cfg.group_field and cfg.group_field not in (self._field_types or {}):
            raise queries.RequestError(f"unknown group field {cfg.group_field!r}")
        if query is not None and not query.strip():
            query = None

        t = time.perf_counter()
        profile, seen, used_history = self._profile(user, history, cfg, spec.model)
        es_ms += (time.perf_counter() - t) * 1000
        exclude = seen if cfg.exclude_seen else []
        flt = queries.candidate_filter(clauses, exclude_ids=exclude)
        want_vectors = cfg.mmr_lambda is not None or cfg.with_vectors
        source = queries.shown_source(cfg.source_fields)
        fetch = k * 3 if (cfg.mmr_lambda is not None or cfg.max_per_group) else k

        vectors: list[np.ndarray] = []
        weights: list[float] = []
        q = self.embedder.encode([query], show_progress_bar=False)[0] if query is not None else None
        if profile is not None and profile.interests:
            path = "multi_interest" if len(profile.interests) > 1 else "profile"
            vectors = [i.vector for i in profile.interests]
            weights = [i.weight for i in profile.interests]
            if q is not None:
                a = cfg.query_weight
                vectors = [_unit(a * q + (1 - a) * v) for v in vectors]
                path += "+query"
        elif q is not None:
            path, vectors, weights = "query", [q], [1.0]
        elif context_items:
            t = time.perf_counter()
            ctx = fetch_vectors(self.client, self.settings.index("items"), context_items)
            es_ms += (time.perf_counter() - t) * 1000
            if ctx:
                path, vectors, weights = "context", [_unit(np.mean(list(ctx.values()), axis=0))], [1.0]
                exclude = sorted(set(exclude) | {str(i) for i in context_items})
                flt = queries.candidate_filter(clauses, exclude_ids=exclude)
            else:
                path = "popular"
        else:
            path = "popular"

        t = time.perf_counter()
        if path == "popular":
            body = queries.popular_body(size=fetch, filter=flt, source=source)
            hits: Sequence[tuple[dict[str, Any], int | None]] = [
                (h, None) for h in self.client.search(index=self.settings.index("items"), **body)["hits"]["hits"]
            ]
            query_vectors: list[np.ndarray] = []
        else:
            query_vectors = [
                np.asarray(queries.check_vector(v, spec.dims, name="query vector"), dtype=np.float32) for v in vectors
            ]
            hits = self._knn(query_vectors, weights, fetch, num, flt, cfg, query, source, want_vectors)
        es_ms += (time.perf_counter() - t) * 1000

        cands = [
            _candidate(h, interest, query_vectors, spec.similarity, cfg.text_boost > 0 and query is not None)
            for h, interest in hits
        ]
        if cfg.mmr_lambda is not None:
            cands = mmr(cands, cfg.mmr_lambda, k)
        if cfg.max_per_group:
            assert cfg.group_field is not None  # RetrieveConfig sets both or neither
            cands = cap_per_group(cands, cfg.group_field, cfg.max_per_group)
        cands = cands[:k]
        total = (time.perf_counter() - started) * 1000
        return CandidateSet(
            request_id=uuid.uuid4().hex,
            path=path,
            cold_start=path in {"query", "context", "popular"},
            candidates=cands,
            user=user,
            query=query,
            excluded=len(exclude),
            interests=[{"weight": round(i.weight, 4), "items": list(i.items)} for i in profile.interests]
            if profile
            else [],
            timings_ms={"total": round(total, 2), "elasticsearch": round(es_ms, 2), "python": round(total - es_ms, 2)},
            history=list(used_history),
            query_vector=q,
        )

    # --- the ranked profile path: the user's state, then one search for the pool ----------------

    def cf_meta(self) -> CFMeta | None:
        """The live collaborative model's fold-in inputs (read once), None before any ``cf fit``."""
        if self._cf_meta is _UNSET:
            self._cf_meta = live_cf_meta(self.client, self.settings)
        return self._cf_meta

    def user_state(self, user: str, config: StateConfig) -> UserState | None:
        """The user's state for a ranked request (round trip 1: the user document; one more only
        when the stored state is stale); None for an unknown user."""
        doc = get_user(self.client, self.settings, user)
        if doc is None:
            return None
        return user_state(
            self.client, self.settings, doc, model=self._live().model, config=config, cf_meta=self.cf_meta()
        )

    def pool_hits(
        self,
        state: UserState,
        *,
        pool: Any,
        size: int,
        filters: Mapping[str, Any] | None = None,
        extra_filters: Sequence[dict[str, Any]] = (),
        source: Sequence[str] | bool | Mapping[str, Any] = True,
        with_vectors: bool = False,
        rescore: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The one search for a ranked request's pool (:func:`vecrank.rank.queries.pool_body`):
        the caller's filters, availability and the user's seen items apply to every source."""

        self._live()
        clauses = queries.filter_clauses(filters, self._field_types or {}) + list(extra_filters)
        seen = sorted(state.seen) if self.config.exclude_seen else []
        flt = queries.candidate_filter(clauses, exclude_ids=seen)
        cf_ok = state.cf_vector is not None and "cf_vector" in (self._field_types or {})
        body = queries.pool_body(
            pool=pool,
            size=size,
            filter=flt,
            text_vector=_listed(state.profile_vector),
            cf_vector=_listed(state.cf_vector) if cf_ok else None,
            listed={name: top_scores(state.scores(name), getattr(pool, name)) for name in SCORE_MAPS},
            source=source,
            with_vectors=with_vectors,
        )
        if rescore is not None:
            body["rescore"] = rescore
        return self.client.search(index=self.settings.index("items"), **body)["hits"]["hits"]

    def search_pool_hits(
        self,
        text: str,
        vector: np.ndarray,
        state: UserState | None,
        *,
        size: int,
        filters: Mapping[str, Any] | None = None,
        extra_filters: Sequence[dict[str, Any]] = (),
        source: Sequence[str] | bool | Mapping[str, Any] = True,
        with_vectors: bool = True,
        rescore: dict[str, Any] | None = None,
        hits: int | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """A search request's pool in one search (:func:`vecrank.rank.queries.search_pool_body`):
        the query embedding's kNN top ``size`` and the best BM25 hits outside them, under the
        caller's filters, availability and the user's seen items. Returns the hits and the BM25
        score of each hit the text matches. With ``rescore`` (the plugin's section, appended after
        the pool's BM25 rescore) the hits are the ranked ones, their ``_score`` the model's and no
        BM25 scores; ``hits``: how many to return (default the whole pool)."""
        self._live()
        clauses = queries.filter_clauses(filters, self._field_types or {}) + list(extra_filters)
        seen = sorted(state.seen) if state is not None and self.config.exclude_seen else []
        flt = queries.candidate_filter(clauses, exclude_ids=seen)
        vec = queries.check_vector(vector, self._live().dims, name="query vector")
        body = queries.search_pool_body(
            text,
            vec,
            fields=queries.text_fields(self._field_types or {}),
            size=size,
            filter=flt,
            source=source,
            with_vectors=with_vectors,
        )
        if rescore is not None:
            body["rescore"].append(rescore)
        if hits is not None:
            body["size"] = min(body["size"], hits)
        found = self.client.search(index=self.settings.index("items"), **body)["hits"]["hits"]
        if rescore is not None:
            return found, {}
        return found, {h["_id"]: float(h["_score"]) for h in found if h["_score"] > 0}

    def documents(self, ids: Sequence[str], source: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """The stored documents of ``ids`` (``source`` fields, default all), by id."""
        if not ids:
            return {}
        shown = queries.shown_source(source)
        picked: dict[str, Any] = (
            {"source": shown} if isinstance(shown, list) else {"source_excludes": shown["excludes"]}
        )
        docs = self.client.mget(index=self.settings.index("items"), ids=list(ids), **picked)["docs"]
        return {d["_id"]: d["_source"] for d in docs if d.get("found")}

    # --- pieces ------------------------------------------------------------------------------

    def _profile(
        self, user: str | None, history: Sequence[Mapping[str, Any]] | None, cfg: RetrieveConfig, model: str
    ) -> tuple[Profile | None, list[str], Sequence[Mapping[str, Any]]]:
        """The profile, the items to exclude as seen, and the history they came from."""
        pcfg = replace(cfg.profile, max_interests=cfg.max_interests)
        if history is None and user is not None:
            doc = get_user(self.client, self.settings, user)
            if doc is None:
                return None, [], []
            history = doc.get("history", [])
            stored = stored_profile(doc, pcfg, model)
            if stored is not None:
                return stored, consumed_ids(history), history
        if not history:
            return None, [], []
        vectors = fetch_vectors(self.client, self.settings.index("items"), {e["item_id"] for e in history})
        return build_profile(history, vectors, pcfg), consumed_ids(history), history

    def _knn(
        self,
        vectors: list[np.ndarray],
        weights: list[float],
        size: int,
        num: int,
        flt: dict | None,
        cfg: RetrieveConfig,
        query: str | None,
        source: Any,
        want_vectors: bool,
    ) -> Sequence[tuple[dict, int | None]]:
        index = self.settings.index("items")
        text = queries.text_match(query, boost=cfg.text_boost) if query is not None and cfg.text_boost > 0 else None
        with_vectors = want_vectors or text is not None
        if len(vectors) == 1:
            knn = queries.knn_clause(
                vectors[0].tolist(), k=size, num_candidates=num, filter=flt, similarity=cfg.similarity_floor
            )
            query_clause = (
                {"bool": {"should": [text], "minimum_should_match": 1, "filter": [flt] if flt else []}}
                if text
                else None
            )
            body = queries.search_body(size=size, knn=knn, query=query_clause, source=source, with_vectors=with_vectors)
            return [(h, None) for h in self.client.search(index=index, **body)["hits"]["hits"]]
        # One kNN per interest, merged with quotas proportional to each interest's weight.
        searches: list[dict[str, Any]] = []
        for v in vectors:
            knn = queries.knn_clause(
                v.tolist(), k=size, num_candidates=num, filter=flt, similarity=cfg.similarity_floor
            )
            searches += [
                {"index": index},
                queries.search_body(size=size, knn=knn, source=source, with_vectors=with_vectors),
            ]
        responses = self.client.msearch(searches=searches)["responses"]
        per_interest = []
        for r in responses:
            if "error" in r:
                raise VecrankError(f"interest search failed: {r['error']}")
            per_interest.append(r["hits"]["hits"])
        return merge_with_quotas(per_interest, weights, size)


_UNSET = object()


def _listed(vector: np.ndarray | None) -> list[float] | None:
    return None if vector is None else [float(x) for x in np.asarray(vector, dtype=np.float32)]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def _candidate(
    hit: dict[str, Any], interest: int | None, query_vectors: list[np.ndarray], similarity: str, mixed_score: bool
) -> Candidate:
    vector = None
    if "embedding" in hit.get("fields", {}):
        vector = np.asarray(hit["fields"]["embedding"], dtype=np.float32)
    cosine = None
    if query_vectors:
        q = query_vectors[interest or 0]
        if vector is not None:
            cosine = float(vector @ q / max(float(np.linalg.norm(vector)), 1e-12))
        elif similarity == "cosine" and not mixed_score:
            cosine = 2.0 * float(hit["_score"]) - 1.0  # Elasticsearch scores cosine as (1 + cos) / 2
    return Candidate(
        item_id=hit["_id"],
        score=float(hit["_score"]) if hit.get("_score") is not None else 0.0,
        cosine=cosine,
        fields=hit.get("_source") or {},
        interest=interest,
        vector=vector,
    )


def merge_with_quotas(
    per_interest: list[list[dict[str, Any]]], weights: list[float], size: int
) -> list[tuple[dict, int]]:
    """Interleave per-interest results so each interest gets about ``weight × size`` places (at least one)."""
    total = sum(weights) or 1.0
    quotas = [max(1, round(size * w / total)) for w in weights]
    taken: set[str] = set()
    out: list[tuple[dict, int]] = []
    cursors = [0] * len(per_interest)
    counts = [0] * len(per_interest)
    while len(out) < size:
        progressed = False
        for i, hits in enumerate(per_interest):
            if counts[i] >= quotas[i]:
                continue
            while cursors[i] < len(hits) and hits[cursors[i]]["_id"] in taken:
                cursors[i] += 1
            if cursors[i] < len(hits):
                hit = hits[cursors[i]]
                taken.add(hit["_id"])
                out.append((hit, i))
                counts[i] += 1
                progressed = True
                if len(out) >= size:
                    break
        if not progressed:
            if all(c >= q for c, q in zip(counts, quotas)) and any(
                cursors[i] < len(h) for i, h in enumerate(per_interest)
            ):
                quotas = [q + 1 for q in quotas]  # every quota is met: share what is left
                continue
            break
    return out


def mmr(cands: list[Candidate], lam: float, k: int) -> list[Candidate]:
    """Maximal marginal relevance: trade relevance (the candidate's cosine) against its highest
    similarity to what was already picked. Needs candidate vectors."""
    pool = [c for c in cands if c.vector is not None]
    if len(pool) <= 1:
        return cands
    vecs = np.stack([v / max(float(np.linalg.norm(v)), 1e-12) for v in (c.vector for c in pool) if v is not None])
    rel = np.array([c.cosine if c.cosine is not None else c.score for c in pool])
    chosen: list[int] = []
    max_sim = np.full(len(pool), -np.inf)
    while len(chosen) < min(k, len(pool)):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = lam * rel - (1 - lam) * penalty
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        max_sim = np.maximum(max_sim, vecs @ vecs[best])
    return [pool[i] for i in chosen]


def cap_per_group(cands: list[Candidate], group_field: str, limit: int) -> list[Candidate]:
    """Keep at most ``limit`` candidates per value of ``group_field`` (a list counts each value)."""
    seen: dict[Any, int] = {}
    out = []
    for c in cands:
        value = c.fields.get(group_field)
        keys = value if isinstance(value, list) else [value]
        keys = [k for k in keys if k is not None]
        if any(seen.get(key, 0) >= limit for key in keys):
            continue
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
        out.append(c)
    return out
