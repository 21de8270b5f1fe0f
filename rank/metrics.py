"""Offline ranking metrics, averaged over users, with bootstrap confidence intervals.

Definitions (a ranking is a list of item ids, best first; relevance is binary):

* ``ndcg@k`` = DCG@k / IDCG@k with gain 1 for a relevant item at rank r (1-based) discounted by
  ``1 / log2(r + 1)``; the ideal DCG puts ``min(|relevant|, k)`` relevant items on top.
* ``recall@k`` = |relevant items in the top k| / |relevant| — the standard definition, *not*
  divided by ``min(|relevant|, k)``: a user with more relevant items than k cannot reach 1.
* ``mrr@k`` = 1 / rank of the first relevant item within the top k, 0 when there is none.
* ``coverage@k`` = distinct items in the users' top-k lists / catalog size.
* ``diversity@k`` (intra-list diversity) = mean over lists of the mean pairwise ``1 - cosine``
  between the list's items, for lists with at least two items that have vectors.

A ranking that repeats an item gets credit for it once. :func:`evaluate` averages over the users
with at least one relevant item; a user missing from the rankings has an empty list and scores 0.
Coverage and diversity are measured on those same users' lists, so two systems evaluated on the
same relevance sets are compared on the same users.

Uncertainty: :func:`bootstrap_ci` resamples users (percentile bootstrap); to compare two systems
use :func:`paired_bootstrap_diff` on their per-user values (``evaluate(..., per_user=True)``), which
resamples the same users for both and so removes the between-user variance they share.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

# User and item ids are any hashable; maps of them are typed Mapping[Any, ...] because Mapping is
# invariant in its key, so Mapping[Hashable, ...] would refuse a caller's dict[str, ...].

_BOOTSTRAP_CELLS = 2_000_000  # resampled values held in memory at once


def _first_hits(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int | None) -> list[int]:
    """1-based ranks of relevant items in the top k, each relevant item counted once."""
    top = ranking if k is None else ranking[:k]
    seen: set[Hashable] = set()
    ranks = []
    for r, item in enumerate(top, start=1):
        if item in relevant and item not in seen:
            seen.add(item)
            ranks.append(r)
    return ranks


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")


def ndcg_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Normalised discounted cumulative gain at k, binary gains.

    Args:
        ranking: item ids, best first.
        relevant: the relevant item ids.
        k: cutoff.

    Returns:
        A value in [0, 1]; 0 when nothing is relevant.

    Example:
        >>> round(ndcg_at_k(["a", "b", "c"], {"a", "c"}, 3), 4)
        0.9197
    """
    _check_k(k)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
    if ideal == 0.0:
        return 0.0
    return sum(1.0 / math.log2(r + 1) for r in _first_hits(ranking, relevant, k)) / ideal


