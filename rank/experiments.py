"""Online experiments: definitions in ``<prefix>-experiments``, user assignment, and reports.

An experiment has arms, each a ranker — a registered model version (``vecrank@3``) or ``none``
(retrieval order), plus retrieval settings (``pool``, ``num_candidates``, ``mmr_lambda``...) —
and a holdout share of users who keep the default ranker. Two types:

* ``ab``: each user is assigned to one arm for the whole experiment;
* ``interleaving``: exactly two arms; every user outside the holdout sees one list merged from
  both by team draft (:mod:`vecrank.rank.interleaving`), each item crediting its ranker.

**Assignment** is a pure function of the user id and the experiment's salt: the first 8 bytes of
``sha256(salt + ":" + user)`` read as a fraction ``u`` of ``[0, 1)``; ``u < holdout`` is the holdout,
the rest of the interval is cut in proportion to the arms' weights. So it is sticky (no state,
the same after a restart or on another worker), uniform, and independent between experiments
whose salts differ (every experiment gets a random salt unless one is given).

**Events.** The service stores each exposure (an ``impression`` carrying the request id, position,
model version and the arm label ``<experiment>/<arm>``; for interleaving the label names the
item's team) and stamps later events that cite a request id with that request's arm. The report
re-attributes by request id and user as well, so an event stored without its arm still counts,
and a click citing a request served to another user does not.

**Report** (per arm, over users exposed between start and stop): users, requests, exposures,
clicks, CTR (clicks / exposures), clicks per user, conversion (share of exposed users with a
conversion event after their first exposure; one citing a request id counts only if that request
is the experiment's), NDCG@k from click positions (per user, the mean over their requests); each
arm against the control with 95% intervals, relative lift, p-values and whether each is
significant (:mod:`vecrank.rank.experiment_report`: ``ctr`` is the CTR test with users as
clusters, the one to read; ``ctr_independent``, which assumes independent impressions, is there
for reference and never called; no test calls a result with fewer than
:data:`~vecrank.rank.stats.MIN_USERS` users per arm); the sample-ratio check of users per arm; for
interleaving the preference with its interval, p-value, exact sign test and winner; cumulative
series for the plots.

:class:`ArmStats` and :class:`ExperimentReport` live in :mod:`vecrank.rank.experiment_report`
and are importable from here too.

Example:
    >>> exp = Experiment("e1", arms=(Arm("a"), Arm("b", weight=3)), salt="s", holdout=0.1)
    >>> exp.assign("user-42"), exp.assign("user-42") == Experiment.from_doc(exp.to_doc()).assign("user-42")
    ('b', True)
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest.indices import create_index_if_missing
from vecrank.interactions import DAY_MS
from vecrank.rank import stats
from vecrank.rank.experiment_report import (
    COMPARISONS,
    ArmStats,
    ExperimentReport,
    UserValues,
    compare,
    interval_half_width,
    iso_utc,
)
from vecrank.rank.interleaving import credit, outcome, preference
from vecrank.rank.model import Registry
from vecrank.rank.recommender import RetrieveConfig

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "HOLDOUT",
    "INTERLEAVED",
    "Arm",
    "ArmStats",
    "Experiment",
    "ExperimentError",
    "ExperimentReport",
    "ExperimentStore",
    "analyse",
    "assign",
    "bucket",
    "collect_events",
    "events_query",
    "experiments_mapping",
    "interleaving_outcomes",
    "report",
    "resolve_model",
    "user_outcomes",
]

TYPES = ("ab", "interleaving")
STATUSES = ("draft", "running", "stopped")
HOLDOUT = "holdout"
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


# --- definitions -------------------------------------------------------------------------------------


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


def experiments_mapping() -> dict[str, Any]:
    date = {"type": "date", "format": "epoch_millis"}
    return {
        "dynamic": "strict",
        "properties": {
            "experiment_id": {"type": "keyword"},
            "type": {"type": "keyword"},
            "status": {"type": "keyword"},
            "salt": {"type": "keyword", "index": False},
            "holdout": {"type": "float"},
            "control": {"type": "keyword"},
            "description": {"type": "text", "index": False},
            "arms": {"type": "object", "enabled": False},
            "metrics": {"type": "object", "enabled": False},
            "created_at": date,
            "started_at": date,
            "stopped_at": date,
        },
    }


def resolve_model(client: Elasticsearch, settings: Settings, ref: str | None) -> str | None:
    """``none``/None → None; ``vecrank`` → the active version pinned (``vecrank@3``); ``vecrank@2`` →
    checked to exist. Raises :class:`VecrankError` naming the known versions otherwise."""
    if ref is None or ref.lower() == "none":
        return None

    model_id, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise ExperimentError(f"model must be MODEL_ID@VERSION or none, not {ref!r}")
    found = Registry(client, settings).get(model_id, int(version) if version else None)
    return f"{found.model_id}@{found.version}"


class ExperimentStore:
    """Experiment definitions in ``<prefix>-experiments`` (document id = experiment id)."""

    def __init__(self, client: Elasticsearch, settings: Settings):
        self.client, self.settings = client, settings
        self.index = settings.index("experiments")

    def _ensure(self) -> None:
        create_index_if_missing(self.client, self.index, experiments_mapping())

    def create(self, experiment: Experiment) -> Experiment:
        """Store a new draft; refuses an id that exists."""
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import ConflictError

        self._ensure()
        experiment.status = "draft"
        try:
            self.client.create(
                index=self.index, id=experiment.experiment_id, document=experiment.to_doc(), refresh="wait_for"
            )
        except ConflictError:
            raise ExperimentError(f"experiment {experiment.experiment_id!r} already exists") from None
        log.info(
            "Created experiment %s (%s, arms %s)",
            experiment.experiment_id,
            experiment.type,
            ", ".join(a.name for a in experiment.arms),
        )
        return experiment

    def _get_raw(self, experiment_id: str) -> tuple[Experiment, int, int]:
        resp = self.client.options(ignore_status=404).get(index=self.index, id=experiment_id)
        if not resp.body.get("found"):
            known = ", ".join(e.experiment_id for e in self.list()) or "none"
            raise ExperimentError(f"no experiment {experiment_id!r}; known: {known}")
        return Experiment.from_doc(resp["_source"]), resp["_seq_no"], resp["_primary_term"]

    def get(self, experiment_id: str) -> Experiment:
        if not self.client.indices.exists(index=self.index):
            raise ExperimentError(f"no experiment {experiment_id!r}; none created yet")
        return self._get_raw(experiment_id)[0]

    def list(self, status: str | None = None) -> list[Experiment]:
        if not self.client.indices.exists(index=self.index):
            return []
        query = {"term": {"status": status}} if status else {"match_all": {}}
        hits = self.client.search(
            index=self.index, query=query, size=1000, sort=[{"created_at": "asc"}, {"experiment_id": "asc"}]
        )["hits"]["hits"]
        return [Experiment.from_doc(h["_source"]) for h in hits]

    def running(self) -> Experiment | None:
        """The running experiment, if any (at most one runs at a time)."""
        found = self.list("running")
        if len(found) > 1:
            log.warning(
                "%d experiments are running (%s); serving uses %s",
                len(found),
                ", ".join(e.experiment_id for e in found),
                found[0].experiment_id,
            )
        return found[0] if found else None

    def _write(self, experiment: Experiment, seq_no: int, primary_term: int) -> None:
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import ConflictError

        try:
            self.client.index(
                index=self.index,
                id=experiment.experiment_id,
                document=experiment.to_doc(),
                if_seq_no=seq_no,
                if_primary_term=primary_term,
                refresh="wait_for",
            )
        except ConflictError:
            raise ExperimentError(f"experiment {experiment.experiment_id!r} changed concurrently; try again") from None

    def start(self, experiment_id: str, *, now_ms: int | None = None) -> Experiment:
        """``draft`` → ``running``. Refuses while another experiment runs."""
        self._ensure()
        experiment, seq, term = self._get_raw(experiment_id)
        if experiment.status != "draft":
            raise ExperimentError(
                f"experiment {experiment_id!r} is {experiment.status}; only a draft can start "
                "(create a new experiment to run it again)"
            )
        other = self.running()
        if other is not None:
            raise ExperimentError(f"experiment {other.experiment_id!r} is running; stop it first")
        experiment.status, experiment.started_at = "running", now_ms or int(time.time() * 1000)
        self._write(experiment, seq, term)
        log.info("Started experiment %s", experiment_id)
        return experiment

    def stop(self, experiment_id: str, *, now_ms: int | None = None) -> Experiment:
        """``running`` → ``stopped``; serving goes back to the default ranker."""
        experiment, seq, term = self._get_raw(experiment_id)
        if experiment.status != "running":
            raise ExperimentError(f"experiment {experiment_id!r} is {experiment.status}, not running")
        experiment.status, experiment.stopped_at = "stopped", now_ms or int(time.time() * 1000)
        self._write(experiment, seq, term)
        log.info("Stopped experiment %s", experiment_id)
        return experiment

    def delete(self, experiment_id: str) -> None:
        """Remove a definition that is not running (its events stay in the events index)."""
        experiment, _, _ = self._get_raw(experiment_id)
        if experiment.status == "running":
            raise ExperimentError(f"experiment {experiment_id!r} is running; stop it first")
        self.client.delete(index=self.index, id=experiment_id, refresh="wait_for")


# --- analysis ----------------------------------------------------------------------------------------


@dataclass
class _Request:
    request_id: str
    user: str
    unit: str  # arm name, "interleaved" or "holdout"
    ts: int
    shown: dict[str, int] = field(default_factory=dict)  # item -> position
    teams: dict[str, str] = field(default_factory=dict)  # item -> arm name (interleaving)
    clicked: set[str] = field(default_factory=set)


def events_query(experiment: Experiment, *, end_ms: int, attribution_ms: int) -> dict[str, Any]:
    """The events a report reads: in the window, and labelled with the experiment, citing a request
    id, or of a conversion type."""
    start = experiment.started_at or experiment.created_at
    should: list[dict[str, Any]] = [
        {"prefix": {"arm": f"{experiment.experiment_id}/"}},
        {"exists": {"field": "request_id"}},
    ]
    if experiment.conversion_types:
        should.append({"terms": {"type": list(experiment.conversion_types)}})
    return {
        "bool": {
            "filter": [{"range": {"timestamp": {"gte": start, "lte": end_ms + attribution_ms}}}],
            "should": should,
            "minimum_should_match": 1,
        }
    }


def collect_events(
    client: Elasticsearch, settings: Settings, experiment: Experiment, *, end_ms: int, attribution_ms: int = DAY_MS
) -> list[dict[str, Any]]:
    """The stored events a report of ``experiment`` needs (see :func:`events_query`)."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch.helpers import scan

    index = settings.index("events")
    if not client.indices.exists(index=index):
        return []
    client.indices.refresh(index=index)
    source = ["user_id", "item_id", "type", "timestamp", "request_id", "position", "arm", "model_version"]
    body = {"query": events_query(experiment, end_ms=end_ms, attribution_ms=attribution_ms), "_source": source}
    return [h["_source"] for h in scan(client, index=index, query=body, size=5000)]


