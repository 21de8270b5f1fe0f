"""Experiment definitions: :class:`Experiment` and :class:`Arm`, their validation and their documents.

:mod:`vecrank.rank.experiments` describes the whole feature and re-exports these names.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vecrank.errors import VecrankError
from vecrank.rank.experiment_assignment import HOLDOUT, assign
from vecrank.rank.experiment_report import iso_utc
from vecrank.rank.recommender import RetrieveConfig

TYPES = ("ab", "interleaving")
STATUSES = ("draft", "running", "stopped")
INTERLEAVED = "interleaved"
METRICS = ("ctr", "clicks_per_user", "conversion", "ndcg")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ARM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_MODEL_REF = re.compile(r"^([A-Za-z0-9_.-]+)@(\d+)$")
#: Per-arm retrieval settings an experiment may vary: ``pool`` (candidates the ranker scores)
#: and these :class:`~vecrank.rank.recommender.RetrieveConfig` fields.
RETRIEVAL_KEYS = {
    "pool": int,
    "num_candidates": int,
    "exclude_seen": bool,
    "query_weight": float,
    "text_boost": float,
    "similarity_floor": float,
    "max_interests": int,
    "mmr_lambda": float,
    "group_field": str,
    "max_per_group": int,
}


class ExperimentError(VecrankError, ValueError):
    """A definition is malformed, or an operation does not fit the experiment's status."""


