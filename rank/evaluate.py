"""Offline evaluation: train the ranker on the past, compare it with baselines on what came next.

The protocol (all of it leak-free: nothing a request did not know at its instant reaches it):

* ``T`` is the ``1 - test_fraction`` quantile of the interactions' times. The model learns only from
  events before ``T``.
* **Test requests**: each user's last ``test_fraction`` of interactions is held out, cut at the
  time of the first held-out one (``t_u``); users with ``t_u >= T``, a history before it and a
  positive in ``[t_u, t_u + H]`` are evaluated, once each. What they rated in the same sitting
  counts, as it would on a site: the recommendations are for the rest of their visit.
* **Training requests**: cuts at ``train_cuts`` points between 50% and 80% of each user's
  interactions before ``T``, labels in ``[t, min(t + H, T))``; the latest 20% of them (by time)
  are the early-stopping slice.
* Every request reads the items' signals, and the popular items added to its pool, as of the
  start of its ``bucket_days`` bucket (``<= t``), computed from the events; the live index is
  never rewritten to the past. The baselines of a test request are fitted on the events up to
  that same instant, and fold in the user's own history up to ``t_u``:

  * ``popular`` — most popular in the 30 days before the instant;
  * ``cooccurrence`` — item-to-item co-occurrence;
  * ``als`` — implicit ALS (the ``implicit`` package), the user's factors recomputed from their history;
  * ``knn`` — vecrank's kNN candidates in their retrieval order (the profile vector, no ranker);
  * ``vecrank`` — the pool (kNN, plus ``popular_mix`` popular items, plus ``cooc_mix`` co-liked
    items when the spec has the ``cooc`` feature) ordered by the model.

Metrics (``vecrank.rank.metrics``): NDCG@10, Recall@10, Recall@50, MRR@10, catalog coverage and
intra-list diversity; the candidate pool's recall is reported on its own; the NDCG@10 difference
between vecrank and each other system comes with a paired bootstrap interval over users.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.rank import features as feats
from vecrank.rank import metrics
from vecrank.rank.model import RankerModel
from vecrank.rank.ranker import rank_order, request_context
from vecrank.rank.split import check_events, is_interaction, is_positive
from vecrank.rank.train import (DAY_MS, LabelConfig, ReplayRequest, TrainConfig, TrainingTable, bucket_start,
                                group_by_user, replay, replay_candidates, replay_recommender, select_ranker,
                                user_cuts)

if TYPE_CHECKING:
    from vecrank.rank.recommender import Recommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    test_fraction: float = 0.2
    horizon_days: float = 180.0
    train_cuts: int = 3
    bucket_days: float = 30.0
    max_train_requests: int = 1500
    pool: int = 100
    k: int = 10
    max_history: int = 200
    max_users: int | None = None
    popular_mix: int = 50  # popular items (as of the request's instant) added to each kNN pool
    cooc_mix: int = 50  # co-liked items added to each pool when the spec has the cooc feature
    popular_window_days: float = 30.0
    baselines: tuple[str, ...] = ("popular", "cooccurrence", "als")

    def train_fractions(self) -> list[float]:
        return [0.8] if self.train_cuts == 1 else list(np.linspace(0.5, 0.8, self.train_cuts))


@dataclass
class EvalReport:
    split: dict[str, Any]
    training: dict[str, Any]
    systems: dict[str, dict[str, Any]]
    candidate_recall: float
    comparison: dict[str, Any]
    seconds: float
    model: RankerModel | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "training": self.training, "systems": self.systems,
                "candidate_recall": self.candidate_recall, "comparison": self.comparison, "seconds": self.seconds}

    def table(self, k: int = 10) -> list[dict[str, Any]]:
        keys = [f"ndcg@{k}", f"recall@{k}", "recall@50", f"mrr@{k}", f"coverage@{k}", f"diversity@{k}"]
        return [{"system": name, **{key: _fmt(values.get(key)) for key in keys}} for name, values in self.systems.items()]


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


class Timeline:
    """All events sorted by time, for "everything up to instant t" without copying per request."""

    def __init__(self, events: Sequence[Mapping[str, Any]]):
        self.events = sorted(check_events(events), key=lambda e: int(e["timestamp"]))
        self.times = [int(e["timestamp"]) for e in self.events]
        self.by_user = group_by_user(self.events)

    def until(self, t_ms: int) -> list[Mapping[str, Any]]:
        """Events with ``timestamp <= t_ms`` (the signals' inclusive rule)."""
        return self.events[: bisect.bisect_right(self.times, int(t_ms))]

    def quantile(self, q: float) -> int:
        """The ``q`` quantile of the interactions' times (impressions, which serving logs in bulk
        whenever it runs, would drag it toward the present)."""
        times = [t for t, e in zip(self.times, self.events) if is_interaction(e)]
        return int(np.quantile(np.asarray(times, dtype=np.int64), q)) if times else 0


class PopularAsOf:
    """The most popular items as of an instant (positive events in the window before it), cached
    per instant: what replays add to each pool, and the ``popular`` baseline of a test request."""

    def __init__(self, timeline: Timeline, *, window_days: float, n: int):
        self.timeline, self.window_days, self.n = timeline, window_days, n
        self._cache: dict[int, Any] = {}

    def model(self, as_of: int):
        from vecrank.rank.baselines import MostPopular

        if as_of not in self._cache:
            self._cache[as_of] = MostPopular(window_days=self.window_days, as_of=as_of).fit(self.timeline.until(as_of))
        return self._cache[as_of]

    def __call__(self, as_of: int) -> list[str]:
        return self.model(as_of).recommend("", self.n, exclude_seen=False) if self.n else []


def training_requests(timeline: Timeline, *, before_ms: int, config: EvalConfig) -> list[ReplayRequest]:
    """Cuts at ``config.train_fractions()`` of each user's interactions before ``before_ms``,
    labels up to ``before_ms`` (exclusive); the latest ``max_train_requests`` by cut time."""
    horizon = int(config.horizon_days * DAY_MS)
    out = []
    for user, events in timeline.by_user.items():
        before = [e for e in events if int(e["timestamp"]) < before_ms]
        for cut in user_cuts(before, config.train_fractions()):
            out.append(ReplayRequest(user, cut, min(cut + horizon, before_ms - 1), bucket_start(cut, config.bucket_days)))
    out.sort(key=lambda r: (r.cut_ms, r.user))
    return out[-config.max_train_requests:]


def test_requests(timeline: Timeline, *, after_ms: int, config: EvalConfig) -> list[ReplayRequest]:
    """Each user's cut at their last ``test_fraction`` of interactions, when it falls at or after
    ``after_ms``; labels up to the horizon."""
    horizon = int(config.horizon_days * DAY_MS)
    out = []
    for user, events in timeline.by_user.items():
        cuts = user_cuts(events, [1.0 - config.test_fraction])
        if cuts and cuts[0] >= after_ms:
            out.append(ReplayRequest(user, cuts[0], cuts[0] + horizon, bucket_start(cuts[0], config.bucket_days)))
    out.sort(key=lambda r: (r.cut_ms, r.user))
    return out[: config.max_users] if config.max_users is not None else out


def train_model(recommender: Recommender, events: Sequence[Mapping[str, Any]], spec: feats.FeatureSpec, *,
                cutoff_ms: int, config: EvalConfig | None = None, train_config: TrainConfig | None = None,
                labels: LabelConfig | None = None, model_id: str = "vecrank",
                timeline: Timeline | None = None) -> RankerModel:
    """Replay training requests before ``cutoff_ms`` (see the module docstring), train with early
    stopping on the latest 20% of them, and return the (unregistered) model."""
    config = config or EvalConfig()
    labels = labels or LabelConfig()
    train_config = train_config or TrainConfig()
    timeline = timeline or Timeline(events)
    requests = training_requests(timeline, before_ms=cutoff_ms, config=config)
    popular = PopularAsOf(timeline, window_days=config.popular_window_days, n=config.popular_mix)
    started = time.monotonic()
    table = replay(recommender, timeline.by_user, requests, spec=spec, labels=labels, pool=config.pool,
                   extras=popular, cooc_mix=config.cooc_mix, max_history=config.max_history, progress=True)
    train, valid = table.split_by_time(0.2)
    log.info("replayed %d training requests in %.1fs: %d with a positive label", len(requests),
             time.monotonic() - started, len(table.groups()))
    booster, info, train_config = select_ranker(train, valid, train_config)
    return RankerModel.from_booster(model_id, spec, booster, params=train_config.to_dict(),
                                    training={"train": train.summary(), "valid": valid.summary(), **info,
                                              "cutoff_ms": cutoff_ms, "horizon_days": config.horizon_days,
                                              "bucket_days": config.bucket_days, "pool": config.pool,
                                              "popular_mix": config.popular_mix,
                                              "cooc_mix": config.cooc_mix if spec.cooc else 0,
                                              "paths": table.paths()})


def run(recommender: Recommender, events: Sequence[Mapping[str, Any]], spec: feats.FeatureSpec, *,
        config: EvalConfig | None = None, train_config: TrainConfig | None = None,
        labels: LabelConfig | None = None, model_id: str = "vecrank", catalog_size: int | None = None) -> EvalReport:
    """Train, then evaluate every system on the same test requests. See the module docstring.

    Read-only on Elasticsearch: the past is read from the events, nothing is rewritten.
    """
    from vecrank.rank.baselines import ALS, CoOccurrence

    started = time.monotonic()
    config = config or EvalConfig()
    labels = labels or LabelConfig()
    timeline = Timeline(events)
    cutoff = timeline.quantile(1.0 - config.test_fraction)
    model = train_model(recommender, events, spec, cutoff_ms=cutoff, config=config, train_config=train_config,
                        labels=labels, model_id=model_id, timeline=timeline)

    rec = replay_recommender(recommender, spec, cooc_mix=config.cooc_mix)
    popular = PopularAsOf(timeline, window_days=config.popular_window_days, n=config.popular_mix)
    horizon = int(config.horizon_days * DAY_MS)
    rankings: dict[str, dict[str, list[str]]] = defaultdict(dict)
    relevant: dict[str, set[str]] = {}
    pool_recall = []
    vectors: dict[str, np.ndarray] = {}
    by_instant: dict[int, list[ReplayRequest]] = defaultdict(list)
    for req in test_requests(timeline, after_ms=cutoff, config=config):
        by_instant[req.as_of_ms].append(req)
    for as_of in sorted(by_instant):
        past = timeline.until(as_of)
        fitted = {}
        for name in config.baselines:
            if name == "popular":
                fitted[name] = popular.model(as_of)
            elif name == "cooccurrence":
                fitted[name] = CoOccurrence().fit(past)
            elif name == "als":
                fitted[name] = ALS().fit(past)
        for req in by_instant[as_of]:
            events_u = timeline.by_user[req.user]
            history = [e for e in events_u if int(e["timestamp"]) < req.cut_ms and is_interaction(e)]
            seen = {str(e["item_id"]) for e in history}
            wanted = {str(e["item_id"]) for e in events_u
                      if req.cut_ms <= int(e["timestamp"]) <= req.cut_ms + horizon and is_positive(e)} - seen
            if not history or not wanted:
                continue
            relevant[req.user] = wanted
            for name, base in fitted.items():
                rankings[name][req.user] = base.recommend_history(history, 50)
            cset, _ = replay_candidates(rec, events_u, req, pool=config.pool, extras=popular(as_of),
                                        max_history=config.max_history)
            if not cset.candidates:
                continue
            ctx = request_context(rec.client, rec.settings, spec, cset, now_ms=req.cut_ms, profile=rec.config.profile)
            scores = model.predict(feats.compute(spec, cset.candidates, ctx))
            ids = [c.item_id for c in cset.candidates]
            rankings["knn"][req.user] = [c.item_id for c in cset.candidates if c.origin == "knn"]
            rankings["vecrank"][req.user] = [ids[i] for i in rank_order(scores, ids)]
            pool_recall.append(len(set(ids) & wanted) / len(wanted))
            for c in cset.candidates:
                if c.vector is not None:
                    vectors[c.item_id] = c.vector
    users = sorted(relevant)
    if not users:
        raise VecrankError(f"no user has a history before their own cut and a positive within {config.horizon_days:g} "
                           f"days after it, with the cut after T = {cutoff} ({len(by_instant)} cut instants): "
                           "nothing to evaluate; lower --test-fraction or raise --horizon-days")
    missing = {u for u in users if u not in rankings["knn"]}
    if missing:
        log.info("%d users had no candidates (no usable history); they count as misses for knn and vecrank", len(missing))
    vectors.update(_missing_vectors(recommender, rankings, vectors))
    systems: dict[str, Any] = {}
    per_user: dict[str, dict[str, float]] = {}
    for name in [*config.baselines, "knn", "vecrank"]:
        result = metrics.evaluate({u: rankings[name].get(u, []) for u in users}, relevant, k_values=(config.k, 50),
                                  catalog_size=catalog_size, vectors=vectors, per_user=True)
        per_user[name] = result.pop("per_user")[f"ndcg@{config.k}"]
        systems[name] = result
    comparison = _compare(systems, per_user, config.k)
    model.metrics = {"offline": systems, "comparison": comparison}
    split = {"cutoff_ms": cutoff, "test_fraction": config.test_fraction, "horizon_days": config.horizon_days,
             "bucket_days": config.bucket_days, "evaluated_users": len(users),
             "test_instants": len(by_instant), "events": len(timeline.events)}
    return EvalReport(split=split, training=model.training, systems=systems,
                      candidate_recall=round(float(np.mean(pool_recall)) if pool_recall else 0.0, 4),
                      comparison=comparison, seconds=round(time.monotonic() - started, 1), model=model)


def _compare(systems: Mapping[str, Mapping[str, Any]], per_user: Mapping[str, Mapping[str, float]], k: int) -> dict[str, Any]:
    key = f"ndcg@{k}"
    best_other = max((n for n in systems if n != "vecrank"), key=lambda n: systems[n][key])
    vs = {}
    for name in systems:
        if name != "vecrank":
            d = metrics.paired_bootstrap_diff(per_user["vecrank"], per_user[name])
            vs[name] = {"difference": round(d.mean, 5), "ci95": [round(d.low, 5), round(d.high, 5)]}
    base_value = systems[best_other][key]
    return {"best_other": best_other, f"{key}_vecrank": systems["vecrank"][key], f"{key}_best_other": base_value,
            "ratio": round(systems["vecrank"][key] / base_value, 4) if base_value else None,
            "difference": vs[best_other]["difference"], "ci95": vs[best_other]["ci95"], "vs": vs}


def _missing_vectors(recommender: Recommender, rankings: Mapping[str, Mapping[str, Sequence[str]]],
                     have: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Vectors of the baselines' top items, for the diversity metric."""
    from vecrank.rank.store import fetch_vectors

    wanted = {i for lists in rankings.values() for items in lists.values() for i in items[:10]} - set(have)
    out: dict[str, np.ndarray] = {}
    ids = sorted(wanted)
    for start in range(0, len(ids), 1000):
        out.update(fetch_vectors(recommender.client, recommender.settings.index("items"), ids[start:start + 1000]))
    return out


def write_outputs(report: EvalReport, out_dir: str | Path, *, k: int = 10) -> dict[str, str]:
    """``evaluation.json`` and ``evaluation.png`` (one bar group per metric, a bar per system)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    names = list(report.systems)
    keys = [f"ndcg@{k}", f"recall@{k}", "recall@50", f"mrr@{k}"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        values = [report.systems[name].get(key) or 0.0 for key in keys]
        ax.bar(np.arange(len(keys)) + j * width, values, width, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2, keys)
    ax.set_ylabel("mean over users")
    users = report.split.get("evaluated_users")
    ax.set_title(f"Offline evaluation, {users} users, per-user cuts after T (vecrank vs baselines)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "evaluation.png", dpi=110)
    plt.close(fig)
    return {"json": str(out / "evaluation.json"), "png": str(out / "evaluation.png")}


def load_events(client, settings) -> list[dict[str, Any]]:
    """Every event in the events index, as plain dicts (for the split)."""
    from vecrank.ingest.events import iter_events

    events = [{k: e.get(k) for k in ("user_id", "item_id", "type", "value", "timestamp")}
              for e in iter_events(client, settings)]
    # A scroll returns hits in no fixed order; sorting makes every run see the same history
    # (MovieLens users rate many movies in the same second).
    events.sort(key=lambda e: (int(e["timestamp"]), str(e["user_id"]), str(e["item_id"]), str(e["type"])))
    return events
