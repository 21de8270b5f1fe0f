"""Collaborative item vectors (implicit ALS) and item-to-item neighbours, fitted from the events.

The behavioural half of an item's representation, next to its text embedding:

* **Item factors**: implicit alternating least squares (the ``implicit`` package) on the user ×
  item matrix whose cells count each user's positive events on the item
  (:func:`vecrank.interactions.is_positive`). Only items with at least one positive event get a
  vector; the others rely on their text.
* **The user's vector** is the ALS *fold-in* of their own positive history: the one small
  least-squares solve ALS makes for a user when the item factors are held fixed
  (:func:`fold_in`, equal to ``implicit``'s ``recalculate_user``). It needs only the history's
  item factors and the Gram matrix ``YᵀY`` of all item factors, which travels with the factors,
  so it can be computed as events arrive and stored on the user like the text profile.
* **Co-occurrence**: ``sim(i, j) = c_ij / sqrt(n_i · n_j)``, where ``c_ij`` is the number of
  distinct users who liked both and ``n_i`` the number who liked ``i`` (a user who clicked three
  times counts once). Each item ``j`` keeps its ``neighbours`` most similar items; a user's
  co-occurrence score for ``j`` is the sum of ``sim(i, j)`` over the user's recent likes ``i``
  among them (item-based kNN in Sarwar et al.'s direction: what the candidate is close to).
  So that the score can be computed from the likes' side as events arrive, each item ``i``
  stores the list of the items that count it among their neighbours, with ``sim(i, j)``,
  strongest first, at most ``listed`` (:func:`neighbour_scores`).
* **Sequence neighbours**: for each item, the items that users interacted with within their next
  ``sequence_window`` interactions, weighted ``1 / distance`` (each user counted once per pair,
  at their closest distance) and normalised by ``sqrt(m_i · m_j)`` (distinct users who
  interacted with each). A user's sequence score for ``j`` sums ``j``'s weights in the lists of
  their newest interactions, the newest weighing most (``1 / position``): what tends to come next.

Everything is computed from the events before an instant, so the offline evaluation and the
training replays can fit what a ``vecrank cf fit`` at that instant would have written, with the
same code. Fits are deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from vecrank.errors import VecrankError
from vecrank.ingest import indices
from vecrank.ingest.ease import ease_lists
from vecrank.ingest.events import iter_events
from vecrank.ingest.indices import CF_FIELDS, LIST_FIELDS
from vecrank.ingest.items import packs_vectors, vector_value
from vecrank.interactions import Interactions

log = logging.getLogger(__name__)

IMPLICIT_VERSION = "0.7.3"  # the version the fold-in is tested against


@dataclass(frozen=True)
class CFConfig:
    """How the collaborative model is fitted. Documented defaults (none tuned to one dataset):
    the factor count, regularization and sweeps are common implicit-ALS settings for catalogs of
    thousands to millions of items; ``alpha`` 1 keeps the events' counts as the confidences.

    Attributes:
        factors: latent dimensions of the item and user vectors.
        regularization: L2 weight of the ALS solves (also of the fold-in).
        alpha: confidence scale of a positive cell (``implicit``'s ``alpha``).
        iterations: ALS sweeps.
        seed: initialisation seed.
        neighbours: each item's most co-liked items that count (and its sequence followers kept).
        listed: the most items an item's co-occurrence list names (its strongest).
        recent_likes: a user's newest distinct liked items that their co-occurrence score starts from.
        sequence_window: how many of a user's next interactions follow an interaction.
        recent_interactions: a user's newest distinct items that their sequence score starts from.
        scores_kept: a user's highest co-occurrence (and sequence, EASE) scores that are kept; the others are 0.
        ease_l2: EASE's L2 weight λ (:mod:`vecrank.ingest.ease`); 500 is the value Steck reports
            for ML-20M and Netflix.
        ease_items: the most items in the EASE matrix (those with the most likers).
        ease_likes: a user's newest distinct liked items that their EASE score sums over.
    """

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 1.0
    iterations: int = 15
    seed: int = 0
    neighbours: int = 50
    listed: int = 500
    recent_likes: int = 20
    sequence_window: int = 10
    recent_interactions: int = 10
    scores_kept: int = 300
    ease_l2: float = 500.0
    ease_items: int = 20_000
    ease_likes: int = 200

    def __post_init__(self) -> None:
        if not 1 <= self.factors <= 1024:
            raise ValueError(f"factors must be between 1 and 1024, not {self.factors}")
        if self.regularization < 0 or self.alpha <= 0:
            raise ValueError("regularization must be >= 0 and alpha > 0")
        if (
            min(
                self.iterations,
                self.neighbours,
                self.listed,
                self.recent_likes,
                self.sequence_window,
                self.recent_interactions,
                self.scores_kept,
                self.ease_items,
                self.ease_likes,
            )
            < 1
        ):
            raise ValueError(
                "iterations, neighbours, listed, recent_likes, sequence_window, recent_interactions, "
                "scores_kept, ease_items and ease_likes must be >= 1"
            )
        if not self.ease_l2 > 0:
            raise ValueError(f"ease_l2 must be > 0, not {self.ease_l2}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CFConfig:
        return cls(**dict(data))


@dataclass(frozen=True, eq=False)
class CFModel:
    """A fitted collaborative model: item factors, their Gram matrix and the neighbour lists.

    Attributes:
        config: how it was fitted.
        before_ms: it saw the events with ``timestamp < before_ms``.
        item_ids: the items with a vector, sorted; rows of ``factors``.
        factors: float32 item factors, one row per item of ``item_ids``.
        gram: ``factorsᵀ · factors`` in float64 (the fold-in's fixed part).
        neighbours: item id ``i`` -> ((``j``, sim), ...): the items that count ``i`` among their
            neighbours, strongest first (ties by id).
        sequence: item id -> the items users went on to next, weighted (:func:`sequence_neighbours`).
        ease: item id ``i`` -> ((``j``, ``B_ij``), ...): its strongest EASE weights
            (:func:`vecrank.ingest.ease.ease_lists`).
        users: how many users had a positive event.
        events: how many positive events it was fitted on.
    """

    config: CFConfig
    before_ms: int
    item_ids: tuple[str, ...]
    factors: np.ndarray
    gram: np.ndarray
    neighbours: Mapping[str, tuple[tuple[str, float], ...]]
    sequence: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    ease: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    users: int = 0
    events: int = 0
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rows.update({item: n for n, item in enumerate(self.item_ids)})

    @cached_property
    def version(self) -> str:
        """A short fingerprint of the factors and the config: what ``_meta`` and users record."""
        digest = hashlib.sha1(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        digest.update(str(self.before_ms).encode())
        digest.update(np.ascontiguousarray(self.factors).tobytes())
        return digest.hexdigest()[:12]

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._rows.get(str(item_id))
        return None if row is None else self.factors[row]

    def vectors(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {i: self.factors[self._rows[i]] for i in map(str, item_ids) if i in self._rows}

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "before_ms": self.before_ms,
            "items": len(self.item_ids),
            "users": self.users,
            "events": self.events,
            "config": self.config.to_dict(),
        }


# --- fitting -----------------------------------------------------------------------------------


def positive_counts(log_: Interactions, *, before_ms: int | None = None) -> sparse.csr_matrix:
    """The user × item matrix (all of ``log_``'s ids) of positive-event counts before ``before_ms``."""
    end = len(log_) if before_ms is None else log_.count_before(before_ms)
    mask = log_.positive[:end]
    users, items = log_.user[:end][mask], log_.item[:end][mask]
    out = sparse.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(len(log_.user_ids), len(log_.item_ids))
    )
    out.sum_duplicates()
    return out


def fit_als(counts: sparse.csr_matrix, config: CFConfig) -> tuple[np.ndarray, np.ndarray]:
    """``implicit``'s ALS on a user × item count matrix: (user factors, item factors), float32.

    One BLAS thread: ``implicit`` parallelises over users itself, and a threaded BLAS beneath it
    only oversubscribes the cores (``implicit`` warns about exactly this).
    """
    from implicit.cpu.als import AlternatingLeastSquares  # heavy optional dependency, loaded on first fit

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            alpha=config.alpha,
            iterations=config.iterations,
            random_state=config.seed,
        )
        model.fit(counts.astype(np.float32), show_progress=False)
    return np.asarray(model.user_factors, dtype=np.float32), np.asarray(model.item_factors, dtype=np.float32)


def cooccurrence_neighbours(
    counts: sparse.csr_matrix,
    item_ids: Sequence[str],
    k: int,
    listed: int | None = None,
) -> dict[str, tuple[tuple[str, float], ...]]:
    """For each item ``i``, the items ``j`` that have ``i`` among their ``k`` most co-liked items
    (cosine of their distinct-user sets, see the module docstring), with ``sim(i, j)``, strongest
    first, at most ``listed``; ties by item id (``item_ids`` is sorted)."""
    x = counts.copy()
    x.data[:] = 1.0  # distinct users
    n = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    inv = np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1.0)), 0.0)
    xt = x.T.tocsr().astype(np.float64)
    top: dict[str, list[tuple[str, float]]] = {}
    liked = np.flatnonzero(n > 0)
    for start in range(0, len(liked), 512):  # blocks of items: memory grows with the block, not the catalog²
        rows = liked[start : start + 512]
        block = (xt[rows] @ x).tocsr()  # c_ij for the block's items i
        for r, i in enumerate(rows):
            cols = block.indices[block.indptr[r] : block.indptr[r + 1]]
            vals = block.data[block.indptr[r] : block.indptr[r + 1]] * inv[i] * inv[cols]
            keep = cols != i
            cols, vals = cols[keep], vals[keep]
            if not len(cols):
                continue
            order = np.lexsort((cols, -vals))[:k]
            top[item_ids[i]] = [(item_ids[c], float(np.float32(vals[o]))) for o, c in zip(order, cols[order])]
    listing: dict[str, list[tuple[str, float]]] = {}
    for j, neighbours in top.items():
        for i, weight in neighbours:
            listing.setdefault(i, []).append((j, weight))
    return {i: tuple(sorted(entries, key=lambda e: (-e[1], e[0]))[:listed]) for i, entries in listing.items()}