def _coerce(key: str, value: Any) -> Any:
    kind = RETRIEVAL_KEYS.get(key)
    if kind is None:
        raise ExperimentError(f"unknown retrieval setting {key!r}; known: {', '.join(sorted(RETRIEVAL_KEYS))}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in {"true", "1", "yes"}:
            return True
        if str(value).lower() in {"false", "0", "no"}:
            return False
        raise ExperimentError(f"retrieval setting {key!r} must be true or false, not {value!r}")
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise ExperimentError(f"retrieval setting {key!r} must be {kind.__name__}, not {value!r}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ExperimentError(f"retrieval setting {key!r} must be an integer, not {value!r}")
    if kind is float and not math.isfinite(out):
        raise ExperimentError(f"retrieval setting {key!r} must be finite")
    return out


@dataclass(frozen=True)
class Arm:
    """One arm: its share of users, its ranker and its retrieval settings.

    Args:
        name: letters, digits, ``_`` and ``-`` (``holdout`` is reserved).
        weight: relative share of the non-holdout users (A/B only).
        model: ``<model_id>@<version>``, or None for retrieval order without a ranker.
        retrieval: ``pool`` and :data:`RETRIEVAL_KEYS` overrides.
    """

    name: str
    weight: float = 1.0
    model: str | None = None
    retrieval: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ARM.fullmatch(self.name or "") or self.name == HOLDOUT or self.name == INTERLEAVED:
            raise ExperimentError(
                f"arm name {self.name!r} must be 1-32 letters, digits, '_' or '-' "
                f"and not {HOLDOUT!r} or {INTERLEAVED!r}"
            )
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise ExperimentError(f"arm {self.name!r}: weight must be a positive number, not {self.weight!r}")
        if self.model is not None and not _MODEL_REF.match(self.model):
            raise ExperimentError(f"arm {self.name!r}: model must be MODEL_ID@VERSION or none, not {self.model!r}")
        coerced = {k: _coerce(k, v) for k, v in dict(self.retrieval).items()}
        if "pool" in coerced and not 1 <= coerced["pool"] <= 1000:
            raise ExperimentError(f"arm {self.name!r}: pool must be between 1 and 1000")
        overrides = {k: v for k, v in coerced.items() if k != "pool"}
        if overrides:
            try:
                RetrieveConfig(**{k: v for k, v in overrides.items() if k != "num_candidates"})
            except ValueError as exc:
                raise ExperimentError(f"arm {self.name!r}: {exc}") from None
        object.__setattr__(self, "retrieval", coerced)
        object.__setattr__(self, "weight", float(self.weight))

    @property
    def model_ref(self) -> tuple[str, int] | None:
        if self.model is None:
            return None
        m = _MODEL_REF.match(self.model)
        assert m is not None  # __post_init__ validated the reference
        return m.group(1), int(m.group(2))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "model": self.model, "retrieval": dict(self.retrieval)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arm:
        unknown = set(data) - {"name", "weight", "model", "retrieval"}
        if unknown:
            raise ExperimentError(f"arm: unknown key(s) {sorted(unknown)}")
        return cls(
            name=data.get("name", ""),
            weight=data.get("weight", 1.0),
            model=data.get("model"),
            retrieval=data.get("retrieval") or {},
        )


@dataclass
class Experiment:
    """An experiment definition and its lifecycle (``draft`` → ``running`` → ``stopped``)."""

    experiment_id: str
    arms: tuple[Arm, ...]
    type: str = "ab"
    salt: str = field(default_factory=lambda: secrets.token_hex(8))
    holdout: float = 0.0
    control: str | None = None  # default: the first arm
    status: str = "draft"
    description: str = ""
    click_types: tuple[str, ...] = ("click",)
    conversion_types: tuple[str, ...] = ("purchase",)
    ndcg_k: int = 10
    created_at: int = field(default_factory=lambda: int(time.time() * 1000))
    started_at: int | None = None
    stopped_at: int | None = None

    def __post_init__(self) -> None:
        self.arms = tuple(a if isinstance(a, Arm) else Arm.from_dict(a) for a in self.arms)
        if not _ID.fullmatch(self.experiment_id or ""):
            raise ExperimentError(
                f"experiment id {self.experiment_id!r} must be 1-64 lowercase letters, digits, "
                "'_' or '-', starting with a letter or digit"
            )
        if self.type not in TYPES:
            raise ExperimentError(f"type must be one of {', '.join(TYPES)}, not {self.type!r}")
        if self.status not in STATUSES:
            raise ExperimentError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        names = [a.name for a in self.arms]
        if len(names) < 2:
            raise ExperimentError("an experiment needs at least two arms")
        if len(set(names)) != len(names):
            raise ExperimentError(f"arm names must differ: {names}")
        if self.type == "interleaving" and len(names) != 2:
            raise ExperimentError(f"an interleaving experiment compares exactly two arms, not {len(names)}")
        if not (isinstance(self.holdout, (int, float)) and 0.0 <= self.holdout <= 0.5):
            raise ExperimentError(f"holdout must be a share between 0 and 0.5, not {self.holdout!r}")
        self.holdout = float(self.holdout)
        self.control = self.control or names[0]
        if self.control not in names:
            raise ExperimentError(f"control {self.control!r} is not one of the arms {names}")
        if not self.salt or len(self.salt) > 128:
            raise ExperimentError("salt must be 1-128 characters")
        if not 1 <= int(self.ndcg_k) <= 1000:
            raise ExperimentError(f"ndcg_k must be between 1 and 1000, not {self.ndcg_k}")
        self.click_types, self.conversion_types = tuple(self.click_types), tuple(self.conversion_types)
        if not self.click_types:
            raise ExperimentError("click_types must name at least one event type")

    # --- assignment ---

    def assign(self, user: str) -> str:
        """The user's arm name, or ``holdout``. Interleaving users outside the holdout get
        ``interleaved`` (they see both arms)."""
        arm = assign(str(user), self.salt, [(a.name, a.weight) for a in self.arms], self.holdout)
        if self.type == "interleaving" and arm != HOLDOUT:
            return INTERLEAVED
        return arm

    def label(self, arm: str) -> str:
        """The value stored in events' ``arm`` field: ``<experiment>/<arm>``."""
        return f"{self.experiment_id}/{arm}"

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise ExperimentError(f"experiment {self.experiment_id!r} has no arm {name!r}")

    def expected_shares(self) -> dict[str, float]:
        """Each assignment unit's expected share of users (what the SRM check tests)."""
        rest = 1.0 - self.holdout
        if self.type == "interleaving":
            shares = {INTERLEAVED: rest}
        else:
            total = sum(a.weight for a in self.arms)
            shares = {a.name: rest * a.weight / total for a in self.arms}
        if self.holdout > 0:
            shares[HOLDOUT] = self.holdout
        return shares

    # --- storage ---

    def to_doc(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "type": self.type,
            "status": self.status,
            "salt": self.salt,
            "holdout": self.holdout,
            "control": self.control,
            "description": self.description,
            "arms": [a.to_dict() for a in self.arms],
            "metrics": {
                "click_types": list(self.click_types),
                "conversion_types": list(self.conversion_types),
                "ndcg_k": self.ndcg_k,
            },
            "created_at": self.created_at,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Experiment:
        metrics = doc.get("metrics") or {}
        return cls(
            experiment_id=doc["experiment_id"],
            arms=tuple(Arm.from_dict(a) for a in doc["arms"]),
            type=doc.get("type", "ab"),
            salt=doc["salt"],
            holdout=doc.get("holdout", 0.0),
            control=doc.get("control"),
            status=doc.get("status", "draft"),
            description=doc.get("description") or "",
            click_types=tuple(metrics.get("click_types", ("click",))),
            conversion_types=tuple(metrics.get("conversion_types", ("purchase",))),
            ndcg_k=int(metrics.get("ndcg_k", 10)),
            created_at=int(doc["created_at"]),
            started_at=doc.get("started_at"),
            stopped_at=doc.get("stopped_at"),
        )

    def summary(self) -> dict[str, Any]:
        """A short, secret-free view for listings and the service's health answer."""
        return {
            "id": self.experiment_id,
            "type": self.type,
            "status": self.status,
            "holdout": self.holdout,
            "control": self.control,
            "arms": [
                {"name": a.name, "weight": a.weight, "model": a.model or "none", "retrieval": dict(a.retrieval)}
                for a in self.arms
            ],
            "started_at": iso_utc(self.started_at),
            "stopped_at": iso_utc(self.stopped_at),
        }
