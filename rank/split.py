"""Time splits of an event log for offline evaluation: train on the past, test on what came next.

The rule, in one place:

* Events are dicts with ``user_id``, ``item_id``, ``type``, ``value`` and ``timestamp`` (epoch
  milliseconds). Ids are compared as strings, as everywhere in vecrank.
* One **global** cutoff for all users (not a per-user leave-last-out): every system is trained on
  exactly the events before the cutoff, so nothing from the test period leaks into training.
  ``train`` = events with ``timestamp < cutoff_ms``; ``test`` = events with
  ``cutoff_ms <= timestamp`` (and ``<= end_ms`` when an end is given; later events are dropped).
* Unless given, ``cutoff_ms`` is the smallest timestamp at or above the ``1 - test_fraction``
  quantile of all timestamps (numpy's ``"higher"`` quantile), so the test share is at most about
  ``test_fraction``; events tied on the cutoff all go to the test side.
* A **positive** interaction (the default :func:`vecrank.interactions.is_positive`): a ``rating`` with value ≥ 4.0, or
  any ``click``, ``cart`` or ``purchase``. Any callable ``event -> bool`` can replace it.
* An **interaction** is any event but an ``impression`` (what the user did, not what was shown);
  the user's training interactions are their history and what recommenders exclude as "seen".
* :meth:`Split.test_relevant` is, per user with at least ``min_train`` training interactions, the
  set of items they interacted with positively in test. By default items the user had already
  interacted with in train are left out of it: systems that exclude seen items could never show
  them, so they would only cap every system's recall alike. Users with fewer training
  interactions are not dropped silently: :meth:`Split.cold_users` returns them, with their test
  items, for a separate cold-start report.
* Everything is deterministic: the same events give the same split, in the same order (each side
  sorted by timestamp, ties in input order).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from vecrank.interactions import is_interaction, is_positive  # the one definition of both rules

log = logging.getLogger(__name__)

Event = Mapping[str, Any]
PositiveRule = Callable[[Event], bool]

_REQUIRED = ("user_id", "item_id", "timestamp")


def check_events(events: Iterable[Event]) -> list[Event]:
    """Validate events where they enter: each needs a user, an item and an integer timestamp.

    Args:
        events: the event dicts.

    Returns:
        The events as a list, unchanged.

    Raises:
        ValueError: an event lacks a required field or has a timestamp that is not a number.
    """
    out = list(events)
    for n, e in enumerate(out):
        for name in _REQUIRED:
            if e.get(name) is None:
                raise ValueError(f"event {n} has no {name}: {dict(e)!r}")
        try:
            int(e["timestamp"])
        except (TypeError, ValueError):
            raise ValueError(f"event {n} has a timestamp that is not epoch milliseconds: {e['timestamp']!r}") from None
    return out


def _quantile_cutoff(timestamps: Sequence[int], fraction_after: float) -> int:
    """The smallest timestamp at or above the ``1 - fraction_after`` quantile."""
    if not 0.0 < fraction_after < 1.0:
        raise ValueError(f"the held-out fraction must be between 0 and 1 (exclusive), not {fraction_after}")
    if not timestamps:
        raise ValueError("no events to split")
    return int(np.quantile(np.asarray(timestamps, dtype=np.int64), 1.0 - fraction_after, method="higher"))


def _by_time(events: Iterable[Event]) -> list[Event]:
    # sorted() is stable: events with equal timestamps keep their input order.
    return sorted(events, key=lambda e: int(e["timestamp"]))


@dataclass(frozen=True)
class Split:
    """A global time split; see the module docstring for the rule.

    Attributes:
        train: events before ``cutoff_ms``, by time.
        test: events from ``cutoff_ms`` on (up to ``end_ms``), by time.
        cutoff_ms: the first test millisecond.
        end_ms: the last test millisecond, or None for no end.
        min_train: training interactions a user needs to be evaluated (fewer: cold user).
        positive: the positive rule used when a method is given none.
    """

    train: list[Event]
    test: list[Event]
    cutoff_ms: int
    end_ms: int | None = None
    min_train: int = 1
    positive: PositiveRule = field(default=is_positive, repr=False, compare=False)

    @cached_property
    def histories(self) -> dict[str, list[Event]]:
        """Each user's training interactions (no impressions), oldest first."""
        out: dict[str, list[Event]] = defaultdict(list)
        for e in self.train:
            if is_interaction(e):
                out[str(e["user_id"])].append(e)
        return dict(out)

    @cached_property
    def seen(self) -> dict[str, set[str]]:
        """Each user's items interacted with in train: what recommenders exclude."""
        return {u: {str(e["item_id"]) for e in h} for u, h in self.histories.items()}

    def _test_positives(self, positive: PositiveRule | None) -> dict[str, set[str]]:
        rule = positive or self.positive
        out: dict[str, set[str]] = defaultdict(set)
        for e in self.test:
            if rule(e):
                out[str(e["user_id"])].add(str(e["item_id"]))
        return dict(out)

    def test_relevant(self, positive: PositiveRule | None = None, *, exclude_seen: bool = True) -> dict[str, set[str]]:
        """The evaluation targets: user -> items they liked in the test period.

        Args:
            positive: the positive rule; None uses the split's.
            exclude_seen: leave out items the user had already interacted with in train (set
                False to evaluate systems that may recommend them again).

        Returns:
            Users with at least ``min_train`` training interactions and at least one relevant
            item, each with the set of relevant item ids.
        """
        out: dict[str, set[str]] = {}
        emptied = 0
        for user, items in self._test_positives(positive).items():
            history = self.histories.get(user, ())
            if len(history) < self.min_train:
                continue
            if exclude_seen:
                items = items - self.seen.get(user, set())
                if not items:
                    emptied += 1
                    continue
            out[user] = items
        if emptied:
            log.info("%d users liked only items they had already seen in train; they have nothing to evaluate", emptied)
        return out

    def cold_users(self, positive: PositiveRule | None = None) -> dict[str, set[str]]:
        """Users with positive test interactions but fewer than ``min_train`` training ones.

        Args:
            positive: the positive rule; None uses the split's.

        Returns:
            Each such user with the items they liked in test (for a cold-start report).
        """
        return {
            u: items
            for u, items in self._test_positives(positive).items()
            if len(self.histories.get(u, ())) < self.min_train
        }

    def summary(self) -> dict[str, Any]:
        """Counts for logs and reports (plain JSON)."""
        relevant = self.test_relevant()
        return {
            "cutoff_ms": self.cutoff_ms,
            "end_ms": self.end_ms,
            "train_events": len(self.train),
            "test_events": len(self.test),
            "train_users": len(self.histories),
            "test_users": len({str(e["user_id"]) for e in self.test}),
            "evaluated_users": len(relevant),
            "cold_users": len(self.cold_users()),
            "relevant_items": sum(len(v) for v in relevant.values()),
        }


