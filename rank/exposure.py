"""Exposure policy for cold items: a few positions below the head of the list go to the best
candidates with little history ("cold slots").

The ranker learns, correctly, that items few people touched are rarely the next one liked, so
on its own it never shows them in the top 50, and they never get the interactions that would
let the collaborative signals learn them. :class:`ColdSlots` is a product default that buys
them exposure where it costs least: positions ``2·every, 3·every, …`` (20, 30, 40 and 50 of a
top 50) go to the best-ranked cold candidates of the pool; the head of the list (positions 1
to ``2·every - 1``) is the model's own order, so NDCG@10 does not move. In ``vecrank evaluate``
on the shared MovieLens data (2026-12-01) the slots took vecrank's cold-item Recall@50 from
0.0043 (item-kNN's level) to 0.0286, for overall Recall@50 0.2043 -> 0.1993.

Serving (both the Python and the plugin path of :class:`vecrank.rank.ranker.Ranker`) and the
offline evaluation (:func:`vecrank.rank.evaluate.run`) call the same :func:`place_cold`, with
the cold mask from the items' ``signals.interactions`` (as of the last refresh; in a replay,
as of the request's bucket), so the evaluation measures what serving shows. The policy travels
with the model (``ReplayConfig.cold_slots``); ``threshold=0`` turns it off.

Example:
    >>> policy = ColdSlots()
    >>> policy.slots(50)
    [20, 30, 40, 50]
    >>> order = list(range(40))  # candidates 0..39, best first; 25 and 35 are cold
    >>> top = place_cold(order, [n in (25, 35) for n in range(40)], k=30, policy=policy)
    >>> int(top[19]), int(top[29]), [int(i) for i in top[20:24]]
    (25, 35, [19, 20, 21, 22])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["SIGNAL_FIELD", "ColdSlots", "interactions_of", "place_cold"]

#: The item field the cold mask is read from: its all-time count of interaction events (every
#: event but impressions) as of the last ``signals refresh``.
SIGNAL_FIELD = "signals.interactions"


@dataclass(frozen=True)
class ColdSlots:
    """Which items are cold and which positions are kept for them (documented defaults).

    Attributes:
        threshold: an item with fewer interactions than this (``signals.interactions``; a
            missing signal counts as 0) is cold; 0 disables the policy (nothing is cold).
        every: positions ``2·every, 3·every, …`` up to ``k`` are slots: for k = 50 and the
            default 10, positions 20, 30, 40 and 50; none for k < 20. The head (the first
            ``2·every - 1`` positions) is never touched.

    Example:
        >>> ColdSlots.from_dict(ColdSlots(threshold=3).to_dict())
        ColdSlots(threshold=3, every=10)
        >>> ColdSlots().slots(19), ColdSlots(every=4).slots(17)
        ([], [8, 12, 16])
    """

    threshold: int = 5
    every: int = 10

    def __post_init__(self) -> None:
        for name in ("threshold", "every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"cold_slots.{name} must be a whole number, not {value!r}")
        if self.threshold < 0:
            raise ValueError(f"cold_slots.threshold must be >= 0, not {self.threshold}")
        if self.every < 1:
            raise ValueError(f"cold_slots.every must be >= 1, not {self.every}")

    def slots(self, k: int) -> list[int]:
        """The 1-based positions of a top ``k`` kept for cold items."""
        return list(range(2 * self.every, int(k) + 1, self.every))

    def applies(self, k: int) -> bool:
        """Whether the policy can move anything in a top ``k``: a slot within it, and a
        threshold that makes some item cold (0 makes none)."""
        return self.threshold > 0 and bool(self.slots(k))

    def cold_mask(self, interactions: Sequence[float | None] | np.ndarray) -> np.ndarray:
        """Which items are cold, from their interaction counts (None or NaN: no signal, 0).

        Example:
            >>> ColdSlots().cold_mask([0, 4, 5, None, float("nan"), 12]).tolist()
            [True, True, False, True, True, False]
        """
        if isinstance(interactions, np.ndarray):
            counts = interactions.astype(np.float64)
        else:
            counts = np.array([np.nan if v is None else v for v in interactions], dtype=np.float64)
        return np.nan_to_num(counts, nan=0.0) < self.threshold

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColdSlots:
        unknown = set(data) - {"threshold", "every"}
        if unknown:
            raise ValueError(f"cold_slots has unknown fields: {sorted(unknown)}")
        return cls(**{k: int(v) for k, v in data.items()})


def interactions_of(sources: Sequence[Mapping[str, Any]]) -> list[float | None]:
    """Each document's ``signals.interactions`` (None where it has none), from hits' ``_source``
    or candidates' fields."""
    out: list[float | None] = []
    for source in sources:
        value = (source.get("signals") or {}).get("interactions")
        out.append(float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
    return out


def place_cold(
    order: Sequence[int] | np.ndarray, cold: Sequence[bool] | np.ndarray, *, k: int, policy: ColdSlots
) -> np.ndarray:
    """The top ``k`` of a ranked list with the policy's slots given to cold candidates.

    Each slot (:meth:`ColdSlots.slots`) takes the best-ranked cold candidate not already placed;
    every other position takes the next candidate of ``order`` not already placed, so the
    others keep their order. A cold candidate ranked into the head stays where it is (it uses
    no slot). With no cold candidate left, a slot is an ordinary position; so when no candidate,
    or every candidate, is cold, the result is ``order[:k]``.

    Args:
        order: candidate indices, best first (``rank_order``'s output, or ``0..n-1`` for hits
            already in model order).
        cold: per candidate index (not per position), whether it is cold.
        k: how many to return (fewer when ``order`` is shorter).
        policy: the slots and the threshold that made ``cold``.

    Returns:
        Candidate indices, best first: a new array; the arguments are not modified.

    Example:
        >>> cold = [False] * 25
        >>> cold[3] = cold[21] = cold[24] = True
        >>> top = place_cold(list(range(25)), cold, k=25, policy=ColdSlots())
        >>> int(top[3]), int(top[19]), [int(i) for i in top[18:23]]
        (3, 21, [18, 21, 19, 20, 22])
    """
    ranked = np.asarray(order, dtype=np.intp)
    mask = np.asarray(cold, dtype=bool)
    k = max(int(k), 0)
    slots = set(policy.slots(k))
    cold_ranked = [int(i) for i in ranked if mask[i]] if slots else []
    if not cold_ranked or len(cold_ranked) == len(ranked):
        return ranked[:k].copy()
    placed: set[int] = set()
    out: list[int] = []
    head = iter(int(i) for i in ranked)
    next_cold = 0
    for position in range(1, min(k, len(ranked)) + 1):
        pick: int | None = None
        if position in slots:
            while next_cold < len(cold_ranked) and cold_ranked[next_cold] in placed:
                next_cold += 1
            if next_cold < len(cold_ranked):
                pick = cold_ranked[next_cold]
        if pick is None:
            pick = next(i for i in head if i not in placed)
        placed.add(pick)
        out.append(pick)
    return np.array(out, dtype=np.intp)