@dataclass
class _Attributed:
    requests: dict[str, _Request]
    by_unit: dict[str, list[_Request]]  # unit -> requests of the users assigned to it
    user_unit: dict[str, str]
    converted: dict[str, int]  # user -> first conversion instant
    counts: dict[str, int]
    warnings: list[str]


def _attribute(
    exp: Experiment, events: Sequence[Mapping[str, Any]], *, start: int, end: int, attribution_ms: int
) -> _Attributed:
    """Requests from the experiment's impressions, then clicks joined by request id and user
    (a click citing another user's request does not count) and conversions by user (see the module docstring)."""
    prefix = f"{exp.experiment_id}/"
    arm_names = {a.name for a in exp.arms} | {HOLDOUT}
    warnings: list[str] = []
    counts: dict[str, int] = defaultdict(int)
    requests: dict[str, _Request] = {}
    for e in events:
        label = e.get("arm") or ""
        if e.get("type") != "impression" or not label.startswith(prefix) or not e.get("request_id"):
            continue
        ts = int(e["timestamp"])
        if not start <= ts <= end:
            counts["impressions_outside_window"] += 1
            continue
        arm = label[len(prefix) :]
        if arm not in arm_names:
            counts["impressions_unknown_arm"] += 1
            continue
        rid = e["request_id"]
        unit = arm if exp.type == "ab" or arm == HOLDOUT else INTERLEAVED
        req = requests.get(rid)
        if req is None:
            req = requests[rid] = _Request(rid, str(e["user_id"]), unit, ts)
        elif req.unit != unit:
            counts["impressions_conflicting_arm"] += 1
            continue
        req.ts = min(req.ts, ts)
        item = str(e["item_id"])
        if item not in req.shown:
            req.shown[item] = int(e.get("position") or len(req.shown) + 1)
            req.teams[item] = arm
    click_types, conversion_types = set(exp.click_types), set(exp.conversion_types)
    first_seen: dict[str, int] = {}
    user_unit: dict[str, str] = {}
    for req in sorted(requests.values(), key=lambda r: r.ts):
        if req.user not in user_unit:
            user_unit[req.user], first_seen[req.user] = req.unit, req.ts
        elif user_unit[req.user] != req.unit:
            counts["requests_of_users_in_another_arm"] += 1
    converted: dict[str, int] = {}
    for e in events:
        kind, ts = e.get("type"), int(e["timestamp"])
        if ts > end + attribution_ms:
            continue
        if kind in click_types:
            rid = e.get("request_id")
            req = requests.get(rid) if rid else None
            if req is None:
                continue
            if str(e["user_id"]) != req.user:  # the request was served to someone else
                counts["clicks_citing_another_users_request"] += 1
                continue
            item = str(e["item_id"])
            if item in req.shown:
                req.clicked.add(item)
            else:
                counts["clicks_on_items_not_shown"] += 1
        if kind in conversion_types:
            user, rid = str(e["user_id"]), e.get("request_id")
            if rid and rid not in requests:  # it cites a request of other traffic (another experiment)
                counts["conversions_citing_other_requests"] += 1
                continue
            if user in first_seen and ts >= first_seen[user]:
                converted[user] = min(converted.get(user, ts), ts)
    if counts.get("clicks_citing_another_users_request"):
        warnings.append(
            f"{counts['clicks_citing_another_users_request']} clicks cite a request served to another "
            "user; they are not counted"
        )
    if counts.get("requests_of_users_in_another_arm"):
        warnings.append(
            f"{counts['requests_of_users_in_another_arm']} requests came from users already seen in "
            "another arm (assignment changed mid-experiment?); they count in the user's first arm"
        )
    by_unit: dict[str, list[_Request]] = {u: [] for u in exp.expected_shares()}
    for req in requests.values():
        if user_unit[req.user] == req.unit:
            by_unit.setdefault(req.unit, []).append(req)
    return _Attributed(requests, by_unit, user_unit, converted, dict(counts), warnings)