def time_split(
    events: Iterable[Event],
    *,
    cutoff_ms: int | None = None,
    end_ms: int | None = None,
    test_fraction: float = 0.2,
    min_train: int = 1,
    positive: PositiveRule | None = None,
) -> Split:
    """Split ``events`` at one global time (see the module docstring for the rule).

    Args:
        events: event dicts with user_id, item_id, type, value and timestamp (ms).
        cutoff_ms: the first test millisecond; None: the ``1 - test_fraction`` timestamp quantile.
        end_ms: the last test millisecond (inclusive); later events are dropped. None: no end.
        test_fraction: share of events (by timestamp quantile) to hold out; used without cutoff_ms.
        min_train: training interactions a user needs to be evaluated.
        positive: what counts as a positive interaction; None: :func:`is_positive`.

    Returns:
        The :class:`Split`.

    Raises:
        ValueError: no events, an invalid event, a fraction outside (0, 1), or an end before the cutoff.

    Example:
        >>> s = time_split([{"user_id": "u", "item_id": str(t), "type": "click", "value": None,
        ...                  "timestamp": t} for t in range(10)], test_fraction=0.2)
        >>> s.cutoff_ms, len(s.train), len(s.test)
        (8, 8, 2)
    """
    events = check_events(events)
    if min_train < 0:
        raise ValueError(f"min_train must be >= 0, not {min_train}")
    if cutoff_ms is None:
        cutoff_ms = _quantile_cutoff([int(e["timestamp"]) for e in events], test_fraction)
    cutoff_ms = int(cutoff_ms)
    if end_ms is not None and int(end_ms) < cutoff_ms:
        raise ValueError(f"end_ms ({end_ms}) is before cutoff_ms ({cutoff_ms})")
    ordered = _by_time(events)
    train = [e for e in ordered if int(e["timestamp"]) < cutoff_ms]
    test = [
        e for e in ordered if int(e["timestamp"]) >= cutoff_ms and (end_ms is None or int(e["timestamp"]) <= end_ms)
    ]
    dropped = len(ordered) - len(train) - len(test)
    if dropped:
        log.info("%d events after end_ms=%s left out of the split", dropped, end_ms)
    if not train or not test:
        log.warning("time split at %d has %d train and %d test events", cutoff_ms, len(train), len(test))
    return Split(train, test, cutoff_ms, None if end_ms is None else int(end_ms), min_train, positive or is_positive)


def validation_split(train: Iterable[Event], fraction: float = 0.1) -> tuple[list[Event], list[Event]]:
    """Split training events by time again, for early stopping on a later slice.

    Same rule as :func:`time_split`: the later part starts at the smallest timestamp at or above
    the ``1 - fraction`` quantile of the training timestamps.

    Args:
        train: the training events.
        fraction: share of them (by timestamp quantile) for the later part.

    Returns:
        ``(earlier, later)``, each by time.
    """
    events = check_events(train)
    cut = _quantile_cutoff([int(e["timestamp"]) for e in events], fraction)
    ordered = _by_time(events)
    return ([e for e in ordered if int(e["timestamp"]) < cut], [e for e in ordered if int(e["timestamp"]) >= cut])
