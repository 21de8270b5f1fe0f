"""What a request needs to know about its user, computed once from their history.

A :class:`UserState` is made from the user's latest interactions (newest first, as the users
index keeps them) and what the items know:

* ``profile`` — the text profile (:mod:`vecrank.rank.profiles`);
* ``cf_vector`` — the ALS fold-in of the user's positive history against the collaborative
  item factors (:func:`vecrank.ingest.cf.fold_in`), with the factors' version;
* ``cooc`` — the co-occurrence scores of the items co-liked with the user's recent likes
  (:func:`vecrank.ingest.cf.neighbour_scores`), the ``scores_kept`` highest (others are
  missing: NaN in the features);
* ``seq`` — the sequence scores after the user's newest interactions (what tends to come next),
  likewise;
* ``ease`` — the EASE scores of the user's newest likes (:mod:`vecrank.ingest.ease`), likewise;
* ``liked`` — the newest ``history_k`` distinct liked items that have a text vector, with their
  vector and facet values (what ``cos_hist_*`` and ``affinity.*`` compare candidates with).

"Liked" is :func:`vecrank.interactions.is_positive` everywhere. The same function computes the
state as events arrive (stored on the user document, so a request needs no other read), when a
stored state is stale (another text model or factor version is live), and in offline replays of
the past (:mod:`vecrank.rank.offline`), so that training, evaluation and serving see one thing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vecrank.ingest import cf
from vecrank.interactions import is_interaction, is_positive
from vecrank.rank.profiles import Profile, ProfileConfig, build_profile


class ItemData(Protocol):
    """What a user state reads about the history's items (an Elasticsearch fetch, or memory)."""

    def text_vectors(self, ids: Sequence[str]) -> Mapping[str, np.ndarray]: ...

    def cf_vectors(self, ids: Sequence[str]) -> Mapping[str, np.ndarray]: ...

    def neighbours(self, ids: Sequence[str]) -> Mapping[str, Sequence[tuple[str, float]]]: ...

    def sequence(self, ids: Sequence[str]) -> Mapping[str, Sequence[tuple[str, float]]]: ...

    def ease(self, ids: Sequence[str]) -> Mapping[str, Sequence[tuple[str, float]]]: ...

    def facets(self, ids: Sequence[str], names: Sequence[str]) -> Mapping[str, Mapping[str, frozenset[str]]]: ...


#: the per-item score maps a state carries: each is a feature, a pool source and a plugin param
SCORE_MAPS = ("cooc", "seq", "ease")


@dataclass(frozen=True)
class CFMeta:
    """What the fold-in needs besides the history's factors: from the live index's ``_meta``."""

    version: str
    gram: np.ndarray
    config: cf.CFConfig
    lists_index: str | None = None  # where the items' neighbour lists are (None: on the items, as before)

    @classmethod
    def of(cls, model: cf.CFModel) -> CFMeta:
        return cls(model.version, model.gram, model.config)


@dataclass(frozen=True)
class StateConfig:
    """How a user state is made. Round-trips with ``to_dict``/``from_dict`` and travels with a model.

    Attributes:
        profile: the text profile's rule.
        history_k: liked items kept for ``cos_hist_*`` and ``affinity.*``.
        facets: facet fields whose values the liked items carry.

    How many recent likes and interactions the co-occurrence and sequence scores start from is the
    collaborative model's setting (:class:`vecrank.ingest.cf.CFConfig`), fitted and stored with it.
    """

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    history_k: int = 20
    facets: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile.to_dict(), "history_k": self.history_k, "facets": list(self.facets)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateConfig:
        return cls(
            profile=ProfileConfig.from_dict(data.get("profile", {})),
            history_k=int(data.get("history_k", 20)),
            facets=tuple(data.get("facets", ())),
        )


