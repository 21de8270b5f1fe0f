"""The ranker's features: declared once, by name and order, versioned with the model.

Every feature is computed for all candidates of a request at once (numpy, no request per
candidate), from the candidate's own data (its text vector, collaborative vector and stored
fields) and the request's :class:`RequestContext` (the :class:`~vecrank.rank.state.UserState`,
the search text's vector, the time, the path). The Elasticsearch plugin computes the same values
from doc values and the request's params (:mod:`vecrank.rank.rescore` says where it reads each
one); a test holds the two to the same rows. A value that is unknown stays ``NaN`` end to end:
XGBoost routes it by each split's ``default_left``, in Python and in the plugin alike.

Groups:

* semantic — ``cos_profile`` (cosine to the user's text profile), ``cos_query`` (to the search
  text, NaN without one), ``cos_hist_max`` / ``cos_hist_mean`` (to the user's newest liked items);
* collaborative — ``cf_score`` (the user's ALS fold-in · the item's factors, NaN when either is
  missing), ``cooc`` (the item's co-occurrence score with the user's recent likes; missing, NaN, when it
  is in none of their neighbour lists or before any collaborative model is fitted), ``seq``
  (likewise, the next-in-sequence score), ``ease`` (likewise, the EASE score of their newest likes);
* behavioural, from ``signals.*`` as of the last refresh — ``ctr``, ``pop_1d``, ``pop_7d``,
  ``pop_30d``, ``pop_365d`` (log1p), ``trend`` (recent popularity against the 30-day rate),
  ``popular_rank`` / ``trending_rank`` (the item's rank among all items by 30-day popularity
  and by its excess 7-day popularity; NaN past the ranked ones),
  ``days_since_interaction``, ``item_age`` (days since its first interaction), ``rating_mean``,
  ``rating_count`` (log1p);
* pool ranks — ``rank_cf``, ``rank_text``, ``rank_cooc``, ``rank_seq``, ``rank_ease``: the candidate's 1-based
  rank within the request's pool by ``cf_score``, ``cos_profile``, ``cooc``, ``seq`` and ``ease`` (highest first,
  ties by item id, NaN stays NaN): what each retrieval source thinks of it relative to the rest of the pool;
  ``n_sources``: how many sources found it (ranks within each source's size, and the signals'
  popular and trending ranks within theirs);
* item — ``item.<field>`` for declared numeric item fields (for example ``item.year``), and
  ``age.<field>`` for declared date fields: days from the field to the request (a release date);
* user — ``hist_len`` (log1p of the interactions), ``days_since_active``;
* user–item — ``affinity.<facet>``: the share of the user's newest liked items that share a value
  of that facet with the item (for example genres);
* context — ``query_present``, ``path_code`` (0 profile, 1 multi_interest, 2 profile+query,
  3 query, 4 context, 5 popular);
* search, in a search model's spec only (``FeatureSpec(search=True)``) — ``bm25`` (the search
  text's BM25 score on the item, NaN where the text does not match it), ``rank_bm25`` and
  ``rank_query`` (the candidate's rank in the pool by ``bm25`` and by ``cos_query``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecrank.interactions import DAY_MS
from vecrank.rank.state import SCORE_MAPS, UserState

PATH_CODES = {
    "profile": 0,
    "multi_interest": 1,
    "profile+query": 2,
    "multi_interest+query": 2,
    "query": 3,
    "context": 4,
    "popular": 5,
}
SEMANTIC = ("cos_profile", "cos_query", "cos_hist_max", "cos_hist_mean")
COLLABORATIVE = ("cf_score", *SCORE_MAPS)
POPULARITY_WINDOWS = (1, 7, 30, 365)
BEHAVIOURAL = (
    "ctr",
    *(f"pop_{d}d" for d in POPULARITY_WINDOWS),
    "trend",
    "popular_rank",
    "trending_rank",
    "days_since_interaction",
    "item_age",
    "rating_mean",
    "rating_count",
)
#: rank feature -> the feature it ranks the pool by
POOL_RANKS = {"rank_cf": "cf_score", "rank_text": "cos_profile", **{f"rank_{name}": name for name in SCORE_MAPS}}
USER = ("hist_len", "days_since_active")
#: n_sources counts the retrieval sources that found a candidate: a rank within its source's size
SOURCE_RANKS = {
    "text": "rank_text",
    "cf": "rank_cf",
    **{name: f"rank_{name}" for name in SCORE_MAPS},
    "popular": "popular_rank",
    "trending": "trending_rank",
}
CONTEXT = ("query_present", "path_code")
#: the ranker's one structural prior (``TrainConfig.monotone``): a higher collaborative score may
#: only raise a candidate's score, all else equal, and a better (lower) rank in the pool by one
#: likewise; the data choose how much, never the sign
MONOTONE = (
    *((name, 1) for name in COLLABORATIVE),
    *((rank, -1) for rank, by in POOL_RANKS.items() if by in COLLABORATIVE),
)
#: a search model's rank features -> the feature each ranks the pool by
SEARCH_RANKS = {"rank_bm25": "bm25", "rank_query": "cos_query"}
SEARCH = ("bm25", *SEARCH_RANKS)
SPEC_VERSION = 3


class FeatureSpecMismatch(ValueError):
    """A model was trained on other features than the ones being served."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which features, in which order. Stored with every model; serving refuses a mismatch."""

    item_numeric: tuple[str, ...] = ()
    facets: tuple[str, ...] = ()
    item_dates: tuple[str, ...] = ()
    #: (rank feature, the size of its source in the pool): what ``n_sources`` counts
    sources: tuple[tuple[str, int], ...] = ()
    #: a search model's spec: the :data:`SEARCH` features come last
    search: bool = False
    version: int = SPEC_VERSION

    @property
    def names(self) -> list[str]:
        return [
            *SEMANTIC,
            *COLLABORATIVE,
            *BEHAVIOURAL,
            *POOL_RANKS,
            *(("n_sources",) if self.sources else ()),
            *(f"item.{f}" for f in self.item_numeric),
            *(f"age.{f}" for f in self.item_dates),
            *USER,
            *(f"affinity.{f}" for f in self.facets),
            *CONTEXT,
            *(SEARCH if self.search else ()),
        ]

    @classmethod
    def for_fields(
        cls,
        fields: Sequence[str],
        facets: Sequence[str],
        field_types: Mapping[str, str],
        *,
        pool: Mapping[str, int] | None = None,
    ) -> FeatureSpec:
        """A spec for item fields named by the user: date fields become ``age.<field>``, the
        others ``item.<field>`` (``field_types``: the items mapping's types); ``pool`` (source ->
        size, :meth:`vecrank.rank.offline.PoolConfig.to_dict`) adds ``n_sources``."""
        dates = tuple(f for f in fields if field_types.get(f) in ("date", "date_nanos"))
        sources = tuple((SOURCE_RANKS[k], int(v)) for k, v in (pool or {}).items() if k in SOURCE_RANKS and v)
        return cls(
            item_numeric=tuple(f for f in fields if f not in dates),
            facets=tuple(facets),
            item_dates=dates,
            sources=sources,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "item_numeric": list(self.item_numeric),
            "facets": list(self.facets),
            "item_dates": list(self.item_dates),
            "sources": [list(s) for s in self.sources],
            "names": self.names,
        }
        if self.search:  # only then: the fingerprints of the specs before search models stay as they were
            out["search"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        version = int(data.get("version", 1))
        if version != SPEC_VERSION:
            raise FeatureSpecMismatch(
                f"feature spec version {version} is not this vecrank's ({SPEC_VERSION}); " "train the model again"
            )
        spec = cls(
            item_numeric=tuple(data.get("item_numeric", ())),
            facets=tuple(data.get("facets", ())),
            item_dates=tuple(data.get("item_dates", ())),
            sources=tuple((str(n), int(k)) for n, k in data.get("sources", ())),
            search=bool(data.get("search", False)),
        )
        if "names" in data and list(data["names"]) != spec.names:
            raise FeatureSpecMismatch(f"feature names {data['names']} do not match the spec's {spec.names}")
        return spec

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def source_fields(self) -> tuple[str, ...]:
        """The ``_source`` fields the features read from a candidate."""
        return ("item_id", "signals", *self.facets, *self.item_numeric, *self.item_dates)

    def check(self, names: Sequence[str]) -> None:
        """Refuse a model whose feature list is not exactly this spec's."""
        if list(names) != self.names:
            missing = [n for n in names if n not in self.names]
            extra = [n for n in self.names if n not in names]
            raise FeatureSpecMismatch(
                f"the model's features differ from the serving spec (model has {len(names)}, serving "
                f"{len(self.names)}; only in the model: {missing or 'none'}; only in serving: {extra or 'none'})"
            )


@dataclass(frozen=True)
class RequestContext:
    """What features need beyond the candidates themselves."""

    now_ms: int
    path: str
    state: UserState = field(default_factory=UserState)
    query_vector: np.ndarray | None = None
    bm25: Mapping[str, float] | None = None  # item id -> the search text's BM25 score (search models)


@dataclass(frozen=True, eq=False)
class CandidateBatch:
    """A request's candidates as columns: what the features read, one row per candidate.

    Serving builds it from Elasticsearch hits (:meth:`of`), offline replays from the catalog's
    arrays; :func:`compute` reads nothing else, so both compute the same features.
    """

    item_ids: tuple[str, ...]
    vectors: np.ndarray  # n × d text vectors (any norm; zeros where none)
    has_vector: np.ndarray
    cf_vectors: np.ndarray  # n × k collaborative vectors (zeros where none)
    has_cf: np.ndarray
    signals: Mapping[str, np.ndarray]  # signal name -> float64 column, NaN where missing
    numeric: Mapping[str, np.ndarray]  # item field -> float64 column
    facets: Mapping[str, Sequence[frozenset[str]]]  # facet -> each candidate's values

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def of(cls, candidates: Sequence[Any], spec: FeatureSpec) -> CandidateBatch:
        """From :class:`vecrank.rank.recommender.Candidate` objects (``vector``, ``cf_vector``, ``fields``)."""
        vectors, has_vector = _rows([c.vector for c in candidates])
        cf_vectors, has_cf = _rows([c.cf_vector for c in candidates])
        signals = [c.fields.get("signals") or {} for c in candidates]
        names = sorted({k for s in signals for k in s})
        return cls(
            item_ids=tuple(c.item_id for c in candidates),
            vectors=vectors,
            has_vector=has_vector,
            cf_vectors=cf_vectors,
            has_cf=has_cf,
            signals={k: _get(signals, k) for k in names},
            numeric={f: _get([c.fields for c in candidates], f) for f in (*spec.item_numeric, *spec.item_dates)},
            facets={f: [facet_values(c.fields.get(f)) for c in candidates] for f in spec.facets},
        )


def compute(spec: FeatureSpec, candidates: CandidateBatch | Sequence[Any], ctx: RequestContext) -> np.ndarray:
    """The feature matrix, one row per candidate, columns in ``spec.names`` order (float32, NaN = missing).

    ``candidates`` is a :class:`CandidateBatch`, or :class:`vecrank.rank.recommender.Candidate`
    objects; the pool ranks are taken over exactly these candidates.
    """
    batch = candidates if isinstance(candidates, CandidateBatch) else CandidateBatch.of(candidates, spec)
    n = len(batch)
    if not n:
        return np.zeros((0, len(spec.names)), dtype=np.float32)
    cols: dict[str, np.ndarray] = {}
    nan = np.full(n, np.nan)
    state = ctx.state

    vecs = batch.vectors.astype(np.float64)
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12) if vecs.size else vecs
    has_vec = batch.has_vector
    cols["cos_profile"] = _cosines(vecs, has_vec, state.profile_vector)
    cols["cos_query"] = _cosines(vecs, has_vec, ctx.query_vector)
    if state.liked and has_vec.any():
        h = np.stack([li.vector for li in state.liked]).astype(np.float64)
        sims = vecs @ (h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)).T
        cols["cos_hist_max"] = np.where(has_vec, sims.max(axis=1), np.nan)
        cols["cos_hist_mean"] = np.where(has_vec, sims.mean(axis=1), np.nan)
    else:
        cols["cos_hist_max"], cols["cos_hist_mean"] = nan.copy(), nan.copy()

    if state.cf_vector is not None and batch.has_cf.any():
        scores = batch.cf_vectors.astype(np.float64) @ np.asarray(state.cf_vector, dtype=np.float64)
        cols["cf_score"] = np.where(batch.has_cf, scores, np.nan)
    else:
        cols["cf_score"] = nan.copy()
    for name in SCORE_MAPS:
        score_map = state.scores(name)
        cols[name] = np.array([score_map.get(i, np.nan) for i in batch.item_ids], dtype=np.float64)

    sig = batch.signals
    column = lambda name: sig[name] if name in sig else nan  # noqa: E731 - a lookup with a default
    cols["ctr"] = column("ctr")
    for days in POPULARITY_WINDOWS:
        cols[f"pop_{days}d"] = np.log1p(np.clip(column(f"popularity_{days}d"), 0, None))
    cols["trend"] = column("trend")
    cols["popular_rank"] = column("popular_rank")
    cols["trending_rank"] = column("trending_rank")
    cols["days_since_interaction"] = (ctx.now_ms - column("last_interaction")) / DAY_MS
    cols["item_age"] = (ctx.now_ms - column("first_interaction")) / DAY_MS
    cols["rating_mean"] = column("rating_mean")
    cols["rating_count"] = np.log1p(column("rating_count"))
    for name, of in POOL_RANKS.items():
        cols[name] = pool_ranks(cols[of].astype(np.float32), batch.item_ids)
    if spec.sources:
        cols["n_sources"] = source_count(cols, spec.sources)
    for name in spec.item_numeric:
        cols[f"item.{name}"] = batch.numeric.get(name, nan)
    for name in spec.item_dates:
        cols[f"age.{name}"] = (ctx.now_ms - batch.numeric.get(name, nan)) / DAY_MS

    cols["hist_len"] = np.full(n, math.log1p(state.interactions))
    latest = state.last_active_ms
    cols["days_since_active"] = np.full(n, np.nan if latest is None else (ctx.now_ms - latest) / DAY_MS)
    for facet in spec.facets:
        cols[f"affinity.{facet}"] = _affinity(batch.facets.get(facet, [frozenset()] * n), state, facet)
    cols["query_present"] = np.full(n, 1.0 if ctx.query_vector is not None else 0.0)
    cols["path_code"] = np.full(n, float(PATH_CODES.get(ctx.path, -1)))
    if spec.search:
        bm25 = ctx.bm25 or {}
        cols["bm25"] = np.array([bm25.get(i, np.nan) for i in batch.item_ids], dtype=np.float64)
        for name, of in SEARCH_RANKS.items():
            cols[name] = pool_ranks(cols[of].astype(np.float32), batch.item_ids)
    return np.column_stack([cols[name] for name in spec.names]).astype(np.float32)