def sequence_neighbours(
    log_: Interactions,
    *,
    end: int,
    window: int,
    k: int,
) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each item's ``k`` strongest followers among the first ``end`` events (module docstring).

    Impressions are not interactions and take no place in a user's sequence.
    """
    idx = np.flatnonzero(log_.interaction[:end])
    users, items = log_.user[idx].astype(np.int64), log_.item[idx].astype(np.int64)
    order = np.argsort(users, kind="stable")  # per user, in time order (the log is sorted by time)
    users, items = users[order], items[order]
    n_items = len(log_.item_ids)
    us, as_, bs, ws = [], [], [], []
    for d in range(1, window + 1):
        same = (users[d:] == users[:-d]) & (items[:-d] != items[d:])
        us.append(users[d:][same])
        as_.append(items[:-d][same])
        bs.append(items[d:][same])
        ws.append(np.full(int(same.sum()), 1.0 / d))
    u, a, b, weight = (np.concatenate(x) for x in (us, as_, bs, ws))
    if not len(u):
        return {}
    # Each user counts once per (i, j): at their closest distance.
    order = np.lexsort((-weight, b, a, u))
    u, a, b, weight = u[order], a[order], b[order], weight[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, weight = a[first], b[first], weight[first]
    # distinct users per item
    pairs = np.unique(np.stack([items, users]), axis=1)
    m = np.bincount(pairs[0], minlength=n_items).astype(np.float64)
    inv = np.where(m > 0, 1.0 / np.sqrt(np.maximum(m, 1.0)), 0.0)
    scores = sparse.csr_matrix((weight, (a, b)), shape=(n_items, n_items))
    scores.sum_duplicates()
    out: dict[str, tuple[tuple[str, float], ...]] = {}
    for i in np.flatnonzero(np.diff(scores.indptr)):
        cols = scores.indices[scores.indptr[i] : scores.indptr[i + 1]]
        vals = scores.data[scores.indptr[i] : scores.indptr[i + 1]] * inv[i] * inv[cols]
        top = np.lexsort((cols, -vals))[:k]
        out[log_.item_ids[i]] = tuple((log_.item_ids[c], float(np.float32(v))) for c, v in zip(cols[top], vals[top]))
    return out


def fit(log_: Interactions, config: CFConfig | None = None, *, before_ms: int | None = None) -> CFModel:
    """Fit item factors and neighbours on the positive events before ``before_ms`` (all by default).

    Raises:
        ValueError: no positive event to learn from.
    """
    config = config or CFConfig()
    counts = positive_counts(log_, before_ms=before_ms)
    if counts.nnz == 0:
        raise ValueError(
            "no positive events to fit collaborative vectors on"
            + (f" before {before_ms}" if before_ms is not None else "")
        )
    # Only users and items with a positive event enter ALS: an item nobody liked gets no vector
    # (rather than the near-zero one a few conjugate-gradient steps would leave it), and the Gram
    # matrix is over exactly the vectors that are written.
    liked = np.flatnonzero(np.asarray(counts.sum(axis=0)).ravel() > 0)
    likers = np.flatnonzero(np.diff(counts.indptr) > 0)
    _, item_factors = fit_als(counts[likers][:, liked], config)
    factors = np.ascontiguousarray(item_factors)
    ids = tuple(log_.item_ids[i] for i in liked)
    neighbours = cooccurrence_neighbours(counts, log_.item_ids, config.neighbours, config.listed)
    end = len(log_) if before_ms is None else log_.count_before(before_ms)
    sequence = sequence_neighbours(log_, end=end, window=config.sequence_window, k=config.neighbours)
    ease_weights = ease_lists(
        counts, log_.item_ids, l2=config.ease_l2, max_items=config.ease_items, listed=config.listed
    )
    model = CFModel(
        config=config,
        before_ms=int(before_ms if before_ms is not None else (log_.timestamp[-1] + 1 if len(log_) else 0)),
        item_ids=ids,
        factors=factors,
        gram=factors.astype(np.float64).T @ factors.astype(np.float64),
        neighbours=neighbours,
        sequence=sequence,
        ease=ease_weights,
        users=len(likers),
        events=int(log_.positive[:end].sum()),
    )
    log.info(
        "collaborative model %s: %d items, %d users, %d positive events",
        model.version,
        len(ids),
        model.users,
        model.events,
    )
    return model


# --- per user ----------------------------------------------------------------------------------


def fold_in(
    gram: np.ndarray, factors: np.ndarray, confidences: np.ndarray, *, regularization: float, alpha: float = 1.0
) -> np.ndarray | None:
    """The ALS user vector for a history, the item factors held fixed.

    Solves ``(YᵀY + λI + Σ_i (c_i − 1) y_i y_iᵀ) x = Σ_i c_i y_i`` with ``c_i = alpha · count_i``
    over the history's items ``i`` (``implicit``'s convention: an unobserved item has confidence
    1 and target 0, an observed one confidence ``c_i`` and target 1).

    Args:
        gram: ``YᵀY`` over all item factors.
        factors: the history items' factors, one row each.
        confidences: each row's positive-event count.
        regularization: the fit's λ.
        alpha: the fit's confidence scale.

    Returns:
        The float32 user vector, or None for an empty history.
    """
    if not len(factors):
        return None
    y = np.asarray(factors, dtype=np.float64)
    c = alpha * np.asarray(confidences, dtype=np.float64)
    a = gram + regularization * np.eye(gram.shape[0]) + (y.T * (c - 1.0)) @ y
    b = (y.T * c).sum(axis=1)
    return np.linalg.solve(a, b).astype(np.float32)


def like_counts(history: Sequence[Mapping[str, Any]], is_like: Callable[[Mapping[str, Any]], bool]) -> dict[str, int]:
    """Item id -> how many of the history's events are likes (``is_like``), in first-like order."""
    out: dict[str, int] = {}
    for e in history:
        if is_like(e):
            item = str(e["item_id"])
            out[item] = out.get(item, 0) + 1
    return out