def user_outcomes(
    experiment: Experiment,
    events: Iterable[Mapping[str, Any]],
    *,
    end_ms: int | None = None,
    attribution_ms: int = DAY_MS,
) -> list[dict[str, Any]]:
    """One row per exposed user: unit, first exposure, requests, exposures, clicks, converted, mean
    click NDCG, and for interleaving the user's wins (a, b, ties). Power analyses resample these."""
    exp = experiment
    start = exp.started_at or exp.created_at
    end = end_ms or exp.stopped_at or int(time.time() * 1000)
    att = _attribute(exp, list(events), start=start, end=end, attribution_ms=attribution_ms)
    assert exp.control is not None  # __post_init__ defaults it to the first arm
    a, b = exp.control, next(x.name for x in exp.arms if x.name != exp.control)
    rows: dict[str, dict[str, Any]] = {}
    for unit, reqs in att.by_unit.items():
        for r in sorted(reqs, key=lambda r: r.ts):
            row = rows.setdefault(
                r.user,
                {
                    "user": r.user,
                    "unit": unit,
                    "first_ts": r.ts,
                    "requests": 0,
                    "exposures": 0,
                    "clicks": 0,
                    "ndcg": [],
                    "wins": [0, 0, 0],
                    "converted": r.user in att.converted,
                },
            )
            row["requests"] += 1
            row["exposures"] += len(r.shown)
            row["clicks"] += len(r.clicked)
            row["ndcg"].append(stats.click_ndcg([r.shown[i] for i in r.clicked], k=exp.ndcg_k))
            if unit == INTERLEAVED:
                result = outcome(credit(r.teams, r.clicked), a, b)
                if result is not None:
                    row["wins"][0 if result == a else 1 if result == b else 2] += 1
    for row in rows.values():
        row["ndcg"] = float(np.mean(row["ndcg"]))
    return sorted(rows.values(), key=lambda r: r["first_ts"])


