"""Replays of the past: a request at instant t sees only what existed before t.

Training and the offline evaluation ask "what would vecrank have recommended to this user at
this instant?" many thousands of times. :class:`Past` answers from memory, with the same code that
serving runs on Elasticsearch's data:

* the catalog (:class:`Catalog`: text vectors and the fields features read) as it is now — item
  text has no history;
* the collaborative model (:func:`vecrank.ingest.cf.fit`) fitted at the latest **refit instant**
  before t, as a periodic ``vecrank cf fit`` would have left it: factors, Gram matrix,
  co-occurrence neighbours;
* the behavioural signals as of the start of t's ``bucket_days`` bucket
  (:func:`vecrank.ingest.signals.signals_table`, which a test holds equal to ``signals refresh``);
* the user's state (:func:`vecrank.rank.state.compute_state`) from their own interactions
  before t, as it would have been stored when their last event arrived.

The pool (:class:`PoolConfig`) is what the one search of serving asks for: the text-profile kNN,
the collaborative kNN, the user's most co-occurring items, and the popular and trending items
by the signals' ranks, minus what the user has seen. Offline the kNN is exact (cosine and dot
product over every item); serving's HNSW finds about 97% of the same top 100
(``scripts/bench_retrieve.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from vecrank.ingest import cf
from vecrank.ingest.cf import CFConfig
from vecrank.ingest.signals import DEFAULT_WINDOWS
from vecrank.ingest.signals_table import signals_table
from vecrank.interactions import DAY_MS, Interactions
from vecrank.rank.exposure import ColdSlots
from vecrank.rank.features import CandidateBatch, FeatureSpec, RequestContext, facet_values
from vecrank.rank.state import SCORE_MAPS, CFMeta, StateConfig, UserState, compute_state

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)

SOURCES = ("text", "cf", *SCORE_MAPS, "popular", "trending")


@dataclass(frozen=True)
class PoolConfig:
    """How many candidates each retrieval source adds to a request's pool. Documented defaults:
    about 300 candidates, which the ranker scores in a few milliseconds (Python or plugin).

    Attributes:
        text: nearest items to the user's text profile.
        cf: highest collaborative scores (the user's fold-in · the item factors).
        cooc: highest co-occurrence scores with the user's recent likes.
        seq: highest sequence scores after the user's newest interactions.
        ease: highest EASE scores of the user's newest likes.
        popular: items with ``signals.popular_rank <= popular`` (30-day popularity).
        trending: items with ``signals.trending_rank <= trending``.
    """

    text: int = 100
    cf: int = 100
    cooc: int = 50
    seq: int = 50
    ease: int = 50
    popular: int = 50
    trending: int = 50

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0 <= value <= 10_000:
                raise ValueError(f"pool.{name} must be between 0 and 10000, not {value}")

    @property
    def size(self) -> int:
        """The most candidates a pool can hold (every source disjoint)."""
        return sum(asdict(self).values())

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolConfig:
        return cls(**{k: int(v) for k, v in data.items()})


@dataclass(frozen=True)
class ReplayConfig:
    """Everything that decides what a model is trained on and served with: it travels with the
    model (``RankerModel.training["config"]``) and serving builds its pool and user states from it,
    and places cold items in the ranked list by its ``cold_slots``
    (:class:`~vecrank.rank.exposure.ColdSlots`), as the offline evaluation does.

    A config recorded before ``cold_slots`` existed (models registered earlier) reads as the
    policy's default: the policy is a presentation rule after the model, not something the model
    was fitted to (training learns scores; the slots only reorder below the head), so an older
    model is served and evaluated as a new one would be.
    """

    pool: PoolConfig = field(default_factory=PoolConfig)
    state: StateConfig = field(default_factory=StateConfig)
    cf: CFConfig = field(default_factory=CFConfig)
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    cold_slots: ColdSlots = field(default_factory=ColdSlots)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.to_dict(),
            "state": self.state.to_dict(),
            "cf": self.cf.to_dict(),
            "spec": self.spec.to_dict(),
            "cold_slots": self.cold_slots.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplayConfig:
        cold = data.get("cold_slots")
        return cls(
            pool=PoolConfig.from_dict(data["pool"]),
            state=StateConfig.from_dict(data["state"]),
            cf=CFConfig.from_dict(data["cf"]),
            spec=FeatureSpec.from_dict(data["spec"]),
            cold_slots=ColdSlots.from_dict(cold) if cold is not None else ColdSlots(),
        )


@dataclass(frozen=True, eq=False)
class Catalog:
    """The items, in memory, sorted by id: unit text vectors and the ``_source`` fields features read."""

    ids: tuple[str, ...]
    vectors: np.ndarray = field(repr=False)  # float32 unit rows; zeros where an item has none
    has_vector: np.ndarray = field(repr=False)
    fields: tuple[Mapping[str, Any], ...] = field(repr=False)
    available: np.ndarray = field(repr=False)
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _columns: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index.update({item: n for n, item in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, item_id: str) -> int | None:
        return self._index.get(str(item_id))

    def numeric(self, name: str) -> np.ndarray:
        """Field ``name`` of every item as float64 (NaN where it is not a number)."""
        key = f"numeric:{name}"
        if key not in self._columns:
            self._columns[key] = _numbers([f.get(name) for f in self.fields])
        return self._columns[key]

    def facet(self, name: str) -> list[frozenset[str]]:
        """Facet ``name``'s values of every item."""
        key = f"facet:{name}"
        if key not in self._columns:
            self._columns[key] = [facet_values(f.get(name)) for f in self.fields]
        return self._columns[key]

    @classmethod
    def build(cls, items: Mapping[str, tuple[np.ndarray | None, Mapping[str, Any]]]) -> Catalog:
        """From ``item id -> (text vector or None, source fields)``."""
        ids = tuple(sorted(items))
        dims = next((len(v) for v, _ in items.values() if v is not None), 0)
        vectors = np.zeros((len(ids), dims), dtype=np.float32)
        has = np.zeros(len(ids), dtype=bool)
        fields_ = []
        for n, item in enumerate(ids):
            vector, source = items[item]
            if vector is not None:
                v = np.asarray(vector, dtype=np.float64)
                vectors[n] = (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
                has[n] = True
            fields_.append(dict(source))
        available = np.array([f.get("available") is not False for f in fields_], dtype=bool)
        return cls(ids, vectors, has, tuple(fields_), available)

    @classmethod
    def from_index(cls, client: Elasticsearch, settings: Settings, spec: FeatureSpec) -> Catalog:
        """Every item of the live index: its embedding and the fields ``spec`` reads (one scroll)."""
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import helpers

        wanted = sorted({*spec.facets, *spec.item_numeric, *spec.item_dates, "available"})
        items: dict[str, tuple[np.ndarray | None, Mapping[str, Any]]] = {}
        for hit in helpers.scan(
            client,
            index=settings.index("items"),
            size=1000,
            query={"query": {"match_all": {}}, "_source": wanted, "fields": ["embedding"]},
        ):
            emb = (hit.get("fields") or {}).get("embedding")
            items[hit["_id"]] = (np.asarray(emb, dtype=np.float32) if emb else None, hit.get("_source") or {})
        return cls.build(items)


class _Items:
    """:class:`vecrank.rank.state.ItemData` over the catalog and one collaborative model."""

    def __init__(self, catalog: Catalog, model: cf.CFModel | None):
        self.catalog, self.model = catalog, model

    def text_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for i in ids:
            n = self.catalog.index(i)
            if n is not None and self.catalog.has_vector[n]:
                out[i] = self.catalog.vectors[n]
        return out

    def cf_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.model.vectors(ids) if self.model is not None else {}

    def neighbours(self, ids: Sequence[str]) -> dict[str, Sequence[tuple[str, float]]]:
        return self._lists("neighbours", ids)

    def sequence(self, ids: Sequence[str]) -> dict[str, Sequence[tuple[str, float]]]:
        return self._lists("sequence", ids)

    def ease(self, ids: Sequence[str]) -> dict[str, Sequence[tuple[str, float]]]:
        return self._lists("ease", ids)

    def _lists(self, name: str, ids: Sequence[str]) -> dict[str, Sequence[tuple[str, float]]]:
        lists = getattr(self.model, name) if self.model is not None else {}
        return {i: lists[i] for i in ids if i in lists}

    def facets(self, ids: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, frozenset[str]]]:
        out = {}
        for i in ids:
            n = self.catalog.index(i)
            if n is not None:
                out[i] = {f: facet_values(self.catalog.fields[n].get(f)) for f in names}
        return out


@dataclass
class Replayed:
    """One replayed request: the state, the pool (with the sources that found each candidate) and
    the features' context."""

    user: str
    cut_ms: int
    state: UserState
    candidates: CandidateBatch
    context: RequestContext
    source_order: dict[str, list[str]]  # source -> its candidates, best first

    @property
    def item_ids(self) -> list[str]:
        return list(self.candidates.item_ids)


class Past:
    """The world as it was at any instant (see the module docstring).

    Args:
        log: every event.
        catalog: the items.
        refits: the instants the collaborative model is refitted at (sorted); a request before
            the first one has no collaborative model.
        cf_config: how it is fitted.
        state_config: how a user state is made.
        spec: the features the candidates are read for.
        bucket_days: signals are read as of the start of the request's bucket of this length.
        windows: the signals' popularity windows.
    """

    def __init__(
        self,
        log_: Interactions,
        catalog: Catalog,
        *,
        refits: Sequence[int],
        cf_config: cf.CFConfig,
        state_config: StateConfig,
        spec: FeatureSpec,
        bucket_days: float = 1.0,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        max_history: int = 200,
    ):
        self.log, self.catalog, self.spec = log_, catalog, spec
        self.refits = sorted(int(r) for r in refits)
        self.cf_config, self.state_config = cf_config, state_config
        self.bucket_ms = max(int(bucket_days * DAY_MS), 1)
        self.windows = tuple(windows)
        self.max_history = max_history
        self.by_user = log_.by_user()
        self._models: dict[int, cf.CFModel | None] = {}
        self._factors: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._signals: dict[int, dict[str, np.ndarray]] = {}
        self._counts: dict[int, np.ndarray] = {}
        # catalog position -> item code in the log (for signals), -1 when the log never saw it
        log_index = {item: n for n, item in enumerate(log_.item_ids)}
        self._log_code = np.array([log_index.get(i, -1) for i in catalog.ids], dtype=np.int64)

    # --- what was known when ----------------------------------------------------------------

    def refit_before(self, t_ms: int) -> int | None:
        """The latest refit instant at or before ``t_ms``."""
        earlier = [r for r in self.refits if r <= t_ms]
        return earlier[-1] if earlier else None

    def model(self, t_ms: int) -> cf.CFModel | None:
        """The collaborative model a request at ``t_ms`` sees (fitted before its refit instant)."""
        r = self.refit_before(t_ms)
        if r is None:
            return None
        if r not in self._models:
            try:
                self._models[r] = cf.fit(self.log, self.cf_config, before_ms=r)
            except ValueError:  # nothing liked yet
                self._models[r] = None
        return self._models[r]

    def _catalog_factors(self, model: cf.CFModel) -> tuple[np.ndarray, np.ndarray]:
        """The model's factors in catalog order (zeros where none) and which rows have one."""
        if model.before_ms not in self._factors:
            out = np.zeros((len(self.catalog), model.factors.shape[1]), dtype=np.float32)
            has = np.zeros(len(self.catalog), dtype=bool)
            for item, row in zip(model.item_ids, model.factors):
                n = self.catalog.index(item)
                if n is not None:
                    out[n], has[n] = row, True
            self._factors[model.before_ms] = (out, has)
        return self._factors[model.before_ms]

    def bucket(self, t_ms: int) -> int:
        return (int(t_ms) // self.bucket_ms) * self.bucket_ms

    def signals(self, t_ms: int) -> dict[str, np.ndarray]:
        """Every catalog item's signals as of the start of ``t_ms``'s bucket."""
        b = self.bucket(t_ms)
        if b not in self._signals:
            self._signals[b] = signals_table(self.log, self.catalog.ids, as_of_ms=b, windows=self.windows)
        return self._signals[b]

    def interaction_counts(self, t_ms: int) -> np.ndarray:
        """Per item code of the log: how many interactions it had before ``t_ms``."""
        if t_ms not in self._counts:
            if len(self._counts) > 64:
                self._counts.clear()
            end = self.log.count_before(t_ms)
            mask = self.log.interaction[:end]
            self._counts[t_ms] = np.bincount(self.log.item[:end][mask], minlength=len(self.log.item_ids))
        return self._counts[t_ms]

    def history(self, user: str, cut_ms: int) -> list[dict[str, Any]]:
        """The user's newest ``max_history`` interactions before ``cut_ms``, newest first."""
        rows = self.by_user.get(user, np.zeros(0, dtype=np.int64))
        before = rows[self.log.timestamp[rows] < cut_ms]
        events = [self.log.event(int(n)) for n in before if self.log.interaction[n]]
        return events[::-1][: self.max_history]

    def state(self, user: str, cut_ms: int) -> UserState:
        model = self.model(cut_ms)
        return compute_state(
            self.history(user, cut_ms),
            _Items(self.catalog, model),
            config=self.state_config,
            cf_meta=CFMeta.of(model) if model is not None else None,
        )

    def future_likes(self, user: str, start_ms: int, end_ms: int) -> dict[str, int]:
        """Item -> the time of the user's first positive event on it in ``[start_ms, end_ms]``."""
        rows = self.by_user.get(user, np.zeros(0, dtype=np.int64))
        out: dict[str, int] = {}
        for n in rows:
            t = int(self.log.timestamp[n])
            if start_ms <= t <= end_ms and self.log.positive[n]:
                out.setdefault(self.log.item_ids[self.log.item[n]], t)
        return out

    # --- one request ------------------------------------------------------------------------

    def replay(self, user: str, cut_ms: int, pool: PoolConfig) -> Replayed | None:
        """The request ``user`` would have made at ``cut_ms`` (profile path); None without history."""

        # Thousands of small products: one BLAS thread each is faster than two that contend.
        with threadpool_limits(1, "blas"):
            return self._replay(user, cut_ms, pool)

    def _replay(self, user: str, cut_ms: int, pool: PoolConfig) -> Replayed | None:
        state = self.state(user, cut_ms)
        if not state.history:
            return None
        catalog = self.catalog
        eligible = self.eligible(state.seen)
        signals = self.signals(cut_ms)
        order: dict[str, list[int]] = {}
        if state.profile_vector is not None and pool.text:
            p = np.asarray(state.profile_vector, dtype=np.float64)
            order["text"] = top_rows(catalog.vectors @ p, eligible & catalog.has_vector, pool.text)
        model = self.model(cut_ms)
        factors, has_cf = self._catalog_factors(model) if model is not None else (None, None)
        if factors is not None and state.cf_vector is not None and pool.cf:
            order["cf"] = top_rows(factors @ np.asarray(state.cf_vector, dtype=np.float64), eligible & has_cf, pool.cf)
        for name in SCORE_MAPS:
            scores, limit = state.scores(name), getattr(pool, name)
            if scores and limit:
                order[name] = [
                    n for n in (catalog.index(i) for i in top_scores(scores, limit)) if n is not None and eligible[n]
                ]
        for name, limit in (("popular", pool.popular), ("trending", pool.trending)):
            ranks = signals.get(f"{name}_rank")
            if ranks is not None and limit:
                hit = np.flatnonzero(eligible & (ranks <= limit))
                order[name] = hit[np.argsort(ranks[hit], kind="stable")].tolist()
        rows = np.array(sorted({n for members in order.values() for n in members}), dtype=np.int64)
        batch = self.candidate_batch(rows, cut_ms)
        context = RequestContext(now_ms=int(cut_ms), path="profile", state=state)
        return Replayed(
            user, int(cut_ms), state, batch, context, {s: [catalog.ids[n] for n in rows] for s, rows in order.items()}
        )

    def eligible(self, seen: frozenset[str]) -> np.ndarray:
        """Which catalog rows a request may return: available and not seen."""
        out = self.catalog.available.copy()
        for item in seen:
            n = self.catalog.index(item)
            if n is not None:
                out[n] = False
        return out

    def candidate_batch(self, rows: np.ndarray, t_ms: int) -> CandidateBatch:
        """The catalog ``rows`` (positions) as a request at ``t_ms`` sees them: the collaborative
        vectors of the model of its refit instant, the signals of its bucket."""
        catalog, model = self.catalog, self.model(t_ms)
        factors, has_cf = self._catalog_factors(model) if model is not None else (None, None)
        signals = self.signals(t_ms)
        dims = factors.shape[1] if factors is not None else 0
        return CandidateBatch(
            item_ids=tuple(catalog.ids[n] for n in rows),
            vectors=catalog.vectors[rows],
            has_vector=catalog.has_vector[rows],
            cf_vectors=factors[rows] if factors is not None else np.zeros((len(rows), dims), dtype=np.float32),
            has_cf=has_cf[rows] if has_cf is not None else np.zeros(len(rows), dtype=bool),
            signals={k: v[rows] for k, v in signals.items()},
            numeric={f: catalog.numeric(f)[rows] for f in (*self.spec.item_numeric, *self.spec.item_dates)},
            facets={f: [catalog.facet(f)[n] for n in rows] for f in self.spec.facets},
        )


def top_scores(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` items of a user's score map (:data:`~vecrank.rank.state.SCORE_MAPS`) with the highest
    positive scores, ties by id: the ids a pool's ``cooc`` / ``seq`` / ``ease`` source asks for (the request's
    filters then drop some, in Elasticsearch as here)."""
    ranked = sorted(i for i, s in scores.items() if s > 0)
    ranked.sort(key=scores.__getitem__, reverse=True)  # stable: equal scores stay in id order
    return ranked[:k]


def _numbers(values: Sequence[Any]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[i] = v
    return out


def top_rows(scores: np.ndarray, mask: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores where ``mask``, best first, ties by index (= item id)."""
    idx = np.flatnonzero(mask)
    if not len(idx):
        return []
    s = scores[idx].astype(np.float64)
    if len(idx) > k:
        part = np.argpartition(-s, k - 1)[:k]
        cutoff = s[part].min()
        keep = np.flatnonzero(s >= cutoff)  # every tie at the cutoff, then ordered by id
        idx, s = idx[keep], s[keep]
    order = np.lexsort((idx, -s))[:k]
    return idx[order].tolist()