def recent_likes(
    history: Sequence[Mapping[str, Any]], is_like: Callable[[Mapping[str, Any]], bool], n: int
) -> list[str]:
    """The ``n`` newest distinct liked items of a history (any order in), newest first."""
    ordered = sorted(history, key=lambda e: -int(e["timestamp"]))
    return list(dict.fromkeys(str(e["item_id"]) for e in ordered if is_like(e)))[:n]


def recent_items(history: Sequence[Mapping[str, Any]], n: int) -> list[str]:
    """The ``n`` newest distinct items the history interacted with (impressions aside), newest first."""
    ordered = sorted(history, key=lambda e: -int(e["timestamp"]))
    return list(dict.fromkeys(str(e["item_id"]) for e in ordered if e.get("type") != "impression"))[:n]


def neighbour_scores(
    neighbours: Mapping[str, Sequence[tuple[str, float]]],
    likes: Sequence[str],
    *,
    exclude: frozenset[str] | set[str] = frozenset(),
    limit: int | None = None,
    decay: bool = False,
) -> dict[str, float]:
    """Co-occurrence scores: item -> the sum of its weights in the neighbour lists of ``likes``.

    Args:
        neighbours: item id -> its neighbour list (``CFModel.neighbours``, or the lists stored on
            the items).
        likes: the user's recent liked items.
        exclude: items that get no score (what the user has seen).
        limit: keep the ``limit`` highest scores (ties by item id).
        decay: weigh the n-th of ``likes`` (newest first) by ``1 / n`` (the sequence score).

    Returns:
        The scores, highest first. Weights are summed in float64 in the order of ``likes``.
    """
    scores: dict[str, float] = {}
    for position, liked in enumerate(likes, 1):
        scale = 1.0 / position if decay else 1.0
        for item, weight in neighbours.get(liked, ()):
            if item not in exclude:
                scores[item] = scores.get(item, 0.0) + float(weight) * scale
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:limit] if limit is not None else ranked)


