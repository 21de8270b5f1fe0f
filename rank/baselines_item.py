"""Item-to-item collaborative-filtering baselines: EASE and item-based kNN.

Same front and rules as :mod:`vecrank.rank.baselines` (string ids, ties by item id, the
``positive`` rule, ``exclude_seen``, an empty list for a user with nothing to score with). Both
learn an item × item weight matrix ``W`` from the binary user × item matrix ``X`` of positive
training interactions (a cell is 1 however many positive events the user had on the item; only
items with at least one positive interaction are in it, so items the fit never saw are never
recommended), and score a user as ``x_u W``, with ``x_u`` the indicator of the items the user
liked: in training for :meth:`~Baseline.recommend`, in the given events for
:meth:`~Baseline.recommend_history`.

* :class:`EASE` — Steck, "Embarrassingly Shallow Autoencoders for Sparse Data" (WWW 2019): the
  dense closed-form solution of a ridge regression of each item on all the others.
* :class:`ItemKNN` — item-based top-k nearest neighbours (Sarwar et al., WWW 2001; Deshpande &
  Karypis, TOIS 2004): cosine similarity, each item keeping its ``neighbours`` most similar items.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import sparse

from vecrank.ingest.ease import ease_weights
from vecrank.rank.baselines import _MIN_SCORE, Baseline, _top_k, _UserItemIndex
from vecrank.rank.split import PositiveRule

log = logging.getLogger(__name__)

_BLOCK_CELLS = 2_000_000  # similarity cells per block in ItemKNN's fit: ~16 MB per float64 array


class _ItemToItem(Baseline):
    """The common part: the positive user × item matrix, and ranking through ``_score``."""

    _floor = _MIN_SCORE  # items must score above this to be recommended

    def _index_positives(self, events: list[Mapping[str, Any]]) -> sparse.csr_matrix:
        self._index = _UserItemIndex(
            ((str(e["user_id"]), str(e["item_id"])) for e in events if self.positive(e)), dtype=np.float64
        )
        if self._index.matrix.nnz == 0:
            raise ValueError(f"{self.name}: no positive interactions in the training events")
        x = self._index.matrix
        x.sort_indices()
        self._x = x
        return x

    @property
    def items(self) -> list[str]:
        """The item ids the model knows, in score order."""
        return self._index.items

    def scores(self, history: Iterable[str]) -> np.ndarray:
        """Scores over the fitted items (in :attr:`items` order) for the items a user liked.

        Args:
            history: item ids; repeats count once, ids the model does not know are ignored.

        Returns:
            One score per item in :attr:`items`.
        """
        return self._score(np.asarray(sorted(set(self._index.item_rows(history))), dtype=np.int64))

    @abstractmethod
    def _score(self, cols: np.ndarray) -> np.ndarray:
        """Scores over the fitted items for the liked items at columns ``cols`` (sorted, distinct)."""

    def _rank_cols(self, cols: np.ndarray, k: int, exclude: set[str]) -> list[str]:
        if not len(cols):
            return []
        return _top_k(self._score(cols), self._index.items, k, self._index.item_rows(exclude), floor=self._floor)

    def _ranked(self, user_id: str, k: int, exclude: set[str]) -> list[str]:
        row = self._index.user_index.get(user_id)
        if row is None:
            return []
        x = self._x
        return self._rank_cols(x.indices[x.indptr[row] : x.indptr[row + 1]].astype(np.int64), k, exclude)

    def _ranked_history(self, events: list[Mapping[str, Any]], k: int, exclude: set[str]) -> list[str]:
        liked = {str(e["item_id"]) for e in events if self.positive(e)}
        return self._rank_cols(np.asarray(sorted(set(self._index.item_rows(liked))), dtype=np.int64), k, exclude)


class EASE(_ItemToItem):
    """Embarrassingly shallow autoencoder (Steck, WWW 2019): a closed-form item × item regression.

    ``B = argmin ||X − XB||² + λ||B||²`` subject to ``diag(B) = 0``, with ``X`` the binary user ×
    item matrix of positive training interactions (distinct users); see :func:`ease_weights`. A
    user's score for item ``j`` is ``Σ_i B_ij`` over the items ``i`` they liked. Weights can be
    negative: every fitted item is ranked, best first, scores within 1e-9 of zero counting as zero
    so that items the history says nothing about tie (and go by id) instead of by rounding noise.
    A user with no liked item the model knows gets an empty list.

    Cost: ``B`` is dense, ``n² × 8`` bytes for ``n`` fitted items (about 0.3 GB for 6,300 items,
    3.2 GB at the default ``max_items``), kept after the fit; the fit briefly needs about twice
    that and ``n³`` flops for the inverse, or ``m³ + nnz · n`` with fewer users ``m`` than items.

    Args:
        l2: the L2 weight λ; the default, 500, is the value the paper reports for ML-20M and Netflix.
        positive: what counts as a positive interaction.
        max_items: fitting more items than this raises ValueError (the dense matrices above).
    """

    _floor = -np.inf

    def __init__(self, l2: float = 500.0, positive: PositiveRule | None = None, *, max_items: int = 20_000):
        super().__init__(positive)
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0, not {l2}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, not {max_items}")
        self.l2, self.max_items = float(l2), int(max_items)
        self.name = "ease"

    def _fit(self, events: list[Mapping[str, Any]]) -> None:
        x = self._index_positives(events)
        if x.shape[1] > self.max_items:
            raise ValueError(
                f"{self.name}: {x.shape[1]} items have a positive interaction, more than max_items="
                f"{self.max_items}; the dense item x item matrix would take "
                f"{x.shape[1] ** 2 * 8 / 2**30:.1f} GiB (raise max_items, or filter the catalog)"
            )
        self._weights = ease_weights(x, self.l2)
        self._weights.flags.writeable = False
        log.debug("%s: %d users x %d items, %d positive cells, l2=%g", self.name, *x.shape, x.nnz, self.l2)

    @property
    def weights(self) -> np.ndarray:
        """``B``, item × item in :attr:`items` order (read-only)."""
        return self._weights

    def _score(self, cols: np.ndarray) -> np.ndarray:
        scores = self._weights[cols].sum(axis=0)
        scores[np.abs(scores) < _MIN_SCORE] = 0.0
        return scores


def item_knn_similarities(x: sparse.spmatrix, neighbours: int) -> sparse.csr_matrix:
    """Cosine similarities between the columns of ``x``, each row cut to its ``neighbours`` largest.

    ``sim(i, j) = c_ij / sqrt(n_i · n_j)``, ``c_ij`` the number of rows with both columns set and
    ``n_i`` the number with ``i`` set (``x`` binary). Row ``i`` keeps the ``neighbours`` highest
    positive similarities to other items, ties by column index; ``sim(i, i)`` is never kept. Built
    in blocks of rows, so memory grows with the kept entries, not the square of the catalog.

    Args:
        x: users × items, binary; every column non-empty.
        neighbours: how many to keep per row.

    Returns:
        items × items, CSR, float64 (not symmetric once cut).
    """
    x = sparse.csr_matrix(x, dtype=np.float64)
    n_items = x.shape[1]
    counts = np.asarray(x.sum(axis=0)).ravel()
    xt = x.T.tocsr()
    keep_n = min(neighbours, n_items - 1)
    if keep_n < 1:
        return sparse.csr_matrix((n_items, n_items))
    block = max(1, _BLOCK_CELLS // max(n_items, 1))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        # c / sqrt(n_i n_j): the integer product first keeps sim(i, j) == sim(j, i) bit for bit.
        sims = (xt[start:stop] @ x).toarray() / np.sqrt(np.outer(counts[start:stop], counts))
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if keep_n < n_items - 1:
            kth = np.partition(sims, n_items - keep_n, axis=1)[:, n_items - keep_n][:, None]
            above = sims > kth
            tied = sims == kth
            # Of the entries equal to the k-th value, the lowest columns fill the remaining places.
            room = keep_n - above.sum(axis=1, keepdims=True)
            keep = above | (tied & (np.cumsum(tied, axis=1) <= room))
            keep &= sims > 0
        else:
            keep = sims > 0
        r, c = np.nonzero(keep)
        rows.append(r + start)
        cols.append(c)
        vals.append(sims[r, c])
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
    )


class ItemKNN(_ItemToItem):
    """Item-based k nearest neighbours on cosine similarity.

    ``sim(i, j)`` is the cosine between the binary user columns of ``i`` and ``j`` (distinct users
    who liked each; see :func:`item_knn_similarities`), and each item ``i`` keeps its
    ``neighbours`` most similar items ``N(i)``. The direction is Deshpande & Karypis's: a user's
    score for ``j`` is ``Σ sim(i, j)`` over the items ``i`` they liked **with j in N(i)**, i.e. the
    summed rows of the liked items' neighbour lists (Sarwar et al.'s prediction instead sums over
    the liked items in ``N(j)``). Only items with a positive score are recommended, so lists can be
    shorter than ``k``; the rows are not normalised. Unlike
    :class:`~vecrank.rank.baselines.CoOccurrence`, every liked item counts, however old.

    Args:
        neighbours: how many similar items each item keeps.
        positive: what counts as a positive interaction.
    """

    def __init__(self, neighbours: int = 100, positive: PositiveRule | None = None):
        super().__init__(positive)
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, not {neighbours}")
        self.neighbours = int(neighbours)
        self.name = f"item-knn-{self.neighbours}"

    def _fit(self, events: list[Mapping[str, Any]]) -> None:
        x = self._index_positives(events)
        self._sims = item_knn_similarities(x, self.neighbours)
        log.debug("%s: %d users x %d items, %d similarities kept", self.name, *x.shape, self._sims.nnz)

    @property
    def similarities(self) -> sparse.csr_matrix:
        """Row ``i``: ``sim(i, j)`` for ``j`` in ``N(i)``, items in :attr:`items` order."""
        return self._sims

    def _score(self, cols: np.ndarray) -> np.ndarray:
        return np.asarray(self._sims[cols].sum(axis=0)).ravel()
