"""The ranker's features: declared once, by name and order, versioned with the model.

Every feature is computed for all candidates of a request at once (numpy, no request per
candidate). A value that is unknown stays ``NaN`` end to end: XGBoost routes it by each split's
``default_left``, in Python and in the plugin alike.

Groups:

* semantic — ``knn_score`` (Elasticsearch score), ``cos_profile`` (cosine to the profile or query
  vector that retrieved it), ``cos_query`` (to the search text, NaN without one),
  ``cos_hist_max`` / ``cos_hist_mean`` (to the user's last K positively weighted history items);
* behavioural — from ``signals.*`` as of the last refresh: ``ctr``, ``pop_1d``, ``pop_7d``,
  ``pop_30d`` (log1p), ``days_since_interaction``, ``rating_mean``, ``rating_count`` (log1p);
  with ``cooc``, ``cooc``: the share of the users who liked the user's recent likes that also
  liked the item (co-occurrence computed by Elasticsearch from the events, NaN without any);
* item — ``item.<field>`` for declared numeric item fields (for example ``item.year``);
* user — ``hist_len`` (log1p), ``days_since_active``;
* user–item — ``affinity.<facet>``: the weighted share of the user's positive history sharing a
  value of that facet with the item (for example genres);
* context — ``query_present``, ``path_code`` (0 profile, 1 multi_interest, 2 profile+query,
  3 query, 4 context, 5 popular).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vecrank.rank.profiles import DAY_MS, ProfileConfig

PATH_CODES = {"profile": 0, "multi_interest": 1, "profile+query": 2, "multi_interest+query": 2, "query": 3,
              "context": 4, "popular": 5}
_SEMANTIC = ("knn_score", "cos_profile", "cos_query", "cos_hist_max", "cos_hist_mean")
_BEHAVIOURAL = ("ctr", "pop_1d", "pop_7d", "pop_30d", "days_since_interaction", "rating_mean", "rating_count")
_USER = ("hist_len", "days_since_active")
_CONTEXT = ("query_present", "path_code")


class FeatureSpecMismatch(ValueError):
    """A model was trained on other features than the ones being served."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which features, in which order. Stored with every model; serving refuses a mismatch."""

    item_numeric: tuple[str, ...] = ()
    facets: tuple[str, ...] = ()
    history_k: int = 20
    cooc: bool = False
    version: int = 1

    @property
    def names(self) -> list[str]:
        return [*_SEMANTIC, *_BEHAVIOURAL, *(("cooc",) if self.cooc else ()), *(f"item.{f}" for f in self.item_numeric),
                *_USER, *(f"affinity.{f}" for f in self.facets), *_CONTEXT]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "item_numeric": list(self.item_numeric), "facets": list(self.facets),
                "history_k": self.history_k, "cooc": self.cooc, "names": self.names}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        spec = cls(item_numeric=tuple(data.get("item_numeric", ())), facets=tuple(data.get("facets", ())),
                   history_k=int(data.get("history_k", 20)), cooc=bool(data.get("cooc", False)),
                   version=int(data.get("version", 1)))
        if "names" in data and list(data["names"]) != spec.names:
            raise FeatureSpecMismatch(f"feature names {data['names']} do not match the spec's {spec.names}")
        return spec

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def check(self, names: Sequence[str]) -> None:
        """Refuse a model whose feature list is not exactly this spec's."""
        if list(names) != self.names:
            missing = [n for n in names if n not in self.names]
            extra = [n for n in self.names if n not in names]
            raise FeatureSpecMismatch(
                f"the model's features differ from the serving spec (model has {len(names)}, serving "
                f"{len(self.names)}; only in the model: {missing or 'none'}; only in serving: {extra or 'none'})")


@dataclass
class RequestContext:
    """What features need beyond the candidates themselves."""

    now_ms: int
    path: str
    history: Sequence[Mapping[str, Any]] = ()
    history_vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    query_vector: np.ndarray | None = None
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    history_facets: Mapping[str, Mapping[str, set[str]]] = field(default_factory=dict)  # facet -> item -> values