# --- in Elasticsearch ----------------------------------------------------------------------------


@dataclass
class FitSummary:
    """What one :func:`fit_index` did."""

    source: str = ""
    target: str = ""
    lists_index: str = ""
    switched: bool = False
    version: str = ""
    items: int = 0
    with_vector: int = 0
    with_neighbours: int = 0
    users: int = 0
    events: int = 0
    failed: int = 0
    seconds_fit: float = 0.0
    seconds_write: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lists_index_name(settings: Any, version: str) -> str:
    """The index that holds the neighbour lists of the fit ``version`` (one document per item)."""
    return settings.index(f"cf-lists-{version}")


def lists_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "item_id": {"type": "keyword"},
            **{f: {"type": "object", "enabled": False} for f in LIST_FIELDS},
        },
    }


def meta_block(model: CFModel, lists_index: str | None = None) -> dict[str, Any]:
    """The ``_meta.vecrank.cf`` block of an items index: the version users' vectors are checked
    against, what the fold-in needs (the Gram matrix, row-major, and the fit's settings), and the
    index of the neighbour lists."""
    return {
        "version": model.version,
        "config": model.config.to_dict(),
        "before_ms": model.before_ms,
        "lists_index": lists_index,
        "items": len(model.item_ids),
        "users": model.users,
        "events": model.events,
        "gram": [float(x) for x in model.gram.ravel()],
    }