def source_count(cols: Mapping[str, np.ndarray], sources: Sequence[tuple[str, int]]) -> np.ndarray:
    """How many of ``sources`` (rank feature, limit) have the candidate within their limit (NaN:
    not); the plugin's ``count`` source computes the same."""
    n = len(next(iter(cols.values())))
    out = np.zeros(n)
    for name, limit in sources:
        out += np.nan_to_num(cols[name].astype(np.float32), nan=np.inf) <= limit  # float32, as the plugin compares
    return out


def pool_ranks(values: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
    """1-based ranks by ``values`` (float32, highest first, ties by item id); NaN stays NaN and
    takes no place. The plugin's ``rank`` source computes the same over its rescore window."""
    out = np.full(len(values), np.nan)
    valid = np.flatnonzero(~np.isnan(values))
    if len(valid):
        ids = np.asarray(item_ids, dtype=object)[valid]
        # np.lexsort's last key is the primary one: value descending, then the id (str order)
        order = valid[np.lexsort((ids, -values[valid].astype(np.float64)))]
        out[order] = np.arange(1, len(order) + 1)
    return out


def _rows(vectors: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Optional vectors as a matrix (zeros where none) and which rows have one."""
    dims = next((len(v) for v in vectors if v is not None), 0)
    out = np.zeros((len(vectors), dims), dtype=np.float32)
    has = np.zeros(len(vectors), dtype=bool)
    for i, v in enumerate(vectors):
        if v is not None and dims:
            out[i], has[i] = v, True
    return out, has


def _cosines(vecs: np.ndarray, has_vec: np.ndarray, query: np.ndarray | None) -> np.ndarray:
    if query is None or not has_vec.any():
        return np.full(len(vecs), np.nan)
    q = np.asarray(query, dtype=np.float64)
    return np.where(has_vec, vecs @ (q / max(float(np.linalg.norm(q)), 1e-12)), np.nan)


def _get(docs: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    out = np.full(len(docs), np.nan, dtype=np.float64)
    for i, d in enumerate(docs):
        value = d.get(key)
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[i] = value
    return out


def facet_values(doc_value: Any) -> frozenset[str]:
    if doc_value is None:
        return frozenset()
    if isinstance(doc_value, list):
        return frozenset(str(v) for v in doc_value)
    return frozenset({str(doc_value)})


def _affinity(values: Sequence[frozenset[str]], state: UserState, facet: str) -> np.ndarray:
    """The share of the user's liked items that share a ``facet`` value with each candidate."""
    liked = [li.facets.get(facet, frozenset()) for li in state.liked]
    if not liked:
        return np.full(len(values), np.nan)
    masks: dict[str, int] = {}
    for bit, item_values in enumerate(liked):
        for v in item_values:
            masks[v] = masks.get(v, 0) | (1 << bit)
    out = np.full(len(values), np.nan)
    for i, candidate in enumerate(values):
        if candidate:
            mask = 0
            for v in candidate:
                mask |= masks.get(v, 0)
            out[i] = mask.bit_count() / len(liked)
    return out
