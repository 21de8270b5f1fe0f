#!/usr/bin/env python3
"""Replay a dataset's users against a running ``vecrank serve`` to run an experiment end to end.

The dataset is vecrank's generic event format (JSONL: ``user``, ``item``, ``type``, ``value``,
``timestamp``; ``scripts/prepare_movielens.py`` writes MovieLens that way). Steps:

1. ``split EVENTS --out DIR``: per user, the latest ``--holdout-fraction`` of their events go to
   ``DIR/heldout.jsonl``, the rest to ``DIR/train.jsonl``. Ingest only ``train.jsonl`` (so the
   held-out items are neither in the users' histories nor excluded as seen), refresh signals,
   and train/register the models to compare (``vecrank train``, ``vecrank evaluate``).
2. ``offline --heldout DIR/heldout.jsonl --model vecrank@1 --model vecrank@2``: each model's
   NDCG@k on the held-out items of the same users, through the same ``Ranker`` that serves, with
   a paired bootstrap interval of the difference.
3. ``run --api URL --heldout ... --arm control=vecrank@1 --arm treatment=vecrank@2 [--type
   interleaving]``: create and start the experiment, replay every held-out user for ``--sessions``
   requests through ``GET /recommendations``, simulate clicks with a position-based click model
   taken from their held-out interactions and post them (citing the request id) to
   ``POST /events``, stop the experiment, report it (JSON and PNGs), and estimate **how many
   users the test needed**: users are resampled with replacement (the observed users standing
   for the population) at growing counts, and the smallest count at which the test finds the
   offline winner significantly ahead (p < 0.05) in at least 80% of resamples is reported —
   for A/B with the CTR two-proportion test and with the clustered (delta method over users)
   CTR test, for interleaving with the report's z-test of the preference share. The users'
   documents are restored afterwards (``--no-restore`` keeps the simulated clicks).
4. ``analyse --experiment ID``: the same report and users-needed estimate for a finished
   experiment, from its stored events; ``--experiment`` repeated pools several runs of one design
   (independent samples of users) for a steadier users-needed estimate.

Click model (position-based): the user examines position p with probability ``p ** -eta`` and
clicks an examined item with its attractiveness: from the held-out interaction (rating >= 4.5:
0.9, >= 4: 0.7, >= 3: 0.3, lower: 0.1; a purchase 0.9, a cart 0.7, a click 0.5), else ``--noise``.
A clicked held-out item rated >= 4 (or bought) is also a ``purchase`` (the conversion). With
``--activity-sigma S`` users also differ in how much they click: each user's click probabilities
are multiplied by a lognormal factor of mean 1 and log-sd S (0, the default: all users alike).

Use an index prefix no real traffic reads: the simulated events stay in its events index.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import random
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("simulate_experiment")

GRID = (10, 20, 30, 40, 60, 80, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200, 4800, 6400)


# --- 1. split -----------------------------------------------------------------------------------------------


def split_events(
    events_path: str | Path, out_dir: str | Path, *, holdout_fraction: float = 0.2, min_train: int = 5
) -> dict[str, Any]:
    """Per user, the latest ``holdout_fraction`` of events (at least one) to ``heldout.jsonl``, the rest
    to ``train.jsonl``; users with fewer than ``min_train`` training events keep everything in train."""
    if not 0 < holdout_fraction < 1:
        raise ValueError("holdout_fraction must be between 0 and 1")
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(events_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                by_user[str(e["user"])].append(e)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_train = n_held = held_users = 0
    with (
        open(out / "train.jsonl", "w", encoding="utf-8") as train,
        open(out / "heldout.jsonl", "w", encoding="utf-8") as held,
    ):
        for user in sorted(by_user):
            events = sorted(by_user[user], key=lambda e: (float(e["timestamp"]), str(e["item"])))
            n_out = max(1, math.ceil(holdout_fraction * len(events)))
            if len(events) - n_out < min_train:
                n_out = 0
            for e in events[: len(events) - n_out]:
                train.write(json.dumps(e) + "\n")
            for e in events[len(events) - n_out :]:
                held.write(json.dumps(e) + "\n")
            n_train += len(events) - n_out
            n_held += n_out
            held_users += n_out > 0
    return {
        "users": len(by_user),
        "users_with_heldout": held_users,
        "train_events": n_train,
        "heldout_events": n_held,
        "train": str(out / "train.jsonl"),
        "heldout": str(out / "heldout.jsonl"),
    }


def load_heldout(path: str | Path) -> dict[str, dict[str, tuple[str, float | None]]]:
    """``{user: {item: (type, value)}}``, keeping each item's strongest interaction."""
    strength = {"impression": 0, "click": 1, "rating": 2, "cart": 3, "purchase": 4}
    out: dict[str, dict[str, tuple[str, float | None]]] = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            user, item = str(e["user"]), str(e["item"])
            kind = e.get("type", "rating")
            value = e.get("value")
            current = out[user].get(item)
            key = (strength.get(kind, 1), value if value is not None else 0)
            if current is None or key > (strength.get(current[0], 1), current[1] if current[1] is not None else 0):
                out[user][item] = (kind, None if value is None else float(value))
    return dict(out)