def gram_of(block: Mapping[str, Any]) -> np.ndarray:
    k = int(block["config"]["factors"])
    return np.asarray(block["gram"], dtype=np.float64).reshape(k, k)


def live_block(client: Any, settings: Any) -> dict[str, Any] | None:
    """The live items index's collaborative block, or None before any ``cf fit``."""

    live = indices.live_index(client, settings)
    if live is None:
        return None
    return indices.meta_of(client, live).get("cf")


def neighbours_doc(neighbours: Sequence[tuple[str, float]]) -> dict[str, list[Any]]:
    """An item's neighbour list as stored in ``cf_neighbours`` (parallel lists, best first)."""
    return {"ids": [i for i, _ in neighbours], "weights": [float(w) for w in neighbours_weights(neighbours)]}


def neighbours_weights(neighbours: Sequence[tuple[str, float]]) -> list[float]:
    return [float(np.float32(w)) for _, w in neighbours]


def neighbours_from_doc(doc: Mapping[str, Any] | None) -> tuple[tuple[str, float], ...]:
    if not doc:
        return ()
    return tuple((str(i), float(w)) for i, w in zip(doc.get("ids") or (), doc.get("weights") or ()))


def fit_index(
    client: Any,
    settings: Any,
    config: CFConfig | None = None,
    *,
    switch: bool = True,
    events: Sequence[Mapping[str, Any]] | None = None,
    verify_sample: int = 20,
) -> FitSummary:
    """``vecrank cf fit``: fit on every event, then write the factors and neighbours into the
    next items version and move the alias to it in one atomic request.

    Readers never see half-written factors: the live version is untouched until the alias moves,
    and the old version stays for ``vecrank index rollback``. Every document is copied (vectors,
    signals and catalog fields as they are) and gets the new ``cf_vector`` and ``cf_neighbours``
    when the model has it; an item the model does not know has none. The neighbour lists
    (co-occurrence, sequence, EASE) go into the fit's own lists index, written first; the new
    ``_meta`` carries the model's block (:func:`meta_block`), which names it.

    Cost: the copy re-indexes every item and builds both vector graphs again, and the lists
    index and the EASE solve come on top: 6.7× a plain reindex of 20,000 items on two cores
    (``scripts/bench_cf.py``); the EASE solve is capped at ``ease_items``, the rest grows about
    linearly. Users' stored vectors are refreshed afterwards by the caller (see the CLI).

    Raises:
        VecrankError: no items index, no positive events, or verification failed (the alias did
            not move; the new version is left for inspection).
    """

    config = config or CFConfig()
    started = time.monotonic()
    live = indices.require_live(client, settings)
    log_ = Interactions.from_events(
        events
        if events is not None
        else (
            {k: e.get(k) for k in ("user_id", "item_id", "type", "value", "timestamp")}
            for e in iter_events(client, settings)
        )
    )
    try:
        model = fit(log_, config)
    except ValueError as exc:
        raise VecrankError(f"cannot fit collaborative vectors: {exc}") from None
    summary = FitSummary(
        source=live,
        version=model.version,
        users=model.users,
        events=model.events,
        seconds_fit=round(time.monotonic() - started, 3),
    )
    lists_index = summary.lists_index = lists_index_name(settings, model.version)
    indices.create_index_if_missing(client, lists_index, lists_mapping())
    listed = indices.write_version(client, lists_index, _list_actions(model, lists_index, summary))
    if listed.failed:
        raise VecrankError(f"{listed.failed} neighbour lists failed to write into {lists_index}: {listed.failures[:3]}")
    old_meta = indices.meta_of(client, live)
    spec_keys = set(indices.IndexSpec.__dataclass_fields__)
    kept = {k: v for k, v in old_meta.items() if k not in spec_keys and k not in {"created_at", "cf"}}
    new_spec = replace(indices.IndexSpec.from_meta(old_meta), cf_dims=config.factors)
    target = indices.create_version(
        client, settings, new_spec, point_alias_if_new=False, meta={**kept, "cf": meta_block(model, lists_index)}
    )
    summary.target = target
    packed = packs_vectors(client)
    written = time.monotonic()

    def actions() -> Iterator[dict[str, Any]]:
        for hit in indices.version_documents(client, live):
            doc = {k: v for k, v in hit["_source"].items() if k not in CF_FIELDS}
            vector = model.vector(hit["_id"])
            if vector is not None:
                doc["cf_vector"] = vector_value(vector, packed)
                summary.with_vector += 1
            yield {"_op_type": "index", "_index": target, "_id": hit["_id"], "_source": doc}

    result = indices.write_version(client, target, actions())
    summary.items, summary.failed, summary.failures = result.ok + result.failed, result.failed, result.failures
    summary.seconds_write = round(time.monotonic() - written, 3)
    problems = indices.copy_problems(client, live, target, result) + _verify(
        client, target, model, summary, verify_sample
    )
    summary.switched = indices.finish_version(client, settings, live, target, problems, switch=switch)
    return summary


