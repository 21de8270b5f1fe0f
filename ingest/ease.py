"""EASE item-to-item weights (Steck, WWW 2019), fitted from the events and listed per item.

EASE is a ridge regression of every item on all the others, in closed form (:func:`ease_weights`):
a user's score for ``j`` is ``Σ_i B_ij`` over the items ``i`` they liked. It is one of the
strongest collaborative baselines on public catalogs, so the ranker has it as an ingredient:
``vecrank cf fit`` lists, for each item ``i``, the items ``j`` with the largest positive
``B_ij`` (:func:`ease_lists`), stored beside its co-occurrence list in the fit's lists index
(:func:`vecrank.ingest.cf.lists_index_name`), and a user's
``ease`` score sums them over their newest likes as events arrive
(:func:`vecrank.ingest.cf.neighbour_scores`), the way the co-occurrence score does.

The matrix is dense (``n × n`` float64 for ``n`` items), so only the ``max_items`` items with the
most distinct likers enter it (3.2 GB at 20,000); the others get no EASE score and rely on the
other sources. Cutting each row to its strongest ``listed`` positive weights drops the negative
ones (items that people who liked ``i`` tend not to like), which the ranker sees only as a
missing score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse


def ease_weights(x: sparse.spmatrix, l2: float) -> np.ndarray:
    """EASE's item × item weights for a user × item matrix, in closed form (Steck 2019).

    ``P = (XᵀX + λI)⁻¹`` and ``B = I − P · diag(1 / diag(P))``, that is ``B_ij = −P_ij / P_jj``
    off the diagonal and ``B_jj = 0``. With fewer users ``m`` than items ``n`` the inverse is taken
    through the Woodbury identity, ``λP = I − Xᵀ(λI + XXᵀ)⁻¹X``, which inverts an ``m × m`` matrix
    instead of an ``n × n`` one (the constant ``λ`` cancels in ``B``), the same matrix up to
    rounding; on MovieLens latest-small (609 × 6,298) that is about 0.7 s instead of 12.

    Args:
        x: users × items, usually binary.
        l2: the L2 weight λ, > 0.

    Returns:
        ``B``, float64, ``n × n``.
    """
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0, not {l2}")
    x = sparse.csr_matrix(x, dtype=np.float64)
    n_users, n_items = x.shape
    if n_users < n_items:
        inner = (x @ x.T).toarray()
        inner[np.diag_indices_from(inner)] += l2
        # (λI + XXᵀ)⁻¹ X, dense m × n; transposes keep the sparse matrix on the left of @.
        solved = np.ascontiguousarray((x.T @ np.linalg.inv(inner)).T)
        p = np.asarray(x.T @ solved)
        np.negative(p, out=p)
        p[np.diag_indices_from(p)] += 1.0  # λP, not P: the scale drops out below
    else:
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += l2
        p = np.linalg.inv(gram)
        del gram
    p /= -np.diag(p)  # column j divided by −P_jj, in place: p becomes B
    p[np.diag_indices_from(p)] = 0.0
    return p


def ease_lists(
    counts: sparse.csr_matrix,
    item_ids: Sequence[str],
    *,
    l2: float,
    max_items: int,
    listed: int,
) -> dict[str, tuple[tuple[str, float], ...]]:
    """For each item ``i``, the items ``j`` with the largest positive EASE weights ``B_ij``.

    Args:
        counts: users × items (columns in ``item_ids`` order), positive-event counts; a cell
            counts once however many events it holds.
        item_ids: the columns' ids, sorted.
        l2: EASE's λ.
        max_items: the most items that enter the matrix: those with the most distinct likers
            (ties by id).
        listed: the most weights an item's list keeps, strongest first (ties by id), as float32.

    Returns:
        item id -> ((j, B_ij), ...); items with no positive weight have no entry.
    """
    x = sparse.csr_matrix(counts, dtype=np.float64, copy=True)
    x.data[:] = 1.0
    likers = np.asarray(x.sum(axis=0)).ravel()
    liked = np.flatnonzero(likers > 0)
    if not len(liked):
        return {}
    kept = np.sort(liked[np.lexsort((liked, -likers[liked]))[:max_items]])  # ids are sorted: index order = id order
    x = x[:, kept]
    x = x[np.diff(x.indptr) > 0]
    b = ease_weights(x, l2)
    out: dict[str, tuple[tuple[str, float], ...]] = {}
    for r, i in enumerate(kept):
        row = b[r]
        cols = np.flatnonzero(row > 0)
        if not len(cols):
            continue
        vals = row[cols].astype(np.float32)
        if len(cols) > listed:  # the strongest `listed` and every tie at the cut, then exactly by (-weight, id)
            cut = np.partition(vals, len(vals) - listed)[len(vals) - listed]
            cols, vals = cols[vals >= cut], vals[vals >= cut]
        order = np.lexsort((cols, -vals))[:listed]
        out[item_ids[i]] = tuple((item_ids[kept[cols[o]]], float(vals[o])) for o in order)
    return out