# --- 2. the click model --------------------------------------------------------------------------------------


@dataclass
class ClickModel:
    """Position-based clicks from held-out interactions (see the module docstring)."""

    heldout: Mapping[str, Mapping[str, tuple[str, float | None]]]
    eta: float = 1.0
    noise: float = 0.02
    seed: int = 0
    activity_sigma: float = 0.0  # > 0: users differ in how much they click (lognormal factor, mean 1)

    def activity(self, user: str) -> float:
        if self.activity_sigma <= 0:
            return 1.0
        rng = random.Random(f"{self.seed}:activity:{user}")
        return math.exp(rng.gauss(-(self.activity_sigma**2) / 2, self.activity_sigma))

    def attractiveness(self, user: str, item: str) -> float:
        found = self.heldout.get(user, {}).get(item)
        if found is None:
            return self.noise
        kind, value = found
        if kind == "rating":
            v = value or 0.0
            return 0.9 if v >= 4.5 else 0.7 if v >= 4.0 else 0.3 if v >= 3.0 else 0.1
        return {"purchase": 0.9, "cart": 0.7, "click": 0.5}.get(kind, self.noise)

    def converts(self, user: str, item: str) -> bool:
        found = self.heldout.get(user, {}).get(item)
        return found is not None and (found[0] == "purchase" or (found[0] == "rating" and (found[1] or 0) >= 4.0))

    def simulate(self, user: str, items: Sequence[str], *, request_key: str) -> list[tuple[str, int, str]]:
        """``[(item, position, type)]``: clicks, and a purchase after each converting click."""
        rng = random.Random(f"{self.seed}:{user}:{request_key}")
        activity = self.activity(user)
        out = []
        for position, item in enumerate(items, 1):
            if rng.random() < min(1.0, activity * position**-self.eta * self.attractiveness(user, item)):
                out.append((item, position, "click"))
                if self.converts(user, item):
                    out.append((item, position, "purchase"))
        return out


# --- 3. talking to the API -----------------------------------------------------------------------------------