@dataclass(frozen=True)
class LikedItem:
    item_id: str
    vector: np.ndarray = field(repr=False)
    facets: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class UserState:
    history: tuple[Mapping[str, Any], ...] = ()
    profile: Profile | None = None
    cf_vector: np.ndarray | None = field(default=None, repr=False)
    cf_version: str | None = None
    cooc: Mapping[str, float] = field(default_factory=dict, repr=False)
    seq: Mapping[str, float] = field(default_factory=dict, repr=False)
    ease: Mapping[str, float] = field(default_factory=dict, repr=False)
    liked: tuple[LikedItem, ...] = ()

    def scores(self, name: str) -> Mapping[str, float]:
        """One of the :data:`SCORE_MAPS` by name."""
        if name not in SCORE_MAPS:
            raise KeyError(f"no score map {name!r}; known: {', '.join(SCORE_MAPS)}")
        return getattr(self, name)

    @property
    def seen(self) -> frozenset[str]:
        """Items the user interacted with (an impression alone does not count)."""
        return frozenset(str(e["item_id"]) for e in self.history if is_interaction(e))

    @property
    def profile_vector(self) -> np.ndarray | None:
        return self.profile.vector if self.profile is not None else None

    @property
    def last_active_ms(self) -> int | None:
        return max((int(e["timestamp"]) for e in self.history if is_interaction(e)), default=None)

    @property
    def interactions(self) -> int:
        return sum(1 for e in self.history if is_interaction(e))

    def to_doc(self, *, model: str, config: StateConfig) -> dict[str, Any]:
        """The ``state`` object stored on the user document (read whole, not indexed)."""
        return {
            "model": model,
            "config": config_fingerprint(config),
            "profile": self.profile.to_doc(config.profile, model) if self.profile is not None else None,
            "cf": None if self.cf_vector is None else {"version": self.cf_version, "vector": _b64(self.cf_vector)},
            **{name: {"version": self.cf_version, "scores": dict(self.scores(name))} for name in SCORE_MAPS},
            "liked": [
                {
                    "item_id": li.item_id,
                    "vector": _b64(li.vector),
                    "facets": {k: sorted(v) for k, v in li.facets.items()},
                }
                for li in self.liked
            ],
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> UserState:
        cf_doc = doc.get("cf") or None
        return cls(
            history=tuple(history),
            profile=Profile.from_doc(doc["profile"]) if doc.get("profile") else None,
            cf_vector=_unb64(cf_doc["vector"]) if cf_doc else None,
            cf_version=(cf_doc or doc.get("cooc") or {}).get("version"),
            **{name: _scores(doc, name) for name in SCORE_MAPS},
            liked=tuple(
                LikedItem(
                    li["item_id"], _unb64(li["vector"]), {k: frozenset(v) for k, v in (li.get("facets") or {}).items()}
                )
                for li in doc.get("liked") or ()
            ),
        )


def _scores(doc: Mapping[str, Any], name: str) -> dict[str, float]:
    return {str(k): float(v) for k, v in ((doc.get(name) or {}).get("scores") or {}).items()}


def config_fingerprint(config: StateConfig) -> str:
    return hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def stored_state(
    doc: Mapping[str, Any] | None, *, model: str, config: StateConfig, cf_version: str | None
) -> UserState | None:
    """The user's stored state if it was made with this text model, rule and factor version."""
    state = (doc or {}).get("state")
    if not state or state.get("model") != model or state.get("config") != config_fingerprint(config):
        return None
    if (state.get("cooc") or {}).get("version") != cf_version:
        return None
    return UserState.from_doc(state, (doc or {}).get("history") or ())


def compute_state(
    history: Sequence[Mapping[str, Any]], items: ItemData, *, config: StateConfig, cf_meta: CFMeta | None
) -> UserState:
    """The user state of ``history`` (any order; interactions and impressions alike).

    Args:
        history: the user's events (``item_id``, ``type``, ``value``, ``timestamp``).
        items: reads the history items' text vectors, factors, neighbour lists and facets.
        config: the rule.
        cf_meta: the live collaborative model's Gram matrix and settings; None: no collaborative
            vector and no co-occurrence (no model fitted yet).
    """
    events = sorted((e for e in history if is_interaction(e)), key=lambda e: -int(e["timestamp"]))
    ids = sorted({str(e["item_id"]) for e in events})
    text = items.text_vectors(ids)
    profile = build_profile(events, text, config.profile) if events else None
    if profile is not None and not profile.interests:
        profile = None
    # One pass for every list of newest likes below (each is a prefix of the longest).
    kept = max(config.history_k, cf_meta.config.recent_likes if cf_meta else 0)
    newest = cf.recent_likes(events, is_positive, max(kept, cf_meta.config.ease_likes if cf_meta else 0))
    likes = newest[:kept]
    cf_vector, cooc, seq, ease = None, {}, {}, {}
    if cf_meta is not None:
        counts = cf.like_counts(events, is_positive)
        factors = items.cf_vectors(sorted(counts))
        known = [i for i in sorted(counts) if i in factors]
        if known:
            cf_vector = cf.fold_in(
                cf_meta.gram,
                np.stack([factors[i] for i in known]),
                np.array([counts[i] for i in known], dtype=np.float64),
                regularization=cf_meta.config.regularization,
                alpha=cf_meta.config.alpha,
            )
        seen = {str(e["item_id"]) for e in events}
        recent = likes[: cf_meta.config.recent_likes]
        cooc = cf.neighbour_scores(items.neighbours(recent), recent, exclude=seen, limit=cf_meta.config.scores_kept)
        latest = cf.recent_items(events, cf_meta.config.recent_interactions)
        seq = cf.neighbour_scores(
            items.sequence(latest), latest, exclude=seen, decay=True, limit=cf_meta.config.scores_kept
        )
        for_ease = newest[: cf_meta.config.ease_likes]
        ease = cf.neighbour_scores(items.ease(for_ease), for_ease, exclude=seen, limit=cf_meta.config.scores_kept)
    with_vectors = [i for i in likes if i in text][: config.history_k]
    facets = items.facets(with_vectors, config.facets) if config.facets else {}
    liked = tuple(LikedItem(i, text[i], facets.get(i, {})) for i in with_vectors)
    return UserState(
        history=tuple(history),
        profile=profile,
        cf_vector=cf_vector,
        cf_version=cf_meta.version if cf_meta is not None else None,
        cooc=cooc,
        seq=seq,
        ease=ease,
        liked=liked,
    )


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
