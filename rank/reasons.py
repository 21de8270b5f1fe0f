"""Why an item is shown: the model's feature contributions turned into a few short reasons.

The Python ranker's ``explain`` gives each shown item one contribution per feature (XGBoost
``pred_contribs``: SHAP values in the model's margin, which sum with the bias to the score).
Features are grouped into reasons (:data:`REASON_OF`); a group's contributions are summed over the
features whose value really says something (a similarity or count above zero, a rank present,
not a missing value that merely routed a split), and the groups whose sum reaches
``min_contribution`` become reasons, strongest first, at most ``max_reasons``:

* ``liked`` — "because you liked <title>": the history, profile and collaborative features
  (``cos_profile``, ``cos_hist_*``, ``cf_score``, ``cooc``, ``seq``, ``ease`` and their pool ranks),
  citing the liked item whose text vector is closest to the shown one;
* ``taste`` — "more of the <facet> you like": ``affinity.<facet>``;
* ``trending`` — "popular this week": ``pop_1d``, ``pop_7d``, ``trend``, ``trending_rank``;
* ``popular`` — "popular overall": ``pop_30d``, ``pop_365d``, ``popular_rank``, ``ctr``;
* ``rated`` — "highly rated": ``rating_mean``, ``rating_count``;
* ``query`` — "matches your search": ``cos_query``, ``query_present``.

Features that do not read as a reason (ages, item fields, the user's history length, the path,
``n_sources``, the bias) give none. Everything here is pure: the caller passes the rows, the
liked items and a way to read their titles.

Example:
    >>> names = ["cos_profile", "pop_7d", "item_age"]
    >>> [r.to_dict() for r in top_reasons(names, [0.8, 0.3, 0.9], values=[0.7, 2.1, 40.0])]
    [{'code': 'liked', 'text': 'because of what you liked'}, {'code': 'trending', 'text': 'popular this week'}]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LIKED, TASTE, TRENDING, POPULAR, RATED, QUERY = "liked", "taste", "trending", "popular", "rated", "query"
#: feature -> reason code (``affinity.<facet>`` features are ``taste``, see :func:`reason_of`)
REASON_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "cos_profile",
            "cos_hist_max",
            "cos_hist_mean",
            "rank_text",
            "cf_score",
            "rank_cf",
            "cooc",
            "rank_cooc",
            "seq",
            "rank_seq",
            "ease",
            "rank_ease",
        ),
        LIKED,
    ),
    **dict.fromkeys(("pop_1d", "pop_7d", "trend", "trending_rank"), TRENDING),
    **dict.fromkeys(("pop_30d", "pop_365d", "popular_rank", "ctr"), POPULAR),
    **dict.fromkeys(("rating_mean", "rating_count"), RATED),
    **dict.fromkeys(("cos_query", "query_present"), QUERY),
}
TEXTS = {
    LIKED: "because of what you liked",
    TASTE: "more of the {facet} you like",
    TRENDING: "popular this week",
    POPULAR: "popular overall",
    RATED: "highly rated",
    QUERY: "matches your search",
}
_ORDER = {code: i for i, code in enumerate(TEXTS)}  # ties between equal weights
_MAX_TITLE = 120


@dataclass(frozen=True)
class ReasonConfig:
    """How reasons are chosen.

    Args:
        max_reasons: at most this many per item (1 to 3).
        min_contribution: the floor a reason's summed contribution must reach (model margin units).
        title_fields: the item fields tried, in order, for a liked item's title (else its id).
    """

    max_reasons: int = 2
    min_contribution: float = 0.05
    title_fields: tuple[str, ...] = ("title", "name")

    def __post_init__(self) -> None:
        if not 1 <= self.max_reasons <= 3:
            raise ValueError(f"max_reasons must be between 1 and 3, not {self.max_reasons}")
        if not (math.isfinite(self.min_contribution) and self.min_contribution >= 0):
            raise ValueError(f"min_contribution must be a number >= 0, not {self.min_contribution}")
        if not self.title_fields:
            raise ValueError("title_fields must name at least one field")

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_reasons": self.max_reasons,
            "min_contribution": self.min_contribution,
            "title_fields": list(self.title_fields),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReasonConfig:
        data = dict(data)
        if "title_fields" in data:
            data["title_fields"] = tuple(data["title_fields"])
        return cls(**data)


@dataclass(frozen=True)
class Reason:
    """One reason: a stable ``code`` for the page, a short ``text`` for people, the summed
    contribution behind it, its strongest feature and, for ``liked``, the liked item cited."""

    code: str
    text: str
    weight: float
    feature: str
    liked_item: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}


def reason_of(feature: str) -> str | None:
    """The reason code a feature speaks for, None where it gives none.

    Example:
        >>> reason_of("cooc"), reason_of("affinity.genres"), reason_of("item_age")
        ('liked', 'taste', None)
    """
    if feature.startswith("affinity."):
        return TASTE
    return REASON_OF.get(feature)


def _says_something(feature: str, value: float | None) -> bool:
    """Whether the feature's value is evidence: missing values only route splits, and a zero
    similarity, count or indicator pushing the score up is no reason to show the item."""
    if value is None:
        return True
    if not math.isfinite(value):
        return False
    return feature.endswith("_rank") or feature.startswith("rank_") or value > 0


def top_reasons(
    names: Sequence[str],
    contributions: Sequence[float] | Mapping[str, float],
    *,
    values: Sequence[float] | None = None,
    liked_title: str | None = None,
    config: ReasonConfig = ReasonConfig(),
) -> list[Reason]:
    """One item's reasons, strongest first.

    Args:
        names: the model's feature names, in order.
        contributions: the item's contribution per feature, aligned with ``names`` (a trailing
            bias column is ignored), or a mapping feature -> contribution (``Ranked.contributions``).
        values: the item's feature values, aligned with ``names``; without them every feature
            counts as evidence.
        liked_title: the title of the liked item to cite in a ``liked`` reason ("because you
            liked <title>"); None: "because of what you liked".
        config: the number of reasons and the floor.

    Returns:
        At most ``config.max_reasons`` reasons, each at least ``config.min_contribution``.
    """
    if isinstance(contributions, Mapping):
        row = [float(contributions.get(name, 0.0)) for name in names]
    else:
        row = [float(v) for v in list(contributions)[: len(names)]]
        if len(row) != len(names):
            raise ValueError(f"contributions has {len(row)} values for {len(names)} features")
    if values is not None and len(values) != len(names):
        raise ValueError(f"values has {len(values)} values for {len(names)} features")
    sums: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for i, (name, contribution) in enumerate(zip(names, row, strict=True)):
        code = reason_of(name)
        if code is None or not math.isfinite(contribution):
            continue
        if not _says_something(name, None if values is None else float(values[i])):
            continue
        sums[code] = sums.get(code, 0.0) + contribution
        if code not in best or contribution > best[code][0]:
            best[code] = (contribution, name)
    chosen = sorted(
        (c for c, w in sums.items() if w >= config.min_contribution and w > 0), key=lambda c: (-sums[c], _ORDER[c])
    )[: config.max_reasons]
    return [
        Reason(code, _text(code, best[code][1], liked_title), round(sums[code], 5), best[code][1]) for code in chosen
    ]


def _text(code: str, feature: str, liked_title: str | None) -> str:
    if code == LIKED and liked_title:
        return f"because you liked {liked_title}"
    if code == TASTE:
        return TEXTS[TASTE].format(facet=feature.removeprefix("affinity."))
    return TEXTS[code]


def most_similar(vector: np.ndarray | None, liked: Sequence[tuple[str, np.ndarray]]) -> str | None:
    """The id of the liked item whose vector has the highest cosine with ``vector`` (ties: the
    first, which is the newest in a user state); None without a vector or liked items.

    Example:
        >>> most_similar(np.array([1.0, 0.0]), [("a", np.array([0.0, 1.0])), ("b", np.array([2.0, 0.1]))])
        'b'
    """
    if vector is None or not len(liked):
        return None
    v = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(v)
    if not norm:
        return None
    m = np.stack([np.asarray(vec, dtype=np.float64) for _, vec in liked])
    sims = (m @ v) / (np.maximum(np.linalg.norm(m, axis=1), 1e-12) * norm)
    return liked[int(np.argmax(sims))][0]


def title_of(doc: Mapping[str, Any] | None, item_id: str, title_fields: Sequence[str] = ("title", "name")) -> str:
    """A display title: the first non-empty of ``title_fields`` (a list's first value), else the id,
    cut to 120 characters."""
    for name in title_fields:
        value = (doc or {}).get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None and str(value).strip():
            text = " ".join(str(value).split())
            return text if len(text) <= _MAX_TITLE else text[: _MAX_TITLE - 1] + "…"
    return str(item_id)


def explain(
    names: Sequence[str],
    contributions: Sequence[Sequence[float] | Mapping[str, float]],
    *,
    values: Sequence[Sequence[float] | None] | None = None,
    vectors: Sequence[np.ndarray | None] | None = None,
    liked: Sequence[tuple[str, np.ndarray]] = (),
    documents: Callable[[list[str]], Mapping[str, Mapping[str, Any]]] | None = None,
    config: ReasonConfig = ReasonConfig(),
) -> list[list[Reason]]:
    """The reasons of several shown items, reading the cited liked items' titles once.

    Args:
        names: the model's feature names.
        contributions: per item, its contribution row or mapping (see :func:`top_reasons`).
        values: per item, its feature values (or None).
        vectors: per item, its text vector, to find the liked item it is closest to.
        liked: the user's liked items as ``(item_id, text vector)``, newest first.
        documents: reads items by id (``{id: source}``), called once with the cited ids, for
            their titles; None: the ids themselves.
        config: the number of reasons, the floor and the title fields.

    Returns:
        Per item, its reasons (possibly none).
    """
    n = len(contributions)
    for label, column in (("values", values), ("vectors", vectors)):
        if column is not None and len(column) != n:
            raise ValueError(f"{label} has {len(column)} items for {n} contribution rows")
    picked = [
        top_reasons(names, contributions[i], values=None if values is None else values[i], config=config)
        for i in range(n)
    ]
    cited = {
        i: most_similar(vectors[i] if vectors is not None else None, liked)
        for i, reasons in enumerate(picked)
        if any(r.code == LIKED for r in reasons)
    }
    ids = sorted({c for c in cited.values() if c is not None})
    docs = documents(ids) if documents is not None and ids else {}
    out = []
    for i, reasons in enumerate(picked):
        item = cited.get(i)
        if item is None:
            out.append(reasons)
            continue
        text = f"because you liked {title_of(docs.get(item), item, config.title_fields)}"
        out.append([dataclasses.replace(r, text=text, liked_item=item) if r.code == LIKED else r for r in reasons])
    return out
