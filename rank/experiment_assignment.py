"""Assignment of users to an experiment's arms: a pure function of the user id and the salt.

The first 8 bytes of ``sha256(salt + ":" + user)`` read as a fraction ``u`` of ``[0, 1)``;
``u < holdout`` is the holdout, the rest of the interval is cut in proportion to the arms'
weights. So it is sticky (no state, the same after a restart or on another worker), uniform, and
independent between experiments whose salts differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: The unit of the users who keep the default ranker.
HOLDOUT = "holdout"


def bucket(user: str, salt: str) -> float:
    """The user's fixed position in ``[0, 1)`` for this salt (see the module docstring)."""
    digest = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(user: str, salt: str, arms: Sequence[tuple[str, float]], holdout: float = 0.0) -> str:
    """The arm of ``user``: ``holdout`` for ``u < holdout``, else by cumulative weights.

    Example:
        >>> assign("7", "salt", [("a", 1), ("b", 1)]) == assign("7", "salt", [("a", 1), ("b", 1)])
        True
    """
    u = bucket(user, salt)
    if u < holdout:
        return HOLDOUT
    v = (u - holdout) / (1.0 - holdout)
    total = float(sum(w for _, w in arms))
    edge = 0.0
    for name, weight in arms:
        edge += weight / total
        if v < edge:
            return name
    return arms[-1][0]  # v within rounding of 1.0
