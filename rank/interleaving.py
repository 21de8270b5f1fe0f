"""Team-draft interleaving: compare two rankers on the same requests.

Each request merges the two rankers' lists into one (Radlinski, Kurup and Joachims, "How does
clickthrough data reflect retrieval quality?", CIKM 2008): in each round the team with fewer picks
so far (a coin decides when they have as many) adds its best item not yet shown, and the item
remembers its team. A click credits the team of the clicked item; a request whose clicks favour
one team is a win for it, equal non-zero credit is a tie, no click says nothing.

Because every user sees both rankers side by side, a preference shows up with far fewer users
than a split A/B test needs. :func:`preference` summarises it as the share of decided requests
won by the second ranker (ties count half; 0.5 = no preference). Requests of one user are not
independent, so users are the unit of uncertainty: the p-value is the t-test of the share
against 0.5 with the delta-method variance over users (ratio of sums, CR2-corrected) and
``n_eff - 1`` degrees of freedom (Kish's effective number of users), the interval the matching t
interval (so the two always agree), and the exact sign
test over users (each user counts once, by which ranker won more of their requests) is given
beside it. A winner is called only with at least :data:`~vecrank.rank.stats.MIN_USERS` users
with a decided request: with one to three users who all lean the same way the variance over
users is zero, and any large-sample test would call a winner from nothing.

Example:
    >>> merged = team_draft({"A": ["a", "b", "c"], "B": ["b", "d", "a"]}, k=4, seed="r1")
    >>> sorted(item for item, _ in merged)
    ['a', 'b', 'c', 'd']
    >>> credit({"a": "A", "b": "B"}, ["b"])
    {'A': 0, 'B': 1}
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import stdtr, stdtrit

from vecrank.rank.stats import MIN_USERS, clustered_ratio_variance, sign_test

__all__ = ["PreferenceResult", "credit", "outcome", "preference", "team_draft"]


def _rng(seed: str | int | None) -> random.Random:
    if seed is None:
        return random.Random()
    digest = hashlib.sha256(str(seed).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def team_draft(
    rankings: Mapping[str, Sequence[str]], k: int, *, seed: str | int | None = None
) -> list[tuple[str, str]]:
    """Merge two rankings by team draft.

    Args:
        rankings: exactly two teams, ``{team: [item ids, best first]}``.
        k: length of the merged list (shorter when the two lists hold fewer distinct items).
        seed: seeds the coin flips (the request id makes a request's list reproducible).

    Returns:
        ``[(item_id, team), ...]`` best first.
    """
    if len(rankings) != 2:
        raise ValueError(f"team draft merges exactly two rankings, not {len(rankings)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    rng = _rng(seed)
    teams = list(rankings)
    lists = {t: list(rankings[t]) for t in teams}
    cursor = {t: 0 for t in teams}
    picks = {t: 0 for t in teams}
    shown: set[str] = set()
    merged: list[tuple[str, str]] = []

    def next_item(team: str) -> str | None:
        items = lists[team]
        while cursor[team] < len(items) and items[cursor[team]] in shown:
            cursor[team] += 1
        return items[cursor[team]] if cursor[team] < len(items) else None

    while len(merged) < k:
        available = [t for t in teams if next_item(t) is not None]
        if not available:
            break
        if len(available) == 1:
            team = available[0]
        elif picks[teams[0]] != picks[teams[1]]:
            team = min(teams, key=lambda t: picks[t])
        else:
            team = teams[rng.random() < 0.5]
        item = next_item(team)
        assert item is not None  # team is one of the available teams
        shown.add(item)
        picks[team] += 1
        merged.append((item, team))
    return merged


def credit(teams: Mapping[str, str], clicked: Iterable[str]) -> dict[str, int]:
    """Clicks per team: ``teams`` maps each shown item to its team; each clicked item counts once."""
    out = {t: 0 for t in sorted(set(teams.values()))}
    for item in set(clicked):
        team = teams.get(item)
        if team is not None:
            out[team] += 1
    return out


def outcome(credits: Mapping[str, int], a: str, b: str) -> str | None:
    """``a``, ``b``, ``"tie"`` or None (no click) for one request's credits."""
    ca, cb = credits.get(a, 0), credits.get(b, 0)
    if ca == cb:
        return "tie" if ca > 0 else None
    return a if ca > cb else b


@dataclass(frozen=True)
class PreferenceResult:
    """How often ranker ``b`` beat ranker ``a`` in interleaved requests."""

    a: str
    b: str
    wins_a: int
    wins_b: int
    ties: int
    requests_with_clicks: int
    users: int
    users_preferring_a: int
    users_preferring_b: int
    share_b: float | None  # (wins_b + ties / 2) / decided requests; 0.5 = no preference
    ci: tuple[float, float] | None  # t interval of share_b, variance over users (CR2)
    p_value: float | None  # t-test of share_b = 0.5 (n_eff - 1 degrees of freedom)
    sign_test_p: float | None  # exact sign test over users preferring one ranker
    alpha: float = 0.05
    min_users: int = MIN_USERS
    note: str | None = None  # why no winner is called

    @property
    def winner(self) -> str | None:
        """The preferred ranker where ``p_value < alpha`` (with at least ``min_users`` users), else None."""
        if self.p_value is None or self.share_b is None or self.p_value >= self.alpha:
            return None
        return self.b if self.share_b > 0.5 else self.a if self.share_b < 0.5 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "winner": self.winner, "significant": self.winner is not None}