def recall_at_k(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """|relevant items in the top k| / |relevant| (0 when nothing is relevant).

    Args:
        ranking: item ids, best first.
        relevant: the relevant item ids.
        k: cutoff.

    Returns:
        A value in [0, 1].
    """
    _check_k(k)
    return len(_first_hits(ranking, relevant, k)) / len(relevant) if relevant else 0.0


def mrr(ranking: Sequence[Hashable], relevant: Collection[Hashable], k: int | None = None) -> float:
    """Reciprocal rank of the first relevant item (0 if none), within the top k when k is given.

    Args:
        ranking: item ids, best first.
        relevant: the relevant item ids.
        k: cutoff; None looks at the whole ranking.

    Returns:
        A value in [0, 1].
    """
    if k is not None:
        _check_k(k)
    hits = _first_hits(ranking, relevant, k)
    return 1.0 / hits[0] if hits else 0.0


def catalog_coverage(lists: Iterable[Sequence[Hashable]], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one list.

    Args:
        lists: recommendation lists (already cut to the k of interest).
        catalog_size: number of items that could have been recommended.

    Returns:
        Distinct recommended items / catalog_size.
    """
    if catalog_size <= 0:
        raise ValueError(f"catalog_size must be > 0, not {catalog_size}")
    return len({item for items in lists for item in items}) / catalog_size


def intra_list_diversity(lists: Iterable[Sequence[Hashable]], vectors: Mapping[Any, Any]) -> float | None:
    """Mean over lists of the mean pairwise ``1 - cosine`` between the list's items.

    Items without a vector are ignored; lists with fewer than two items with vectors are skipped.

    Args:
        lists: recommendation lists.
        vectors: item id -> vector (any norm; cosines are computed on normalised copies).

    Returns:
        The mean, or None when no list has two items with vectors.
    """
    per_list = []
    for items in lists:
        unique = list(dict.fromkeys(i for i in items if i in vectors))
        if len(unique) < 2:
            continue
        x = np.stack([np.asarray(vectors[i], dtype=np.float64) for i in unique])
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        gram = x @ x.T
        upper = np.triu_indices(len(unique), k=1)
        per_list.append(float(np.mean(1.0 - gram[upper])))
    return float(np.mean(per_list)) if per_list else None


def evaluate(
    rankings: Mapping[Any, Sequence[Hashable]],
    relevant: Mapping[Any, Collection[Hashable]],
    *,
    k_values: Sequence[int] = (10, 50),
    catalog_size: int | None = None,
    vectors: Mapping[Any, Any] | None = None,
    per_user: bool = False,
) -> dict[str, Any]:
    """Every metric at every k, averaged over the users with at least one relevant item.

    Args:
        rankings: user -> ranked item ids. Users missing here count as empty lists.
        relevant: user -> relevant item ids (for example ``Split.test_relevant()``).
        k_values: cutoffs.
        catalog_size: adds ``coverage@k`` when given.
        vectors: item vectors; adds ``diversity@k`` when given.
        per_user: adds ``per_user``: metric -> {user: value}, for :func:`paired_bootstrap_diff`.

    Returns:
        ``{"users": n, "ndcg@k": ..., "recall@k": ..., "mrr@k": ..., ["coverage@k"], ["diversity@k"],
        ["per_user"]}``; the means are None when no user has a relevant item.
    """
    ks = sorted({int(k) for k in k_values})
    if not ks:
        raise ValueError("k_values is empty")
    for k in ks:
        _check_k(k)
    users = [u for u, items in relevant.items() if items]
    missing = sum(1 for u in users if u not in rankings)
    if missing:
        log.info("%d of %d evaluated users have no ranking; they count as empty lists", missing, len(users))
    values: dict[str, dict[Hashable, float]] = {}
    for k in ks:
        values[f"ndcg@{k}"], values[f"recall@{k}"], values[f"mrr@{k}"] = {}, {}, {}
    for u in users:
        ranking, rel = list(rankings.get(u, ())), relevant[u]
        for k in ks:
            values[f"ndcg@{k}"][u] = ndcg_at_k(ranking, rel, k)
            values[f"recall@{k}"][u] = recall_at_k(ranking, rel, k)
            values[f"mrr@{k}"][u] = mrr(ranking, rel, k)

    out: dict[str, Any] = {"users": len(users)}
    for name, by_user in values.items():
        out[name] = float(np.mean(list(by_user.values()))) if by_user else None
    for k in ks:
        lists = [list(rankings.get(u, ()))[:k] for u in users]
        if catalog_size is not None:
            out[f"coverage@{k}"] = catalog_coverage(lists, catalog_size)
        if vectors is not None:
            out[f"diversity@{k}"] = intra_list_diversity(lists, vectors)
    if per_user:
        out["per_user"] = values
    return out


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval."""

    mean: float
    low: float
    high: float


def _as_array(values: Iterable[float] | Mapping[Any, float]) -> np.ndarray:
    data = values.values() if isinstance(values, Mapping) else values
    arr = np.asarray(list(data), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no values to bootstrap")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values must be finite")
    return arr


def _percentile_bootstrap(values: np.ndarray, n: int, seed: int, alpha: float) -> Interval:
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    rng = np.random.default_rng(seed)
    m = len(values)
    means = np.empty(n)
    # Chunks keep the (resamples × users) index matrix small for large user counts.
    step = max(1, _BOOTSTRAP_CELLS // m)
    for start in range(0, n, step):
        stop = min(n, start + step)
        means[start:stop] = values[rng.integers(0, m, size=(stop - start, m))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(values.mean()), float(low), float(high))


def bootstrap_ci(
    per_user_values: Iterable[float] | Mapping[Any, float], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> Interval:
    """Percentile bootstrap confidence interval of a mean over users.

    Args:
        per_user_values: one value per user (a sequence, or a mapping user -> value).
        n: bootstrap resamples.
        seed: random seed; the same inputs and seed give the same interval.
        alpha: 1 - confidence level (0.05: a 95% interval).

    Returns:
        ``Interval(mean, low, high)``; ``mean`` is the sample mean.
    """
    return _percentile_bootstrap(_as_array(per_user_values), n, seed, alpha)


def paired_bootstrap_diff(
    a: Sequence[float] | Mapping[Any, float],
    b: Sequence[float] | Mapping[Any, float],
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Interval:
    """Mean per-user difference ``a - b`` with a paired percentile bootstrap interval.

    An interval that excludes 0 says the systems differ at level ``alpha`` on these users.

    Args:
        a: per-user values of system A: a mapping user -> value, or a sequence aligned with ``b``.
        b: the same for system B; a mapping must have exactly ``a``'s users.
        n: bootstrap resamples.
        seed: random seed.
        alpha: 1 - confidence level.

    Returns:
        ``Interval(mean_diff, low, high)``.

    Raises:
        ValueError: the two do not cover the same users.
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if a.keys() != b.keys():
            raise ValueError(f"a and b must cover the same users ({len(set(a) ^ set(b))} differ)")
        keys = list(a)
        diff = _as_array([a[u] for u in keys]) - _as_array([b[u] for u in keys])
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        raise ValueError("a and b must both be mappings or both be sequences")
    else:
        xa, xb = _as_array(a), _as_array(b)
        if xa.shape != xb.shape:
            raise ValueError(f"a and b differ in length ({len(xa)} and {len(xb)})")
        diff = xa - xb
    return _percentile_bootstrap(diff, n, seed, alpha)