class ApiClient:
    """Keep-alive HTTP/1.1 to the service, one connection per thread."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        parsed = urllib.parse.urlsplit(base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if data else None
            except (http.client.HTTPException, ConnectionError, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def recommend(self, user: str, k: int) -> tuple[int, dict[str, str], Any]:
        return self.call("GET", f"/recommendations?{urllib.parse.urlencode({'user': user, 'k': k})}")

    def post_events(self, events: list[dict[str, Any]]) -> tuple[int, dict[str, str], Any]:
        return self.call("POST", "/events", {"events": events})


@dataclass
class ReplayStats:
    users: int = 0
    requests: int = 0
    clicks: int = 0
    purchases: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retried_503: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def replay(
    api: ApiClient,
    users: Sequence[str],
    clicks: ClickModel,
    *,
    sessions: int = 2,
    k: int = 10,
    concurrency: int = 4,
    max_503_retries: int = 5,
) -> ReplayStats:
    """Each user makes ``sessions`` requests; their simulated clicks are posted citing the request."""
    stats = ReplayStats(users=len(users))
    lock = threading.Lock()
    started = time.monotonic()

    def count(key: str, n: int = 1) -> None:
        with lock:
            setattr(stats, key, getattr(stats, key) + n)

    def error(what: str) -> None:
        with lock:
            stats.errors[what] = stats.errors.get(what, 0) + 1

    def one_user(user: str) -> None:
        for session in range(sessions):
            for _attempt in range(max_503_retries + 1):
                status, headers, body = api.recommend(user, k)
                if status != 503:
                    break
                count("retried_503")
                time.sleep(float(headers.get("retry-after", "1")))
            if status != 200:
                error(f"GET /recommendations {status}")
                continue
            count("requests")
            shown = [it["item_id"] for it in body["items"]]
            events = [
                {"user": user, "item": item, "type": kind, "request_id": body["request_id"], "position": pos}
                for item, pos, kind in clicks.simulate(user, shown, request_key=str(session))
            ]
            if not events:
                continue
            status, _, out = api.post_events(events)
            if status != 200 or out.get("rejected"):
                error(f"POST /events {status}")
                continue
            count("clicks", sum(1 for e in events if e["type"] == "click"))
            count("purchases", sum(1 for e in events if e["type"] == "purchase"))

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one_user, users))
    stats.seconds = round(time.monotonic() - started, 1)
    return stats


def wait_for_experiment(api: ApiClient, experiment_id: str | None, timeout: float = 60.0) -> None:
    """Until ``GET /health`` names ``experiment_id`` as the running experiment (None: none runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = api.call("GET", "/health")
        running = (body.get("experiment") or {}).get("id") if status == 200 else "?"
        if running == experiment_id:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the service did not pick up experiment {experiment_id!r} within {timeout:.0f}s")


# --- users' documents ----------------------------------------------------------------------------------------


def snapshot_users(client, settings, users: Sequence[str]) -> dict[str, dict[str, Any]]:
    docs = {}
    for start in range(0, len(users), 1000):
        for d in client.mget(index=settings.index("users"), ids=list(users[start : start + 1000]))["docs"]:
            if d.get("found"):
                docs[d["_id"]] = d["_source"]
    return docs


def restore_users(client, settings, docs: Mapping[str, Mapping[str, Any]]) -> int:
    from elasticsearch import helpers

    ok, _ = helpers.bulk(
        client,
        (
            {"_op_type": "index", "_index": settings.index("users"), "_id": uid, "_source": doc}
            for uid, doc in docs.items()
        ),
        refresh="wait_for",
    )
    return ok


# --- how many users a test needs -----------------------------------------------------------------------------


def ab_significant(
    rows: Sequence[Mapping[str, Any]], idx: np.ndarray, winner: str, loser: str, *, clustered: bool = False
) -> np.ndarray:
    """Per resample (rows of ``idx``): the CTR test finds ``winner`` ahead at p < 0.05 — the
    two-proportion test over exposures, or with ``clustered`` the delta-method test over users."""
    from scipy.stats import norm

    unit = np.array([r["unit"] for r in rows])
    clicks = np.array([r["clicks"] for r in rows], dtype=float)
    exposures = np.array([r["exposures"] for r in rows], dtype=float)
    w, lo = (unit[idx] == winner).astype(float), (unit[idx] == loser).astype(float)
    c, e = clicks[idx], exposures[idx]
    cw, ew, cl, el = (c * w).sum(1), (e * w).sum(1), (c * lo).sum(1), (e * lo).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pw, pl = cw / ew, cl / el
        if clustered:
            nw, nl = w.sum(1), lo.sum(1)
            vw = nw / (nw - 1) * (((c - pw[:, None] * e) * w) ** 2).sum(1) / ew**2
            vl = nl / (nl - 1) * (((c - pl[:, None] * e) * lo) ** 2).sum(1) / el**2
            z = (pw - pl) / np.sqrt(vw + vl)
        else:
            pooled = (cw + cl) / (ew + el)
            z = (pw - pl) / np.sqrt(pooled * (1 - pooled) * (1 / ew + 1 / el))
    z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    return (z > 0) & (2 * norm.sf(np.abs(z)) < 0.05)


def interleaving_significant(rows: Sequence[Mapping[str, Any]], idx: np.ndarray, winner_is_b: bool) -> np.ndarray:
    """Per resample: the share of decided requests won by the winner is above 0.5 at p < 0.05 (the
    report's z-test, delta-method variance over users)."""
    from scipy.stats import norm

    wins = np.array([r["wins"] for r in rows], dtype=float)
    won = wins[:, 1] + wins[:, 2] / 2 if winner_is_b else wins[:, 0] + wins[:, 2] / 2
    decided = wins.sum(1)
    y, d = won[idx], decided[idx]
    n = idx.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = y.sum(1) / d.sum(1)
        var = n / (n - 1) * ((y - share[:, None] * d) ** 2).sum(1) / d.sum(1) ** 2
        z = (share - 0.5) / np.sqrt(var)
    z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    return (z > 0) & (2 * norm.sf(np.abs(z)) < 0.05)


def power_curve(
    rows: Sequence[Mapping[str, Any]],
    significant,
    *,
    grid: Sequence[int] = GRID,
    reps: int = 1000,
    seed: int = 0,
    max_factor: int = 8,
) -> list[dict[str, Any]]:
    """Power (share of ``reps`` resamples of n users, with replacement, found significant) per n."""
    rng = np.random.default_rng(seed)
    out = []
    for n in grid:
        if n > max_factor * len(rows):
            break
        idx = rng.integers(0, len(rows), size=(reps, n))
        out.append({"users": n, "power": float(significant(rows, idx).mean())})
    return out


def users_needed(curve: Sequence[Mapping[str, Any]], target: float = 0.8) -> int | None:
    for point in curve:
        if point["power"] >= target:
            return int(point["users"])
    return None


# --- offline comparison --------------------------------------------------------------------------------------


def offline(
    client,
    settings,
    heldout: Mapping[str, Mapping[str, tuple[str, float | None]]],
    models: Sequence[str],
    *,
    k: int = 10,
    users: Sequence[str] | None = None,
    min_rating: float = 4.0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """NDCG@k of each model on the users' held-out positives (rating >= ``min_rating`` or any non-rating
    interaction), ranked by the serving ``Ranker``; paired bootstrap of the difference to the first."""
    from vecrank.rank.metrics import ndcg_at_k, paired_bootstrap_diff
    from vecrank.rank.model import Registry
    from vecrank.rank.ranker import Ranker
    from vecrank.rank.recommender import Recommender

    relevant = {
        u: {i for i, (kind, v) in items.items() if kind != "rating" or (v or 0) >= min_rating}
        for u, items in heldout.items()
    }
    relevant = {u: r for u, r in relevant.items() if r and (users is None or u in users)}
    registry = Registry(client, settings)
    per_model: dict[str, dict[str, float]] = {}
    shared = Recommender(client, settings)
    for ref in models:
        model_id, _, version = ref.partition("@")
        model = registry.get(model_id, int(version) if version else None)
        ranker = Ranker(Recommender(client, settings, embedder=shared.embedder), model)
        scores = {}
        for user in sorted(relevant):
            rec = ranker.recommend(user=user, k=k)
            scores[user] = ndcg_at_k([r.item_id for r in rec.items], relevant[user], k)
        per_model[f"{model.model_id}@{model.version}"] = scores
    names = list(per_model)
    out: dict[str, Any] = {
        "users": len(relevant),
        "k": k,
        "ndcg": {m: float(np.mean(list(s.values()))) for m, s in per_model.items()},
    }
    for other in names[1:]:
        diff = paired_bootstrap_diff(per_model[other], per_model[names[0]], n=n_boot)
        out.setdefault("vs_first", {})[other] = {"diff": diff.mean, "ci95": [diff.low, diff.high]}
    out["best"] = max(out["ndcg"], key=out["ndcg"].get)
    return out


# --- 3. the whole run ----------------------------------------------------------------------------------------


def run_experiment(
    client,
    settings,
    api: ApiClient,
    heldout,
    *,
    experiment_id: str,
    arms: Sequence[Mapping[str, Any]],
    type_: str = "ab",
    expected_winner: str | None = None,
    sessions: int = 2,
    k: int = 10,
    concurrency: int = 4,
    users: Sequence[str] | None = None,
    seed: int = 0,
    restore: bool = True,
    out_dir: str | Path | None = None,
    reps: int = 1000,
    n_boot: int = 2000,
    click_model: ClickModel | None = None,
) -> dict[str, Any]:
    """Create, start, replay, stop, then :func:`analyse_experiment`; see the module docstring."""
    from vecrank.rank.experiments import Experiment, ExperimentStore

    store = ExperimentStore(client, settings)
    store.create(Experiment(experiment_id, arms=tuple(arms), type=type_, salt=f"sim-{experiment_id}-{seed}"))
    chosen = sorted(users if users is not None else heldout)
    random.Random(seed).shuffle(chosen)
    snapshot = snapshot_users(client, settings, chosen) if restore else {}
    store.start(experiment_id)
    try:
        wait_for_experiment(api, experiment_id)
        stats = replay(
            api, chosen, click_model or ClickModel(heldout, seed=seed), sessions=sessions, k=k, concurrency=concurrency
        )
    finally:
        store.stop(experiment_id)
        if restore:
            restore_users(client, settings, snapshot)
    time.sleep(1.5)  # let the service's background writer flush the last exposures
    result = analyse_experiment(
        client,
        settings,
        experiment_id,
        expected_winner=expected_winner,
        seed=seed,
        out_dir=out_dir,
        reps=reps,
        n_boot=n_boot,
    )
    result["replay"] = stats.to_dict()
    result["sessions_per_user"] = sessions
    model = click_model or ClickModel(heldout, seed=seed)
    result["click_model"] = {
        "eta": model.eta,
        "noise": model.noise,
        "activity_sigma": model.activity_sigma,
        "seed": model.seed,
    }
    if out_dir is not None:
        (Path(out_dir) / f"{experiment_id}.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def analyse_experiment(
    client,
    settings,
    experiment_id: str,
    *,
    expected_winner: str | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    reps: int = 1000,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Report a finished experiment from its stored events, and how many users its test needed."""
    from vecrank.rank.experiments import INTERLEAVED, ExperimentStore, analyse, collect_events, user_outcomes

    exp = ExperimentStore(client, settings).get(experiment_id)
    events = collect_events(client, settings, exp, end_ms=exp.stopped_at, attribution_ms=60_000)
    report = analyse(exp, events, end_ms=exp.stopped_at, attribution_ms=60_000, n_boot=n_boot, seed=seed)
    rows = user_outcomes(exp, events, end_ms=exp.stopped_at, attribution_ms=60_000)
    names = [a.name for a in exp.arms]
    winner = expected_winner or names[-1]
    loser = next(n for n in names if n != winner)
    result: dict[str, Any] = {"experiment": experiment_id, "type": exp.type, "expected_winner": winner}
    if exp.type == "ab":
        power = {
            "ctr_two_proportion": power_curve(
                rows, lambda r, i: ab_significant(r, i, winner, loser), reps=reps, seed=seed
            ),
            "ctr_clustered": power_curve(
                rows, lambda r, i: ab_significant(r, i, winner, loser, clustered=True), reps=reps, seed=seed
            ),
        }
    else:
        rows = [r for r in rows if r["unit"] == INTERLEAVED]
        winner_is_b = winner != exp.control
        power = {
            "preference": power_curve(
                rows, lambda r, i: interleaving_significant(r, i, winner_is_b), reps=reps, seed=seed
            )
        }
    result.update(
        {
            "report": report.to_dict(),
            "power": power,
            "users_needed_80pct": {test: users_needed(curve) for test, curve in power.items()},
            "users_observed": len(rows),
        }
    )
    if out_dir is not None:
        result["plots"] = report.plot(out_dir)
    return result


def pooled_power(
    client,
    settings,
    experiment_ids: Sequence[str],
    *,
    expected_winner: str | None = None,
    seed: int = 0,
    reps: int = 1000,
) -> dict[str, Any]:
    """Users needed, estimated from the users of several runs of the same design together (a steadier
    estimate than one run's: each run is an independent sample of users)."""
    from vecrank.rank.experiments import INTERLEAVED, ExperimentStore, collect_events, user_outcomes

    rows: list[dict[str, Any]] = []
    types, names = set(), None
    for experiment_id in experiment_ids:
        exp = ExperimentStore(client, settings).get(experiment_id)
        events = collect_events(client, settings, exp, end_ms=exp.stopped_at, attribution_ms=60_000)
        got = user_outcomes(exp, events, end_ms=exp.stopped_at, attribution_ms=60_000)
        rows += [r for r in got if exp.type == "ab" or r["unit"] == INTERLEAVED]
        types.add(exp.type)
        names = names or ([a.name for a in exp.arms], exp.control)
    if len(types) != 1:
        raise ValueError(f"pool runs of one type, not {sorted(types)}")
    (arms, control), kind = names, types.pop()
    winner = expected_winner or arms[-1]
    loser = next(n for n in arms if n != winner)
    if kind == "ab":
        power = {
            "ctr_two_proportion": power_curve(
                rows, lambda r, i: ab_significant(r, i, winner, loser), reps=reps, seed=seed, max_factor=3
            ),
            "ctr_clustered": power_curve(
                rows,
                lambda r, i: ab_significant(r, i, winner, loser, clustered=True),
                reps=reps,
                seed=seed,
                max_factor=3,
            ),
        }
    else:
        power = {
            "preference": power_curve(
                rows, lambda r, i: interleaving_significant(r, i, winner != control), reps=reps, seed=seed, max_factor=3
            )
        }
    return {
        "experiments": list(experiment_ids),
        "type": kind,
        "expected_winner": winner,
        "user_runs": len(rows),
        "power": power,
        "users_needed_80pct": {t: users_needed(c) for t, c in power.items()},
    }


# --- command line --------------------------------------------------------------------------------------------


def _settings(args):
    from vecrank.client import make_client
    from vecrank.settings import Settings

    settings = Settings.load({"index_prefix": args.index_prefix, "es_url": args.es_url, "state_dir": args.state_dir})
    return make_client(settings), settings


def _arm(text: str) -> dict[str, Any]:
    name, _, model = text.partition("=")
    if not name or not model:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=MODEL@VERSION")
    return {"name": name, "model": None if model == "none" else model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index-prefix", default=None)
    parser.add_argument("--es-url", default=None)
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="split events into train and held-out files")
    p.add_argument("events")
    p.add_argument("--out", required=True)
    p.add_argument("--holdout-fraction", type=float, default=0.2)
    p.add_argument("--min-train", type=int, default=5)
    p = sub.add_parser("offline", help="NDCG@k of models on the held-out items")
    p.add_argument("--heldout", required=True)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("-k", type=int, default=10)
    p = sub.add_parser("run", help="run an experiment against the API")
    p.add_argument("--api", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--arm", action="append", type=_arm, required=True)
    p.add_argument("--type", default="ab", choices=["ab", "interleaving"])
    p.add_argument("--expected-winner", default=None, help="the arm better offline [default: the last]")
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-users", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--out", default=None)
    p.add_argument("--no-restore", action="store_true")
    p.add_argument("--eta", type=float, default=1.0, help="position bias: examination = position ** -eta")
    p.add_argument("--noise", type=float, default=0.02, help="click probability of an examined item not held out")
    p.add_argument("--activity-sigma", type=float, default=0.0, help="log-sd of the users' click propensity")
    p = sub.add_parser("analyse", help="report a finished experiment again, with the users each test needed")
    p.add_argument(
        "--experiment",
        required=True,
        action="append",
        help="repeat to pool several runs of one design for the users-needed estimate",
    )
    p.add_argument("--expected-winner", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    if args.command == "split":
        print(
            json.dumps(
                split_events(args.events, args.out, holdout_fraction=args.holdout_fraction, min_train=args.min_train),
                indent=2,
            )
        )
        return 0
    client, settings = _settings(args)
    if args.command == "analyse" and len(args.experiment) > 1:
        print(
            json.dumps(
                pooled_power(
                    client,
                    settings,
                    args.experiment,
                    expected_winner=args.expected_winner,
                    seed=args.seed,
                    reps=args.reps,
                ),
                indent=2,
            )
        )
        return 0
    if args.command == "analyse":
        result = analyse_experiment(
            client,
            settings,
            args.experiment[0],
            expected_winner=args.expected_winner,
            seed=args.seed,
            reps=args.reps,
            out_dir=args.out,
        )
        print(json.dumps(_summary(result), indent=2, default=str))
        return 0
    heldout = load_heldout(args.heldout)
    if args.command == "offline":
        print(json.dumps(offline(client, settings, heldout, args.model, k=args.k), indent=2))
        return 0
    users = sorted(heldout)
    if args.max_users:
        users = random.Random(args.seed).sample(users, min(args.max_users, len(users)))
    result = run_experiment(
        client,
        settings,
        ApiClient(args.api),
        heldout,
        experiment_id=args.experiment,
        arms=args.arm,
        type_=args.type,
        expected_winner=args.expected_winner,
        sessions=args.sessions,
        k=args.k,
        concurrency=args.concurrency,
        users=users,
        seed=args.seed,
        restore=not args.no_restore,
        out_dir=args.out,
        reps=args.reps,
        click_model=ClickModel(
            heldout, eta=args.eta, noise=args.noise, seed=args.seed, activity_sigma=args.activity_sigma
        ),
    )
    print(json.dumps(_summary(result), indent=2, default=str))
    return 0


def _summary(result: Mapping[str, Any]) -> dict[str, Any]:
    summary = {k: v for k, v in result.items() if k != "report"}
    for key in ("arms", "comparisons", "interleaving"):
        summary[key] = result["report"][key]
    summary["srm"] = result["report"]["srm"]["message"]
    return summary


if __name__ == "__main__":
    sys.exit(main())