def compute(spec: FeatureSpec, candidates: Sequence[Any], ctx: RequestContext) -> np.ndarray:
    """The feature matrix, one row per candidate, columns in ``spec.names`` order (float32, NaN = missing).

    ``candidates`` are :class:`vecrank.rank.recommender.Candidate` (``score``, ``cosine``,
    ``fields``, ``vector``).
    """
    n = len(candidates)
    cols: dict[str, np.ndarray] = {}
    nan = np.full(n, np.nan, dtype=np.float64)

    cols["knn_score"] = np.array([c.score for c in candidates], dtype=np.float64)
    cols["cos_profile"] = np.array([np.nan if c.cosine is None else c.cosine for c in candidates], dtype=np.float64)
    vecs, has_vec = _candidate_matrix(candidates)
    if ctx.query_vector is not None and has_vec.any():
        q = np.asarray(ctx.query_vector, dtype=np.float64)
        q = q / max(np.linalg.norm(q), 1e-12)
        cols["cos_query"] = np.where(has_vec, vecs @ q, np.nan)
    else:
        cols["cos_query"] = nan.copy()

    positive = ctx.profile.liked(ctx.history)
    hist_ids = liked_with_vectors(spec, positive, ctx.history_vectors)
    if hist_ids and has_vec.any():
        h = np.stack([ctx.history_vectors[i] for i in hist_ids]).astype(np.float64)
        h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        sims = vecs @ h.T
        cols["cos_hist_max"] = np.where(has_vec, sims.max(axis=1), np.nan)
        cols["cos_hist_mean"] = np.where(has_vec, sims.mean(axis=1), np.nan)
    else:
        cols["cos_hist_max"], cols["cos_hist_mean"] = nan.copy(), nan.copy()

    signals = [c.fields.get("signals") or {} for c in candidates]
    cols["ctr"] = _get(signals, "ctr")
    for days in (1, 7, 30):
        cols[f"pop_{days}d"] = np.log1p(np.clip(_get(signals, f"popularity_{days}d"), 0, None))
    last = _get(signals, "last_interaction")
    cols["days_since_interaction"] = (ctx.now_ms - last) / DAY_MS
    cols["rating_mean"] = _get(signals, "rating_mean")
    cols["rating_count"] = np.log1p(_get(signals, "rating_count"))
    if spec.cooc:
        cols["cooc"] = np.array([np.nan if c.cooc is None else c.cooc for c in candidates], dtype=np.float64)
    for name in spec.item_numeric:
        cols[f"item.{name}"] = _get([c.fields for c in candidates], name)

    cols["hist_len"] = np.full(n, math.log1p(len(ctx.history)), dtype=np.float64)
    latest = max((int(e["timestamp"]) for e in ctx.history), default=None)
    cols["days_since_active"] = np.full(n, np.nan if latest is None else (ctx.now_ms - latest) / DAY_MS)
    for facet in spec.facets:
        cols[f"affinity.{facet}"] = _affinity(candidates, positive, facet, ctx)
    cols["query_present"] = np.full(n, 1.0 if ctx.query_vector is not None else 0.0)
    cols["path_code"] = np.full(n, float(PATH_CODES.get(ctx.path, -1)))
    return np.column_stack([cols[name] for name in spec.names]).astype(np.float32) if n else np.zeros(
        (0, len(spec.names)), dtype=np.float32)


def liked_with_vectors(spec: FeatureSpec, liked: Sequence[Mapping[str, Any]],
                       vectors: Mapping[str, np.ndarray]) -> list[str]:
    """The ``history_k`` newest liked items that have a vector: what ``cos_hist_*`` compare with."""
    return [str(e["item_id"]) for e in liked if str(e["item_id"]) in vectors][: spec.history_k]


def _candidate_matrix(candidates: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    dims = next((len(c.vector) for c in candidates if c.vector is not None), 0)
    out = np.zeros((len(candidates), dims), dtype=np.float64)
    has = np.zeros(len(candidates), dtype=bool)
    for i, c in enumerate(candidates):
        if c.vector is not None and dims:
            v = np.asarray(c.vector, dtype=np.float64)
            out[i] = v / max(np.linalg.norm(v), 1e-12)
            has[i] = True
    return out, has


def _get(docs: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    out = np.full(len(docs), np.nan, dtype=np.float64)
    for i, d in enumerate(docs):
        value = d.get(key)
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[i] = value
    return out


def facet_values(doc_value: Any) -> set[str]:
    if doc_value is None:
        return set()
    if isinstance(doc_value, list):
        return {str(v) for v in doc_value}
    return {str(doc_value)}


def _affinity(candidates: Sequence[Any], positive: Sequence[Mapping[str, Any]], facet: str,
              ctx: RequestContext) -> np.ndarray:
    """Weighted share of the user's positive history that shares a ``facet`` value with each item.

    History events carry only item ids; the facet values of the history items come in
    ``ctx.history_facets``.
    """
    facets = ctx.history_facets.get(facet, {})
    if not positive or not facets:
        return np.full(len(candidates), np.nan)
    weights = ctx.profile.liked_weights(positive)
    total = sum(weights.values()) or 1.0
    out = np.zeros(len(candidates))
    for i, c in enumerate(candidates):
        values = facet_values(c.fields.get(facet))
        if not values:
            out[i] = np.nan
            continue
        out[i] = sum(w for item, w in weights.items() if facets.get(item, set()) & values) / total
    return out
