"""User profiles: a user's history turned into one or a few unit vectors in the items' space.

The rule, in one place:

* Each history event gets a weight ``w = type_weight × 0.5 ** (age / half_life)``.
* ``type_weight`` comes from :class:`ProfileConfig.type_weights` (impression 0, click 1, cart 2,
  purchase 3 by default). A ``rating`` weighs ``(value - rating_neutral) / rating_scale``, so with
  the defaults 5★ → +1, 4★ → +0.5, 3★ → 0, 2★ → -0.5, 1★ → -1: a low rating is *negative*
  feedback. Types in ``negative_types`` weigh minus their type weight.
* The profile is ``normalize(Σ w_i · v_i)`` over the history items' vectors ``v_i``. Negative
  weights push it away from what the user disliked. A user whose positive weights add up to zero
  has no profile (cold start): dislikes alone say what to avoid, not what to show.
* Exponential decay multiplies every weight by the same factor as time passes, so a profile
  normalised at one moment stays the same at any later moment: profiles can be computed when
  events arrive and stored, and still be exact at query time.
* Multi-interest: the positively weighted items are clustered (spherical k-means, seeded) into at
  most ``max_interests`` groups; each group's weighted mean, plus its share of the negative
  feedback, is one interest vector, weighted by the group's share of the positive weight.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vecrank.interactions import DAY_MS


@dataclass(frozen=True)
class ProfileConfig:
    """How a history becomes a profile. ``to_dict``/``from_dict`` round-trip; ``fingerprint``
    identifies the rule a stored profile was made with."""

    half_life_days: float = 30.0
    type_weights: dict[str, float] = field(
        default_factory=lambda: {"impression": 0.0, "click": 1.0, "cart": 2.0, "purchase": 3.0, "rating": 1.0}
    )
    negative_types: frozenset[str] = frozenset()
    rating_type: str = "rating"
    rating_neutral: float = 3.0
    rating_scale: float = 2.0
    max_interests: int = 1

    def __post_init__(self) -> None:
        if not self.half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0, not {self.half_life_days}")
        if self.rating_scale <= 0:
            raise ValueError(f"rating_scale must be > 0, not {self.rating_scale}")
        if not 1 <= self.max_interests <= 16:
            raise ValueError(f"max_interests must be between 1 and 16, not {self.max_interests}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["negative_types"] = sorted(self.negative_types)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileConfig:
        data = dict(data)
        data["negative_types"] = frozenset(data.get("negative_types", ()))
        return cls(**data)

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def event_weight(self, event: Mapping[str, Any], now_ms: int) -> float:
        """Signed, time-decayed weight of one history event (see the module docstring)."""
        kind = event.get("type")
        if kind == self.rating_type and event.get("value") is not None:
            base = (float(event["value"]) - self.rating_neutral) / self.rating_scale
        else:
            base = float(self.type_weights.get(kind, 0.0)) if kind is not None else 0.0
            if kind in self.negative_types:
                base = -base
        age_days = max(0.0, (now_ms - int(event["timestamp"])) / DAY_MS)
        return base * 0.5 ** (age_days / self.half_life_days)

    def liked(self, history: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The events that weigh positively (the user liked the item), newest first."""
        return [
            e
            for e in sorted(history, key=lambda e: -int(e["timestamp"]))
            if self.event_weight(e, int(e["timestamp"])) > 0
        ]

    def liked_weights(self, liked: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Item id -> the summed weight of the user's likes of it, in the order of ``liked``."""
        weights: dict[str, float] = {}
        for e in liked:
            item = str(e["item_id"])
            weights[item] = weights.get(item, 0.0) + max(self.event_weight(e, int(e["timestamp"])), 0.0)
        return weights


@dataclass(frozen=True)
class Interest:
    vector: np.ndarray
    weight: float  # share of the positive weight
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """The user's interests (one unless multi-interest), strongest first. Empty: no profile."""

    interests: tuple[Interest, ...]
    n_events: int
    positive_weight: float
    negative_weight: float

    @property
    def vector(self) -> np.ndarray | None:
        """The single profile vector (the first interest), or None for a cold-start user."""
        return self.interests[0].vector if self.interests else None

    def to_doc(self, config: ProfileConfig, model: str) -> dict[str, Any]:
        """The form stored in the users index (``profile``): plain JSON, not indexed."""
        return {
            "model": model,
            "config": config.fingerprint(),
            "n_events": self.n_events,
            "positive_weight": self.positive_weight,
            "negative_weight": self.negative_weight,
            "interests": [
                {"vector": [round(float(x), 7) for x in i.vector], "weight": i.weight, "items": list(i.items)}
                for i in self.interests
            ],
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Profile:
        return cls(
            tuple(
                Interest(np.asarray(i["vector"], dtype=np.float32), float(i["weight"]), tuple(i.get("items", ())))
                for i in doc.get("interests", ())
            ),
            int(doc.get("n_events", 0)),
            float(doc.get("positive_weight", 0)),
            float(doc.get("negative_weight", 0)),
        )


def _normalize(v: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 1e-9 and math.isfinite(norm) else None


def build_profile(
    history: Sequence[Mapping[str, Any]], vectors: Mapping[str, np.ndarray], config: ProfileConfig, *, seed: int = 0
) -> Profile:
    """Turn ``history`` (events with item_id, type, value, timestamp) into a :class:`Profile`.

    Ages are measured from the newest event: the normalized vectors would be the same from any
    reference time, and this one keeps the weights near 1 instead of underflowing for old users.

    Args:
        history: the user's events; those whose item has no vector are ignored.
        vectors: item id -> unit vector.
        config: weights, half-life, number of interests.
        seed: for the k-means initialisation.
    """
    usable = [e for e in history if str(e.get("item_id")) in vectors]
    if not usable:
        return Profile((), 0, 0.0, 0.0)
    now = max(int(e["timestamp"]) for e in usable)
    ids = [str(e["item_id"]) for e in usable]
    weights = np.array([config.event_weight(e, now) for e in usable], dtype=np.float64)
    vecs = np.stack([np.asarray(vectors[i], dtype=np.float64) for i in ids])
    pos, neg = weights > 0, weights < 0
    positive, negative = float(weights[pos].sum()), float(-weights[neg].sum())
    if positive <= 0:
        return Profile((), len(usable), positive, negative)
    negative_sum = (weights[neg, None] * vecs[neg]).sum(axis=0) if neg.any() else np.zeros(vecs.shape[1])

    k = min(config.max_interests, int(pos.sum()))
    labels = _spherical_kmeans(vecs[pos], weights[pos], k, seed) if k > 1 else np.zeros(int(pos.sum()), dtype=int)
    pos_ids = [i for i, p in zip(ids, pos) if p]
    interests = []
    for c in range(k):
        members = labels == c
        share = float(weights[pos][members].sum()) / positive
        total = (weights[pos][members, None] * vecs[pos][members]).sum(axis=0) + share * negative_sum
        unit = _normalize(total)
        if unit is not None and share > 0:
            order = np.argsort(-weights[pos][members])
            interests.append(Interest(unit, share, tuple(np.array(pos_ids)[members][order][:10])))
    interests.sort(key=lambda i: -i.weight)
    return Profile(tuple(interests), len(usable), positive, negative)


def _spherical_kmeans(x: np.ndarray, w: np.ndarray, k: int, seed: int, iterations: int = 25) -> np.ndarray:
    """Weighted k-means on the unit sphere (cosine), k-means++ seeding with a fixed seed."""
    rng = np.random.default_rng(seed)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    centers = [x[int(np.argmax(w))]]
    while len(centers) < k:
        dist = 1 - np.max(x @ np.stack(centers).T, axis=1)
        p = np.clip(dist, 0, None) * w
        if p.sum() <= 0:
            break
        centers.append(x[rng.choice(len(x), p=p / p.sum())])
    c = np.stack(centers)
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iterations):
        new = np.argmax(x @ c.T, axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            members = labels == j
            if members.any():
                m = (w[members, None] * x[members]).sum(axis=0)
                c[j] = m / max(np.linalg.norm(m), 1e-12)
    return labels
