"""An experiment's report from its events: attribution of exposures, clicks and conversions to
requests and users, per-user outcomes, and the report's assembly (the statistics are
:mod:`vecrank.rank.experiment_report`'s)."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.interactions import DAY_MS
from vecrank.rank import stats
from vecrank.rank.experiment_assignment import HOLDOUT
from vecrank.rank.experiment_definition import INTERLEAVED, METRICS, Experiment, ExperimentError
from vecrank.rank.experiment_report import (
    COMPARISONS,
    ArmStats,
    ExperimentReport,
    UserValues,
    compare,
    interval_half_width,
)
from vecrank.rank.experiment_store import ExperimentStore
from vecrank.rank.interleaving import credit, outcome, preference

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)


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
