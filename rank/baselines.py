"""Baselines that vecrank's ranker is measured against, fitted on the training events only.

Each has the same front: ``fit(train_events) -> self``, ``recommend(user_id, k, exclude_seen=True)
-> [item_id, ...]``, ``recommend_all(user_ids, k, exclude_seen=True) -> {user: [...]}`` and a
``name`` for reports. ``exclude_seen`` leaves out items the user interacted with in training (any
event but an impression, as :mod:`vecrank.rank.split` defines it). What counts as liking an item
is the ``positive`` rule (default :func:`vecrank.rank.split.is_positive`: rating ≥ 4, click, cart,
purchase). Ids are strings. Ties are broken by item id, so every list is deterministic.

* :class:`MostPopular` — positive interactions in the last ``window_days`` before the training
  cutoff; the same list for everyone.
* :class:`CoOccurrence` — item-to-item: items liked by the same users, cosine-normalised, scored
  against the user's most recent liked items.
* :class:`ALS` — matrix factorisation with the ``implicit`` library's alternating least squares.
* :class:`~vecrank.rank.baselines_item.EASE` (in :mod:`vecrank.rank.baselines_item`) — Steck's
  closed-form item-to-item linear autoencoder.
* :class:`~vecrank.rank.baselines_item.ItemKNN` (same module) — item-based k nearest neighbours
  on cosine similarity.

A user the model knows nothing about gets the popularity list from :class:`MostPopular` and an
empty list from the personalised baselines (they have nothing to score with); the evaluation
counts an empty list as a miss.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from vecrank.interactions import DAY_MS
from vecrank.rank.split import PositiveRule, check_events, is_interaction, is_positive

if TYPE_CHECKING:
    from implicit.cpu.als import AlternatingLeastSquares

log = logging.getLogger(__name__)

IMPLICIT_VERSION = "0.7.3"  # the version the ALS baseline was written and tested against
_MIN_SCORE = 1e-9  # below any real co-occurrence score (>= 1 / #users), above rounding noise
_FILTERED_SCORE = float(np.finfo(np.float32).min)  # implicit's score for a filtered-out item


class Baseline(ABC):
    """The common front. Subclasses fill ``_fit`` and ``_ranked``."""

    name: str = "baseline"

    def __init__(self, positive: PositiveRule | None = None):
        self.positive = positive or is_positive
        self._seen: dict[str, set[str]] = {}
        self._fitted = False

    def fit(self, train_events: Iterable[Mapping[str, Any]]) -> Baseline:
        """Learn from the training events (dicts with user_id, item_id, type, value, timestamp ms).

        Args:
            train_events: the training side of a time split; nothing from the test period.

        Returns:
            self.
        """
        events = check_events(train_events)
        seen: dict[str, set[str]] = defaultdict(set)
        for e in events:
            if is_interaction(e):
                seen[str(e["user_id"])].add(str(e["item_id"]))
        self._seen = dict(seen)
        self._fit(events)
        self._fitted = True
        return self

    @abstractmethod
    def _fit(self, events: list[Mapping[str, Any]]) -> None: ...

    @abstractmethod
    def _ranked(self, user_id: str, k: int, exclude: set[str]) -> list[str]:
        """Up to ``k`` item ids for the user, best first, none of them in ``exclude``."""

    def recommend(self, user_id: Any, k: int, exclude_seen: bool = True) -> list[str]:
        """Top ``k`` item ids for one user, best first (fewer when the model has fewer to offer).

        Args:
            user_id: the user; an unknown user is not an error (see the module docstring).
            k: how many.
            exclude_seen: leave out items the user interacted with in training.

        Returns:
            Item ids.
        """
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() first")
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        user = str(user_id)
        return self._ranked(user, k, self._seen.get(user, set()) if exclude_seen else set())

    def recommend_history(self, history: Iterable[Mapping[str, Any]], k: int, exclude_seen: bool = True) -> list[str]:
        """Top ``k`` for a user described by their own events instead of the training table.

        Offline evaluation at each user's own cut time uses this: the model is fitted on what
        everyone did before a common instant, and each user's history up to their cut is folded
        in at query time (ALS recomputes the user's factors), without refitting.

        Args:
            history: the user's events (user_id, item_id, type, value, timestamp), any order.
            k: how many.
            exclude_seen: leave out the items of ``history``.

        Returns:
            Item ids, best first.
        """
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() first")
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        events = sorted(history, key=lambda e: int(e["timestamp"]))
        exclude = {str(e["item_id"]) for e in events if is_interaction(e)} if exclude_seen else set()
        return self._ranked_history(events, k, exclude)

    @abstractmethod
    def _ranked_history(self, events: list[Mapping[str, Any]], k: int, exclude: set[str]) -> list[str]:
        """Like ``_ranked``, for a user given by ``events`` (oldest first)."""

    def recommend_all(self, user_ids: Iterable[Any], k: int, exclude_seen: bool = True) -> dict[str, list[str]]:
        """:meth:`recommend` for each user.

        Args:
            user_ids: the users.
            k: how many per user.
            exclude_seen: leave out items each user interacted with in training.

        Returns:
            user id -> item ids.
        """
        return {str(u): self.recommend(u, k, exclude_seen) for u in user_ids}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _top_k(
    scores: np.ndarray, item_ids: Sequence[str], k: int, exclude_idx: Sequence[int] = (), floor: float = _MIN_SCORE
) -> list[str]:
    """Highest-scoring items with a score above ``floor`` (by default: a non-negligible positive
    one; ``-inf``: any); ties by index (ids are sorted)."""
    scores = scores.astype(np.float64, copy=True)
    if len(exclude_idx):
        scores[np.asarray(exclude_idx, dtype=np.int64)] = -np.inf
    order = np.argsort(-scores, kind="stable")
    keep = order[scores[order] > floor][:k]
    return [item_ids[i] for i in keep]


class MostPopular(Baseline):
    """The items with the most positive interactions in a recent window, the same for everyone.

    Popularity counts positive events (not distinct users) with ``as_of - window < timestamp <=
    as_of``, where ``as_of`` is the newest training timestamp unless given. Ties are broken by the
    all-time positive count, then by item id; items without positive events fill the tail in id
    order, so a list is as long as the training catalog allows.

    Args:
        window_days: the window length.
        positive: what counts as a positive interaction.
        as_of: the end of the window in epoch ms; None: the newest training timestamp.
    """

    def __init__(self, window_days: float = 30.0, positive: PositiveRule | None = None, *, as_of: int | None = None):
        super().__init__(positive)
        if not window_days > 0:
            raise ValueError(f"window_days must be > 0, not {window_days}")
        self.window_days, self.as_of = window_days, as_of
        self.name = f"most-popular-{window_days:g}d"
        self._ranking: list[str] = []
        self.fitted_as_of: int | None = None  # the window's end actually used, set by fit()

    def _fit(self, events: list[Mapping[str, Any]]) -> None:
        as_of = int(self.as_of) if self.as_of is not None else max((int(e["timestamp"]) for e in events), default=0)
        start = as_of - self.window_days * DAY_MS
        recent: Counter[str] = Counter()
        total: Counter[str] = Counter()
        items: set[str] = set()
        for e in events:
            item = str(e["item_id"])
            items.add(item)
            if self.positive(e):
                total[item] += 1
                if start < int(e["timestamp"]) <= as_of:
                    recent[item] += 1
        self._ranking = sorted(items, key=lambda i: (-recent[i], -total[i], i))
        self.fitted_as_of = as_of
        log.debug("%s: %d items, %d popular in the window ending %d", self.name, len(items), len(recent), as_of)

    def _ranked_history(self, events: list[Mapping[str, Any]], k: int, exclude: set[str]) -> list[str]:
        return self._ranked("", k, exclude)

    def _ranked(self, user_id: str, k: int, exclude: set[str]) -> list[str]:
        out = []
        for item in self._ranking:
            if item not in exclude:
                out.append(item)
                if len(out) == k:
                    break
        return out


class _UserItemIndex:
    """Sorted id <-> row/column maps and the binary user × item matrix of positive interactions."""

    def __init__(self, pairs: Iterable[tuple[str, str]], counts: bool = False, dtype: type = np.float32):
        cell: Counter[tuple[str, str]] = Counter(pairs)
        self.users = sorted({u for u, _ in cell})
        self.items = sorted({i for _, i in cell})
        self.user_index = {u: n for n, u in enumerate(self.users)}
        self.item_index = {i: n for n, i in enumerate(self.items)}
        rows = np.fromiter((self.user_index[u] for u, _ in cell), dtype=np.int64, count=len(cell))
        cols = np.fromiter((self.item_index[i] for _, i in cell), dtype=np.int64, count=len(cell))
        data: np.ndarray = (
            np.fromiter(cell.values(), dtype=dtype, count=len(cell)) if counts else np.ones(len(cell), dtype)
        )
        self.matrix = sparse.csr_matrix((data, (rows, cols)), shape=(len(self.users), len(self.items)))

    def item_rows(self, items: Iterable[str]) -> list[int]:
        return [self.item_index[i] for i in items if i in self.item_index]


class CoOccurrence(Baseline):
    """Item-to-item co-occurrence: "users who liked what you liked recently also liked ...".

    ``sim(i, j) = c_ij / sqrt(n_i · n_j)``, with ``c_ij`` the number of users who liked both ``i``
    and ``j`` in training and ``n_i`` the number who liked ``i`` (cosine between the items' user
    columns; ``sim(i, i)`` is not used). A user's score for ``j`` is ``Σ sim(i, j)`` over their
    ``max_history`` most recently liked distinct items ``i``. Only items with a positive score are
    recommended.

    The item × item matrix is never built: with ``X`` the binary user × item matrix and
    ``D = diag(n)``, the scores are ``D^-1/2 Xᵀ X D^-1/2 h`` for the history indicator ``h``,
    minus ``h`` itself (the diagonal), i.e. two sparse products per user, whose cost grows with
    the number of events instead of the square of the catalog.

    Args:
        max_history: how many of the user's latest liked items to score from.
        positive: what counts as a positive interaction.
    """

    def __init__(self, max_history: int = 50, positive: PositiveRule | None = None):
        super().__init__(positive)
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, not {max_history}")
        self.max_history = max_history
        self.name = "co-occurrence"

    def _fit(self, events: list[Mapping[str, Any]]) -> None:
        liked = [e for e in events if self.positive(e)]
        # float64: the diagonal is removed by subtraction, which must leave an exact-enough zero.
        self._index = _UserItemIndex(((str(e["user_id"]), str(e["item_id"])) for e in liked), dtype=np.float64)
        x = self._index.matrix
        self._x = x
        self._xt = x.T.tocsr()
        n = np.asarray(x.sum(axis=0)).ravel()
        self._inv_sqrt_n = np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1.0)), 0.0)
        # Each user's liked items, newest first, distinct: the history scored at recommend time.
        recent: dict[str, list[str]] = defaultdict(list)
        for e in sorted(liked, key=lambda e: -int(e["timestamp"])):  # stable: ties keep input order
            recent[str(e["user_id"])].append(str(e["item_id"]))
        self._history = {u: list(dict.fromkeys(items))[: self.max_history] for u, items in recent.items()}
        log.debug("%s: %d users x %d items, %d positive cells", self.name, x.shape[0], x.shape[1], x.nnz)

    def scores(self, history: Iterable[str]) -> np.ndarray:
        """Scores over the training items (in ``items`` order) for a history of item ids.

        Args:
            history: item ids the user liked; unknown ids are ignored.

        Returns:
            One score per item in :attr:`items`.
        """
        h = np.zeros(len(self._index.items))
        h[self._index.item_rows(history)] = 1.0
        weighted = h * self._inv_sqrt_n
        shared = self._x @ weighted  # per user: how much of the history they liked, weighted
        return self._inv_sqrt_n * (self._xt @ shared) - h

    @property
    def items(self) -> list[str]:
        """The item ids the model knows, in score order."""
        return self._index.items

    def _ranked(self, user_id: str, k: int, exclude: set[str]) -> list[str]:
        history = self._history.get(user_id)
        if not history:
            return []
        return _top_k(self.scores(history), self._index.items, k, self._index.item_rows(exclude))

    def _ranked_history(self, events: list[Mapping[str, Any]], k: int, exclude: set[str]) -> list[str]:
        liked = [str(e["item_id"]) for e in reversed(events) if self.positive(e)]
        history = list(dict.fromkeys(liked))[: self.max_history]
        if not history:
            return []
        return _top_k(self.scores(history), self._index.items, k, self._index.item_rows(exclude))


def _load_implicit_als() -> type[AlternatingLeastSquares]:
    try:
        # lazy: implicit's ALS takes 0.6 s to import; only a fit needs it
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError as exc:
        raise ImportError(
            f"the ALS baseline needs the 'implicit' package (pip install implicit=={IMPLICIT_VERSION}); "
            f"importing it failed: {exc}"
        ) from exc
    return AlternatingLeastSquares


class ALS(Baseline):
    """Implicit-feedback matrix factorisation: ``implicit``'s alternating least squares, on the CPU.

    The input is the user × item matrix of positive training interactions, each cell the number of
    positive events (``implicit`` scales it by ``alpha`` into the confidence). Recommendations are
    the items with the highest ``user_factor · item_factor``, through ``implicit``'s own top-k with
    the user's seen items filtered. Users without a positive training interaction have no factors
    and get an empty list.

    Args:
        factors: latent dimensions.
        regularization: L2 weight.
        iterations: ALS sweeps.
        alpha: confidence scale for positive cells.
        seed: initialisation seed (results are deterministic for a given seed).
        positive: what counts as a positive interaction.
        num_threads: ``implicit``'s worker threads; 0: all cores.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 1.0,
        seed: int = 0,
        positive: PositiveRule | None = None,
        *,
        num_threads: int = 0,
    ):
        super().__init__(positive)
        self.factors, self.regularization, self.iterations = factors, regularization, iterations
        self.alpha, self.seed, self.num_threads = alpha, seed, num_threads
        self.name = "als-implicit"
        self.model: AlternatingLeastSquares | None = None

    def _fit(self, events: list[Mapping[str, Any]]) -> None:
        als_class = _load_implicit_als()
        self._index = _UserItemIndex(
            ((str(e["user_id"]), str(e["item_id"])) for e in events if self.positive(e)), counts=True
        )
        if self._index.matrix.nnz == 0:
            raise ValueError("ALS: no positive interactions in the training events")
        # implicit parallelises over users itself; a multi-threaded BLAS underneath it only
        # oversubscribes the cores (implicit warns about exactly this).
        with threadpool_limits(1, "blas"):
            self.model = als_class(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=self.num_threads,
            )
            self.model.fit(self._index.matrix, show_progress=False)
        # Seen items as a CSR row per model user, for implicit's filter.
        rows, cols = [], []
        for u, row in self._index.user_index.items():
            for c in self._index.item_rows(self._seen.get(u, ())):
                rows.append(row)
                cols.append(c)
        self._seen_matrix = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=self._index.matrix.shape
        )
        log.debug("%s: %d users x %d items", self.name, *self._index.matrix.shape)

    def _recommend_rows(self, rows: np.ndarray, k: int, exclude_seen: bool) -> list[list[str]]:
        assert self.model is not None
        n = min(k, len(self._index.items))
        ids, scores = self.model.recommend(rows, self._seen_matrix[rows], N=n, filter_already_liked_items=exclude_seen)
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        out = []
        for row, r_ids, r_scores in zip(rows, ids, scores):
            # When N reaches past what the filter leaves, implicit fills the tail with the
            # filtered items at -FLT_MAX (or -1 ids): drop those, and the seen items by id too.
            seen = (
                set(self._seen_matrix.indices[self._seen_matrix.indptr[row] : self._seen_matrix.indptr[row + 1]])
                if exclude_seen
                else set()
            )
            out.append(
                [
                    self._index.items[i]
                    for i, s in zip(r_ids, r_scores)
                    if i >= 0 and s > _FILTERED_SCORE and i not in seen
                ]
            )
        return out

    def _ranked(self, user_id: str, k: int, exclude: set[str]) -> list[str]:
        row = self._index.user_index.get(user_id)
        if row is None:
            return []
        return self._recommend_rows(np.array([row]), k, bool(exclude))[0]

    def _ranked_history(self, events: list[Mapping[str, Any]], k: int, exclude: set[str]) -> list[str]:
        assert self.model is not None
        counts = Counter(str(e["item_id"]) for e in events if self.positive(e))
        cols = self._index.item_rows(counts)
        if not cols:
            return []
        values = np.array([counts[self._index.items[c]] for c in cols], dtype=np.float32)
        user_items = sparse.csr_matrix((values, ([0] * len(cols), cols)), shape=(1, len(self._index.items)))
        skip = np.asarray(sorted(self._index.item_rows(exclude)), dtype=np.int32)
        n = min(k, len(self._index.items) - len(skip))
        if n <= 0:
            return []

        with threadpool_limits(1, "blas"):
            ids, scores = self.model.recommend(
                0,
                user_items,
                N=n,
                filter_already_liked_items=False,
                filter_items=skip if len(skip) else None,
                recalculate_user=True,
            )
        return [
            self._index.items[i]
            for i, s in zip(np.atleast_1d(ids), np.atleast_1d(scores))
            if i >= 0 and s > _FILTERED_SCORE
        ]

    def recommend_all(self, user_ids: Iterable[Any], k: int, exclude_seen: bool = True) -> dict[str, list[str]]:
        """:meth:`recommend` for each user, in one batched call to ``implicit``."""
        if not self._fitted:
            raise RuntimeError(f"{self.name}: call fit() first")
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        users = [str(u) for u in user_ids]
        out: dict[str, list[str]] = {u: [] for u in users}
        known = [u for u in users if u in self._index.user_index]
        if known:
            rows = np.array([self._index.user_index[u] for u in known])
            for u, items in zip(known, self._recommend_rows(rows, k, exclude_seen)):
                out[u] = items
        return out

    def item_factors(self) -> dict[str, np.ndarray]:
        """Item id -> latent vector, for inspection and diversity metrics."""
        assert self.model is not None
        factors = np.asarray(self.model.item_factors)
        return {i: factors[n] for i, n in self._index.item_index.items()}