def analyse(
    experiment: Experiment,
    events: Iterable[Mapping[str, Any]],
    *,
    end_ms: int | None = None,
    attribution_ms: int = DAY_MS,
    n_boot: int = 2000,
    seed: int = 0,
    series_points: int = 24,
    alpha: float = 0.05,
    min_users: int = stats.MIN_USERS,
) -> ExperimentReport:
    """The report of ``experiment`` from its events (a pure function: tests feed it known events).

    Args:
        experiment: the definition.
        events: stored event documents (``user_id``, ``item_id``, ``type``, ``timestamp``,
            ``request_id``, ``position``, ``arm``...), in any order.
        end_ms: the end of the exposure window (default: stopped_at, else now).
        attribution_ms: how long after ``end_ms`` clicks and conversions still count.
        n_boot: bootstrap resamples for per-user metrics.
        seed: seeds the resampling.
        series_points: points of the cumulative series.
        alpha: 1 - confidence level of every interval, and the level at which a test is called.
        min_users: fewest users per arm (interleaving: with a decided request) for any call.
    """
    exp = experiment
    assert exp.control is not None  # __post_init__ defaults it to the first arm
    start = exp.started_at or exp.created_at
    end = end_ms or exp.stopped_at or int(time.time() * 1000)
    events = list(events)
    att = _attribute(exp, events, start=start, end=end, attribution_ms=attribution_ms)
    by_unit, converted, counts, warnings = att.by_unit, att.converted, dict(att.counts), list(att.warnings)

    def arm_stats(name: str, reqs: list[_Request], until: int | None = None) -> tuple[ArmStats, UserValues]:
        """The unit's totals and per-user values over its requests up to ``until``."""
        kept = [r for r in reqs if until is None or r.ts <= until]
        values = _user_values(kept, converted, ndcg_k=exp.ndcg_k, until=until)
        return ArmStats.from_values(name, values, requests=len(kept)), values

    arms: dict[str, ArmStats] = {}
    values: dict[str, UserValues] = {}
    for unit, reqs in by_unit.items():
        arms[unit], values[unit] = arm_stats(unit, reqs)

    comparisons: dict[str, dict[str, dict[str, Any]]] = {}
    options: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "alpha": alpha, "min_users": min_users}
    if exp.type == "ab":
        for unit in arms:
            if unit != exp.control:
                comparisons[unit] = compare(values[exp.control], values[unit], metrics=COMPARISONS, **options)
    elif HOLDOUT in arms:  # interleaving: what the interleaved lists did against the holdout's ranker
        comparisons[INTERLEAVED] = compare(
            values[HOLDOUT], values[INTERLEAVED], metrics=("ctr", "clicks_per_user", "ctr_independent"), **options
        )

    srm = stats.srm_test({u: arms[u].users for u in arms if u in exp.expected_shares()}, exp.expected_shares())
    if srm.mismatch:
        warnings.insert(0, srm.message() + " — the split is broken; do not trust these results")

    pref = None
    if exp.type == "interleaving":
        a, b = exp.control, next(x.name for x in exp.arms if x.name != exp.control)
        pref = preference(
            interleaving_outcomes(by_unit.get(INTERLEAVED, []), a, b), a, b, alpha=alpha, min_users=min_users
        )

    series = _series(
        by_unit, arm_stats, end, series_points, a_b=(pref.a, pref.b) if pref else None, alpha=alpha, min_users=min_users
    )
    counts.update(
        {
            "events_read": len(events),
            "requests": len(att.requests),
            "users": len(att.user_unit),
            "converted_users": len(converted),
        }
    )
    return ExperimentReport(exp, (start, end), arms, comparisons, srm, pref, series, counts, warnings, alpha, min_users)


