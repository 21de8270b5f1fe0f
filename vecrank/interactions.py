"""What an event says about a user and an item, and a compact form of an event log for fitting.

The rules, in one place (ingest fits collaborative vectors with them, rank labels and evaluates
with them):

* An **interaction** is any event but an ``impression``: what the user did, not what was shown.
  The user's interactions are their history and what recommenders exclude as "seen".
* A **positive** interaction (the user liked the item): a ``rating`` with value >= 4.0, or any
  ``click``, ``cart`` or ``purchase``. The collaborative vectors, the co-occurrence neighbours, a
  user's recent likes and the evaluation's relevant items all use this one rule.

:class:`Interactions` holds an event log as parallel numpy arrays sorted by time, with user and
item ids interned, so that "everything before instant t" is a prefix and the fits of many
instants share one copy of the events.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DAY_MS = 86_400_000
IMPRESSION = "impression"
POSITIVE_TYPES = frozenset({"click", "cart", "purchase"})
POSITIVE_MIN_RATING = 4.0
RATING_TYPE = "rating"


def is_positive(event: Mapping[str, Any]) -> bool:
    """The positive rule: a rating >= 4.0, or any click, cart or purchase.

    Example:
        >>> is_positive({"type": "rating", "value": 4.5}), is_positive({"type": "rating", "value": 3.5})
        (True, False)
    """
    kind = event.get("type")
    if kind == RATING_TYPE:
        value = event.get("value")
        return value is not None and float(value) >= POSITIVE_MIN_RATING
    return kind in POSITIVE_TYPES


def is_interaction(event: Mapping[str, Any]) -> bool:
    """Whether an event is something the user did (anything but an impression)."""
    return event.get("type") != IMPRESSION


@dataclass(frozen=True, eq=False)
class Interactions:
    """An event log as arrays, sorted by (timestamp, user id, item id, type).

    Attributes:
        user_ids: the distinct user ids, sorted; ``user`` holds indices into it.
        item_ids: the distinct item ids, sorted; ``item`` holds indices into it.
        user, item: per-event codes (int32).
        kind: per-event type (object array of str).
        value: per-event value (float64, NaN when none).
        timestamp: per-event epoch milliseconds (int64), non-decreasing.
        positive: per-event :func:`is_positive`.
        interaction: per-event :func:`is_interaction`.
    """

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray
    value: np.ndarray
    timestamp: np.ndarray
    positive: np.ndarray
    interaction: np.ndarray

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> Interactions:
        """From event dicts (``user_id``, ``item_id``, ``type``, ``value``, ``timestamp`` ms).

        Raises:
            ValueError: an event lacks a user, an item or an integer timestamp.
        """
        rows = []
        for n, e in enumerate(events):
            for name in ("user_id", "item_id", "timestamp"):
                if e.get(name) is None:
                    raise ValueError(f"event {n} has no {name}: {dict(e)!r}")
            try:
                ts = int(e["timestamp"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"event {n} has a timestamp that is not epoch milliseconds: {e['timestamp']!r}"
                ) from None
            value = e.get("value")
            rows.append(
                (
                    ts,
                    str(e["user_id"]),
                    str(e["item_id"]),
                    str(e.get("type")),
                    float("nan") if value is None else float(value),
                )
            )
        rows.sort(key=lambda r: r[:4])
        user_ids = tuple(sorted({r[1] for r in rows}))
        item_ids = tuple(sorted({r[2] for r in rows}))
        users = {u: n for n, u in enumerate(user_ids)}
        items = {i: n for n, i in enumerate(item_ids)}
        kind = np.array([r[3] for r in rows], dtype=object)
        value = np.array([r[4] for r in rows], dtype=np.float64)
        positive = np.isin(kind, list(POSITIVE_TYPES)) | ((kind == RATING_TYPE) & (value >= POSITIVE_MIN_RATING))
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            user=np.fromiter((users[r[1]] for r in rows), dtype=np.int32, count=len(rows)),
            item=np.fromiter((items[r[2]] for r in rows), dtype=np.int32, count=len(rows)),
            kind=kind,
            value=value,
            timestamp=np.array([r[0] for r in rows], dtype=np.int64),
            positive=positive,
            interaction=kind != IMPRESSION,
        )

    def __len__(self) -> int:
        return len(self.timestamp)

    def count_before(self, t_ms: int) -> int:
        """How many events have ``timestamp < t_ms`` (they are the first ones)."""
        return int(np.searchsorted(self.timestamp, int(t_ms), side="left"))

    def count_until(self, t_ms: int) -> int:
        """How many events have ``timestamp <= t_ms``."""
        return int(np.searchsorted(self.timestamp, int(t_ms), side="right"))

    def quantile(self, q: float) -> int:
        """The ``q`` quantile of the interactions' times (impressions, which serving logs in bulk
        whenever it runs, would drag it toward the present)."""
        times = self.timestamp[self.interaction]
        return int(np.quantile(times, q)) if len(times) else 0

    def event(self, n: int) -> dict[str, Any]:
        """Event ``n`` as a dict, as the rest of vecrank reads events."""
        value = self.value[n]
        return {
            "user_id": self.user_ids[self.user[n]],
            "item_id": self.item_ids[self.item[n]],
            "type": self.kind[n],
            "value": None if np.isnan(value) else float(value),
            "timestamp": int(self.timestamp[n]),
        }

    def by_user(self) -> dict[str, np.ndarray]:
        """User id -> the indices of their events, in time order."""
        order = np.argsort(self.user, kind="stable")
        bounds = np.searchsorted(self.user[order], np.arange(len(self.user_ids) + 1))
        return {u: order[bounds[n] : bounds[n + 1]] for n, u in enumerate(self.user_ids)}


def time_index(times: Sequence[int], t_ms: int) -> int:
    """``bisect_left`` on sorted epoch-ms times: how many are before ``t_ms``."""
    return bisect.bisect_left(times, int(t_ms))