def preference(
    per_user: Mapping[str, Sequence[int]], a: str, b: str, *, alpha: float = 0.05, min_users: int = MIN_USERS
) -> PreferenceResult:
    """Summarise interleaved outcomes.

    Args:
        per_user: ``{user: (wins_a, wins_b, ties)}`` over that user's requests with clicks.
        a: the first ranker's name (the control).
        b: the second ranker's name.
        alpha: 1 - confidence level, and the level at which a winner is called.
        min_users: fewest users with a decided request for an interval, a p-value and a winner;
            below it ``note`` says so (the sign test is exact and still given).

    Example:
        >>> r = preference({f"u{i}": (0, 2, 0) if i % 4 else (1, 0, 0) for i in range(200)}, "A", "B")
        >>> r.winner, r.users_preferring_b
        ('B', 150)
        >>> preference({"u1": (0, 3, 0), "u2": (0, 1, 0)}, "A", "B").note
        'too few users to call: 2 with a decided request (at least 10)'
    """
    rows = np.asarray([tuple(v) for v in per_user.values() if sum(v) > 0], dtype=np.float64).reshape(-1, 3)
    wa, wb, ties = (int(x) for x in rows.sum(axis=0)) if len(rows) else (0, 0, 0)
    pref_a = int(np.sum(rows[:, 0] > rows[:, 1])) if len(rows) else 0
    pref_b = int(np.sum(rows[:, 1] > rows[:, 0])) if len(rows) else 0
    decided = wa + wb + ties
    if decided == 0:
        return PreferenceResult(a, b, 0, 0, 0, 0, len(rows), 0, 0, None, None, None, None, alpha, min_users)
    share = (wb + ties / 2) / decided
    sign_p = sign_test(pref_b, pref_a)
    counts = (a, b, wa, wb, ties, decided, len(rows), pref_a, pref_b, share)
    if len(rows) < max(2, min_users):
        note = f"too few users to call: {len(rows)} with a decided request (at least {max(2, min_users)})"
        return PreferenceResult(*counts, None, None, sign_p, alpha, min_users, note)
    won, weight = rows[:, 1] + rows[:, 2] / 2, rows.sum(axis=1)
    _, var, n_eff = clustered_ratio_variance(won, weight)
    half = float(stdtrit(max(1.0, n_eff - 1), 1 - alpha / 2)) * float(np.sqrt(var))
    ci = (max(0.0, share - half), min(1.0, share + half))
    return PreferenceResult(*counts, ci, share_p_value(won, weight, min_users=min_users), sign_p, alpha, min_users)


def share_p_value(won: np.ndarray, decided: np.ndarray, *, min_users: int = MIN_USERS) -> float | None:
    """Two-sided p of ``sum(won) / sum(decided) = 0.5``: the delta-method variance over users with
    the CR2 correction (:func:`~vecrank.rank.stats.clustered_ratio_variance`), a t reference with
    ``n_eff - 1`` degrees of freedom (Kish's effective number of users, at least 1). None below
    ``min_users`` users (or 2).

    Example:
        >>> round(share_p_value(np.array([2.0, 1, 2, 0] * 3), np.array([2.0, 2, 2, 1] * 3)), 4)
        0.0563
    """
    share, var, n_eff = clustered_ratio_variance(won, decided)
    if len(won) < max(2, min_users) or not np.isfinite(var):
        return None
    if var == 0:
        return 1.0 if share == 0.5 else 0.0
    return float(2 * stdtr(max(1.0, n_eff - 1), -abs(share - 0.5) / np.sqrt(var)))