def _user_values(
    reqs: Iterable[_Request], converted: Mapping[str, int], *, ndcg_k: int, until: int | None
) -> UserValues:
    """Per user of ``reqs`` (in first-seen order): clicks, exposures, mean click NDCG, converted by ``until``."""
    users: dict[str, tuple[int, int, list[float]]] = {}
    for r in reqs:
        clicks, exposures, ndcgs = users.get(r.user, (0, 0, []))
        users[r.user] = (
            clicks + len(r.clicked),
            exposures + len(r.shown),
            [*ndcgs, stats.click_ndcg([r.shown[i] for i in r.clicked], k=ndcg_k)],
        )
    return UserValues.of(
        clicks=[v[0] for v in users.values()],
        exposures=[v[1] for v in users.values()],
        ndcg=[float(np.mean(v[2])) for v in users.values()],
        converted=[1.0 if u in converted and (until is None or converted[u] <= until) else 0.0 for u in users],
    )


def interleaving_outcomes(reqs: Iterable[_Request], a: str, b: str) -> dict[str, list[int]]:
    """``{user: [wins_a, wins_b, ties]}`` over interleaved requests with clicks."""
    out: dict[str, list[int]] = {}
    for r in reqs:
        result = outcome(credit(r.teams, r.clicked), a, b)
        if result is None:
            continue
        row = out.setdefault(r.user, [0, 0, 0])
        row[0 if result == a else 1 if result == b else 2] += 1
    return out