def _list_actions(model: CFModel, index: str, summary: FitSummary) -> Iterator[dict[str, Any]]:
    """One document per item with a list: its co-occurrence, sequence and EASE lists."""
    for item in sorted({*model.neighbours, *model.sequence, *model.ease}):
        doc: dict[str, Any] = {"item_id": item}
        for name, lists in zip(LIST_FIELDS, (model.neighbours, model.sequence, model.ease)):
            if lists.get(item):
                doc[name] = neighbours_doc(lists[item])
        summary.with_neighbours += "cf_neighbours" in doc
        yield {"_op_type": "index", "_index": index, "_id": item, "_source": doc}


def _verify(client: Any, target: str, model: CFModel, summary: FitSummary, sample: int) -> list[str]:
    """A sample of stored factors equals the model's, bit for bit."""
    problems = []
    if sample and summary.with_vector:
        hits = client.search(
            index=target,
            size=sample,
            source={"exclude_vectors": False, "includes": ["cf_vector"]},
            query={"exists": {"field": "cf_vector"}},
            sort=[{"item_id": "asc"}],
        )["hits"]["hits"]
        bad = [
            h["_id"]
            for h in hits
            if (vector := model.vector(h["_id"])) is None
            or not np.array_equal(np.asarray(h["_source"]["cf_vector"], dtype=np.float32), vector)
        ]
        if bad:
            problems.append(
                f"{len(bad)} of {len(hits)} sampled collaborative vectors differ from the model's ({bad[:5]})"
            )
    return problems
