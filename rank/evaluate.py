"""Offline evaluation: train the ranker on the past, compare it with baselines on what came next.

One global time split at ``T`` (:func:`vecrank.rank.split.time_split`). Training rows are replayed
at cut times before ``T`` (``T - 2H``, ``T - 3H``, ...; labels in the following ``H`` days) and
early stopping uses the cut ``T - H``, so the model never sees the test period. At ``T`` the
signals are refreshed as of ``T``, and every system ranks items for the same users — those with
training history and a positive interaction after ``T`` — excluding what they saw before ``T``:

* ``popular`` — most popular in the last 30 days before ``T``;
* ``cooccurrence`` — item-to-item co-occurrence;
* ``als`` — implicit ALS (the ``implicit`` package);
* ``knn`` — vecrank's kNN candidates in their retrieval order (the profile vector, no ranker);
* ``vecrank`` — the same candidates re-ordered by the trained XGBoost model.

Metrics (``vecrank.rank.metrics``): NDCG@10, Recall@10, Recall@50, MRR@10, catalog coverage and
intra-list diversity; the candidate pool's recall is reported on its own; the NDCG@10 difference
between vecrank and the best other system comes with a paired bootstrap interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.rank import features as feats
from vecrank.rank import metrics
from vecrank.rank.model import RankerModel
from vecrank.rank.ranker import request_context
from vecrank.rank.split import is_interaction, time_split
from vecrank.rank.train import DAY_MS, LabelConfig, TrainConfig, TrainingTable, group_by_user, replay, train_ranker

if TYPE_CHECKING:
    from vecrank.rank.recommender import Recommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    test_fraction: float = 0.2
    horizon_days: float = 180.0
    train_cuts: int = 3
    pool: int = 100
    k: int = 10
    max_history: int = 200
    max_users: int | None = None
    popular_mix: int = 50  # popular items added to each kNN pool (see RetrieveConfig.popular_mix)
    baselines: tuple[str, ...] = ("popular", "cooccurrence", "als")


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


def _trim(history: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    return [e for e in history if is_interaction(e)][-n:]


def train_model(recommender: Recommender, events_by_user: Mapping[str, Sequence[Mapping[str, Any]]],
                spec: feats.FeatureSpec, *, cutoff_ms: int, config: EvalConfig | None = None,
                train_config: TrainConfig | None = None, labels: LabelConfig | None = None,
                model_id: str = "vecrank", restore_signals: bool = True) -> RankerModel:
    """Replay training rows at ``T - 2H``, ``T - 3H``... and validation rows at ``T - H`` (all
    before ``T = cutoff_ms``), train, and return the (unregistered) model.

    Replays recompute the items' signals as of each cut; with ``restore_signals`` they are
    recomputed as of now at the end.
    """
    if restore_signals:
        from vecrank.ingest.signals import refresh_signals

        try:
            return train_model(recommender, events_by_user, spec, cutoff_ms=cutoff_ms, config=config,
                               train_config=train_config, labels=labels, model_id=model_id, restore_signals=False)
        finally:
            refresh_signals(recommender.client, recommender.settings)
    config = config or EvalConfig()
    labels = labels or LabelConfig()
    train_config = train_config or TrainConfig()
    horizon = int(config.horizon_days * DAY_MS)
    recommender.config = replace(recommender.config, with_vectors=True, popular_mix=config.popular_mix)
    table = TrainingTable(feature_names=spec.names)
    for i in range(2, 2 + config.train_cuts):
        replay(recommender, events_by_user, cut_ms=cutoff_ms - i * horizon, horizon_days=config.horizon_days,
               spec=spec, labels=labels, pool=config.pool, table=table)
    valid = replay(recommender, events_by_user, cut_ms=cutoff_ms - horizon, horizon_days=config.horizon_days,
                   spec=spec, labels=labels, pool=config.pool)
    booster, info = train_ranker(table, valid, train_config)
    return RankerModel.from_booster(model_id, spec, booster, params=train_config.to_dict(),
                                    training={"train": table.summary(), "valid": valid.summary(), **info,
                                              "cutoff_ms": cutoff_ms, "horizon_days": config.horizon_days,
                                              "pool": config.pool, "popular_mix": config.popular_mix,
                                              "paths": table.paths()})


def run(recommender: Recommender, events: Sequence[Mapping[str, Any]], spec: feats.FeatureSpec, *,
        config: EvalConfig | None = None, train_config: TrainConfig | None = None,
        labels: LabelConfig | None = None, model_id: str = "vecrank", catalog_size: int | None = None) -> EvalReport:
    """Split, train, evaluate every system on the same users. See the module docstring.

    The items' signals are recomputed as of past cut times while it runs, and as of now at the
    end: run it on an index prefix that no live traffic reads.
    """
    from vecrank.ingest.signals import refresh_signals

    try:
        return _run(recommender, events, spec, config=config, train_config=train_config, labels=labels,
                    model_id=model_id, catalog_size=catalog_size)
    finally:  # replays rewrote the items' signals as of past cut times: put them back as of now
        refresh_signals(recommender.client, recommender.settings)


def _run(recommender: Recommender, events: Sequence[Mapping[str, Any]], spec: feats.FeatureSpec, *,
         config: EvalConfig | None, train_config: TrainConfig | None, labels: LabelConfig | None, model_id: str,
         catalog_size: int | None) -> EvalReport:
    from vecrank.ingest.signals import refresh_signals
    from vecrank.rank.baselines import ALS, CoOccurrence, MostPopular

    started = time.monotonic()
    config = config or EvalConfig()
    labels = labels or LabelConfig()
    recommender.config = replace(recommender.config, with_vectors=True, exclude_seen=True, popular_mix=config.popular_mix)
    split = time_split(events, test_fraction=config.test_fraction)
    cutoff = split.cutoff_ms
    train_by_user = group_by_user(split.train)
    trimmed = {u: _trim(h, config.max_history * 5) for u, h in train_by_user.items()}

    train_config = train_config or TrainConfig()
    model = train_model(recommender, trimmed, spec, cutoff_ms=cutoff, config=config, train_config=train_config,
                        labels=labels, model_id=model_id, restore_signals=False)

    # Evaluation at T.
    refresh_signals(recommender.client, recommender.settings, as_of=cutoff)
    relevant = split.test_relevant()
    users = sorted(relevant)
    if config.max_users is not None:
        users = users[: config.max_users]
    relevant = {u: relevant[u] for u in users}
    rankings: dict[str, dict[str, list[str]]] = {"knn": {}, "vecrank": {}}
    pool_recall = []
    vectors: dict[str, np.ndarray] = {}
    for user in users:
        history = _trim(train_by_user.get(user, []), config.max_history)
        cset = recommender.candidates(history=history, k=config.pool)
        if not cset.candidates:
            continue
        ctx = request_context(recommender.client, recommender.settings, spec, cset, now_ms=cutoff,
                              profile=recommender.config.profile)
        scores = model.predict(feats.compute(spec, cset.candidates, ctx))
        ids = [c.item_id for c in cset.candidates]
        rankings["knn"][user] = [c.item_id for c in cset.candidates if c.origin == "knn"]
        rankings["vecrank"][user] = [ids[i] for i in np.argsort(-scores, kind="stable")]
        pool_recall.append(len(set(ids) & relevant[user]) / len(relevant[user]))
        for c in cset.candidates:
            if c.vector is not None:
                vectors[c.item_id] = c.vector

    systems: dict[str, Any] = {}
    baselines = {"popular": MostPopular(window_days=30, as_of=cutoff), "cooccurrence": CoOccurrence(),
                 "als": ALS()}
    for name in config.baselines:
        base = baselines[name].fit(split.train)
        rankings[name] = base.recommend_all(users, 50)
    missing = {u for u in users if u not in rankings["knn"]}
    if missing:
        log.info("%d users had no candidates (no usable history); they count as misses for knn and vecrank", len(missing))
    extra = _missing_vectors(recommender, rankings, vectors)
    vectors.update(extra)
    per_user: dict[str, dict[str, float]] = {}
    for name in [*config.baselines, "knn", "vecrank"]:
        result = metrics.evaluate(rankings[name], relevant, k_values=(config.k, 50), catalog_size=catalog_size,
                                  vectors=vectors, per_user=True)
        per_user[name] = result.pop("per_user")[f"ndcg@{config.k}"]
        systems[name] = result
    best_other = max((n for n in systems if n != "vecrank"), key=lambda n: systems[n][f"ndcg@{config.k}"])
    diff = metrics.paired_bootstrap_diff(per_user["vecrank"], per_user[best_other])
    base_value = systems[best_other][f"ndcg@{config.k}"]
    vs = {}
    for name in systems:
        if name != "vecrank":
            d = metrics.paired_bootstrap_diff(per_user["vecrank"], per_user[name])
            vs[name] = {"difference": round(d.mean, 5), "ci95": [round(d.low, 5), round(d.high, 5)]}
    comparison = {"best_other": best_other, f"ndcg@{config.k}_vecrank": systems["vecrank"][f"ndcg@{config.k}"],
                  f"ndcg@{config.k}_best_other": base_value,
                  "ratio": round(systems["vecrank"][f"ndcg@{config.k}"] / base_value, 4) if base_value else None,
                  "difference": round(diff.mean, 5), "ci95": [round(diff.low, 5), round(diff.high, 5)], "vs": vs}
    model.metrics = {"offline": systems, "comparison": comparison}
    return EvalReport(split={**split.summary(), "evaluated_users": len(users)}, training=model.training,
                      systems=systems, candidate_recall=round(float(np.mean(pool_recall)) if pool_recall else 0.0, 4),
                      comparison=comparison, seconds=round(time.monotonic() - started, 1), model=model)


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
    ax.set_title(f"Offline evaluation, {users} users, time split (vecrank vs baselines)")
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