def _series(
    by_unit: Mapping[str, list[_Request]],
    arm_stats: Callable[..., tuple[ArmStats, UserValues]],
    end: int,
    points: int,
    a_b: tuple[str, str] | None,
    *,
    alpha: float,
    min_users: int,
) -> dict[str, dict[str, list[tuple[int, float | None, float | None]]]]:
    """Cumulative metrics at ``points`` instants between the first request and the end: ``(t, value,
    half-width of its 1 - alpha interval)``, users as clusters (see :func:`interval_half_width`)."""
    all_ts = [r.ts for reqs in by_unit.values() for r in reqs]
    if not all_ts:
        return {}
    first, last = min(all_ts), min(end, max(all_ts))
    cuts = sorted({int(first + (last - first) * (i + 1) / points) for i in range(points)}) if last > first else [last]
    out: dict[str, dict[str, list[tuple[int, float | None, float | None]]]] = {m: {} for m in METRICS}
    for unit, reqs in by_unit.items():
        for metric in METRICS:
            out[metric][unit] = []
        for t in cuts:
            s, vals = arm_stats(unit, reqs, until=t)
            for metric in METRICS:
                half = interval_half_width(metric, vals, alpha=alpha, min_users=min_users)
                out[metric][unit].append((t, getattr(s, metric), half))
    if a_b is not None:
        reqs = by_unit.get(INTERLEAVED, [])
        pts = []
        for t in cuts:
            rows = np.asarray(
                list(interleaving_outcomes([r for r in reqs if r.ts <= t], *a_b).values()), dtype=float
            ).reshape(-1, 3)
            share, var, n_eff = (
                stats.clustered_ratio_variance(rows[:, 1] + rows[:, 2] / 2, rows.sum(axis=1))
                if len(rows)
                else (math.nan, math.nan, 0.0)
            )
            half = (
                stats.t_quantile(alpha, max(1.0, n_eff - 1)) * math.sqrt(var)
                if len(rows) >= max(2, min_users) and math.isfinite(var)
                else None
            )
            pts.append((t, share if math.isfinite(share) else None, half))
        out["preference"] = {f"{a_b[1]} vs {a_b[0]}": pts}
    return out


def report(
    client: Elasticsearch,
    settings: Settings,
    experiment_id: str,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    attribution_ms: int = DAY_MS,
    now_ms: int | None = None,
) -> ExperimentReport:
    """Read the experiment and its events from Elasticsearch and analyse them."""
    exp = ExperimentStore(client, settings).get(experiment_id)
    if exp.started_at is None:
        raise ExperimentError(f"experiment {experiment_id!r} has not started; nothing to report")
    end = exp.stopped_at or now_ms or int(time.time() * 1000)
    events = collect_events(client, settings, exp, end_ms=end, attribution_ms=attribution_ms)
    result = analyse(exp, events, end_ms=end, attribution_ms=attribution_ms, n_boot=n_boot, seed=seed)
    for w in result.warnings:
        log.warning("%s: %s", experiment_id, w)
    return result
