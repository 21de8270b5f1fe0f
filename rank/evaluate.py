"""Offline evaluation: rolling refits, every system fitted only on what came before each request.

The protocol (leak-free: nothing a request did not know at its instant reaches it):

* **Refit instants** ``R_1 < ... < R_m`` are the ``i / refits`` quantiles of the interactions'
  times. At each one every system is refitted on the events before it — vecrank's collaborative
  model and neighbours (``vecrank cf fit``), its ranker, and the baselines — as a site that
  retrains periodically would. Between refits, signals move with the events (as of each
  request's ``bucket_days`` bucket) and every user's state follows their own events.
* **Test requests**: each user's last ``test_fraction`` of interactions is held out, cut at the
  time of the first held-out one (``t_u``). Users whose cut falls after the first ranker instant
  (the ``first_test_quantile`` of the times: the history before it is the burn-in), with a history
  before it and a like (:func:`vecrank.interactions.is_positive`) in ``[t_u, t_u + H]`` of an item
  they had not seen, are evaluated once each, by the systems as refitted at the last refit
  instant before ``t_u``, folding in the user's own history up to ``t_u``.
* **Training requests** for the ranker of refit instant ``R``: cuts at ``train_cuts`` points
  between 50% and 80% of each user's interactions before ``R``, labelled exactly as the test is
  (a like in ``[t, min(t + H, R))``); the latest 20% of them by time choose the tree shape and
  stop the boosting. The model that serves afterwards (``--activate``) is trained the same way on
  everything.
* **Systems**: ``popular`` (30-day popularity as of the request's bucket, the signals'
  ``popular_rank``), ``cooccurrence``, ``itemknn``, ``als`` (vecrank's own collaborative model
  alone: implicit ALS, the user folded in), ``ease``, ``text`` (the text-profile kNN alone) and
  ``vecrank`` (the pool of :class:`~vecrank.rank.offline.PoolConfig` ordered by the ranker,
  then through the cold-item exposure policy ``ReplayConfig.cold_slots`` exactly as serving
  applies it: :func:`vecrank.rank.exposure.place_cold`, with the cold mask from the signals as
  of the request's bucket, so its top 50 is what serving would show).

Metrics (:mod:`vecrank.rank.metrics`): NDCG@10, Recall@10, Recall@50, MRR@10, coverage and
diversity, each with a bootstrap interval over users; the NDCG@10 difference between vecrank and
each other system with a paired bootstrap interval; the **cold-item slice**: Recall@50 on the
relevant items that had fewer than ``cold_threshold`` interactions before the request.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest.events import iter_events
from vecrank.interactions import DAY_MS, Interactions
from vecrank.rank import features as feats
from vecrank.rank import metrics
from vecrank.rank.baselines import CoOccurrence
from vecrank.rank.baselines_item import EASE, ItemKNN
from vecrank.rank.exposure import place_cold
from vecrank.rank.model import RankerModel
from vecrank.rank.offline import Catalog, Past, ReplayConfig  # ReplayConfig: re-exported, where it was
from vecrank.rank.ranker import rank_order
from vecrank.rank.train import ReplayRequest, TrainConfig, fit_ranker, replay, user_cuts

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)

COLLABORATIVE_BASELINES = ("cooccurrence", "itemknn", "als", "ease")
BASELINES = ("popular", *COLLABORATIVE_BASELINES, "text")


@dataclass(frozen=True)
class EvalConfig:
    """The protocol's settings (documented defaults; see the module docstring).

    Attributes:
        test_fraction: each user's held-out share of interactions.
        refits: refit instants at the ``i / refits`` quantiles of the interactions' times.
        first_test_quantile: test users' cuts come after this quantile (the burn-in before it).
        horizon_days: how long after a cut a like counts.
        train_cuts: training cuts per user, from ``train_from`` to ``1 - test_fraction`` of their
            history before an instant (the last one where the test cuts).
        bucket_days: the signals' refresh period.
        cold_threshold: an item with fewer interactions than this before a request is cold.
        k: the cutoff of the headline metrics.
        max_train_requests: at most this many training requests per ranker (the latest).
    """

    test_fraction: float = 0.2
    refits: int = 10
    first_test_quantile: float = 0.2
    horizon_days: float = 180.0
    train_cuts: int = 3
    train_from: float = 0.5
    bucket_days: float = 1.0
    cold_threshold: int = 5
    k: int = 10
    max_train_requests: int = 50_000

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1 or not 0 < self.first_test_quantile < 1:
            raise ValueError("test_fraction and first_test_quantile must be between 0 and 1")
        if self.refits < 2:
            raise ValueError(f"refits must be at least 2, not {self.refits}")

    def train_fractions(self) -> list[float]:
        end = 1.0 - self.test_fraction
        return [end] if self.train_cuts == 1 else [float(f) for f in np.linspace(self.train_from, end, self.train_cuts)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    split: dict[str, Any]
    training: dict[str, Any]
    systems: dict[str, dict[str, Any]]
    candidate_recall: dict[str, float]
    comparison: dict[str, Any]
    slices: dict[str, Any]
    seconds: float
    model: RankerModel | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "training": self.training,
            "systems": self.systems,
            "candidate_recall": self.candidate_recall,
            "comparison": self.comparison,
            "slices": self.slices,
            "seconds": self.seconds,
        }

    def table(self, k: int = 10) -> list[dict[str, Any]]:
        keys = [f"ndcg@{k}", f"recall@{k}", "recall@50", f"mrr@{k}", f"coverage@{k}", f"diversity@{k}"]
        cold = self.slices.get("cold_items", {}).get("systems", {})
        return [
            {**row, "cold recall@50": _fmt(cold.get(row["system"], {}).get("recall@50"))} for row in self._rows(keys)
        ]

    def _rows(self, keys: list[str]) -> list[dict[str, Any]]:
        """A table row per system: its name and its ``keys``' values, formatted."""
        return [
            {"system": name, **{key: _fmt(values.get(key)) for key in keys}} for name, values in self.systems.items()
        ]


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


# --- requests -------------------------------------------------------------------------------------


def refit_instants(log_: Interactions, refits: int) -> list[int]:
    """The ``i / refits`` quantiles (i = 1 .. refits - 1) of the interactions' times."""
    return sorted({log_.quantile(i / refits) for i in range(1, refits)})


def _interaction_times(past: Past, user: str) -> np.ndarray:
    rows = past.by_user[user]
    return past.log.timestamp[rows[past.log.interaction[rows]]]


def training_requests(past: Past, *, before_ms: int | None, config: EvalConfig) -> list[ReplayRequest]:
    """Cuts at ``config.train_fractions()`` of each user's interactions before ``before_ms`` (all
    when None), labels up to ``before_ms`` (exclusive) and the horizon; the latest
    ``max_train_requests`` by cut time. Cuts before the first refit instant are left out: no
    collaborative model existed yet."""
    horizon = int(config.horizon_days * DAY_MS)
    first = past.refits[0] if past.refits else 0
    out = []
    for user in past.by_user:
        times = _interaction_times(past, user)
        if before_ms is not None:
            times = times[times < before_ms]
        for cut in user_cuts(times.tolist(), config.train_fractions()):
            if cut >= first:
                end = cut + horizon if before_ms is None else min(cut + horizon, before_ms - 1)
                out.append(ReplayRequest(user, cut, end))
    out.sort(key=lambda r: (r.cut_ms, r.user))
    return out[-config.max_train_requests :]


def test_requests(past: Past, *, after_ms: int, config: EvalConfig) -> list[ReplayRequest]:
    """Each user's cut at their last ``test_fraction`` of interactions, when it is at or after ``after_ms``."""
    horizon = int(config.horizon_days * DAY_MS)
    out = []
    for user in past.by_user:
        cuts = user_cuts(_interaction_times(past, user).tolist(), [1.0 - config.test_fraction])
        if cuts and cuts[0] >= after_ms:
            out.append(ReplayRequest(user, cuts[0], cuts[0] + horizon))
    out.sort(key=lambda r: (r.cut_ms, r.user))
    return out


# --- training -------------------------------------------------------------------------------------


def fit_rankers(
    past: Past,
    instants: Sequence[int | None],
    *,
    replay_config: ReplayConfig,
    config: EvalConfig,
    train_config: TrainConfig | None = None,
    model_id: str = "vecrank",
) -> tuple[dict[int | None, RankerModel], dict[str, Any]]:
    """One ranker per instant (None: on everything), each trained on the requests before it.

    The requests of all instants are replayed once; each ranker sees its own requests with the
    labels known before its instant (:meth:`TrainingTable.before`).
    """
    train_config = train_config or TrainConfig()
    per_instant = {r: training_requests(past, before_ms=r, config=config) for r in instants}
    # One replay per (user, cut), labelled to the horizon; each ranker truncates the labels at its instant.
    horizon = int(config.horizon_days * DAY_MS)
    unique = sorted(
        {ReplayRequest(q.user, q.cut_ms, q.cut_ms + horizon) for reqs in per_instant.values() for q in reqs},
        key=lambda r: (r.cut_ms, r.user),
    )
    started = time.monotonic()
    table = replay(past, unique, spec=replay_config.spec, pool=replay_config.pool, progress=True)
    log.info(
        "replayed %d training requests for %d rankers in %.1fs", len(unique), len(instants), time.monotonic() - started
    )
    models: dict[int | None, RankerModel] = {}
    summaries = []
    for r in instants:
        keep = {f"{q.user}@{q.cut_ms}" for q in per_instant[r]}
        subset = table.before(r if r is not None else np.iinfo(np.int64).max, keep)
        if not len(subset):
            log.info("no training request with a like before %s: no ranker there", r)
            continue
        booster, info, chosen = fit_ranker(subset, train_config)
        training = {
            "instant_ms": r,
            **info,
            "horizon_days": config.horizon_days,
            "config": replay_config.to_dict(),
        }
        models[r] = RankerModel.from_booster(
            model_id, replay_config.spec, booster, params=chosen.to_dict(), training=training
        )
        summaries.append(
            {
                "instant_ms": r,
                "requests": info["train"]["requests"] + info["valid"]["requests"],
                "valid_ndcg": round(info["best_score"], 5),
                "shape": {"max_depth": chosen.max_depth, "min_child_weight": chosen.min_child_weight},
            }
        )
        log.info("ranker at %s: %d requests, validation ndcg@10 %.4f", r, summaries[-1]["requests"], info["best_score"])
    return models, {"requests_replayed": len(unique), "rankers": summaries}


# --- the evaluation -------------------------------------------------------------------------------


def load_past(
    client: Elasticsearch,
    settings: Settings,
    *,
    replay_config: ReplayConfig,
    config: EvalConfig,
    events: Sequence[Mapping[str, Any]] | None = None,
) -> Past:
    """The events index and the live catalog, with the protocol's refit instants."""
    log_ = Interactions.from_events(events if events is not None else load_events(client, settings))
    if not len(log_):
        raise VecrankError(f"no events in {settings.index('events')}: ingest some first")
    catalog = Catalog.from_index(client, settings, replay_config.spec)
    return Past(
        log_,
        catalog,
        refits=refit_instants(log_, config.refits),
        cf_config=replay_config.cf,
        state_config=replay_config.state,
        spec=replay_config.spec,
        bucket_days=config.bucket_days,
    )


def run(
    past: Past,
    *,
    replay_config: ReplayConfig | None = None,
    config: EvalConfig | None = None,
    train_config: TrainConfig | None = None,
    model_id: str = "vecrank",
    final_model: bool = False,
) -> EvalReport:
    """Train the rankers, then evaluate every system on the same test requests (module docstring).

    Args:
        past: the events and the catalog (:func:`load_past`).
        final_model: also train the model that serves afterwards, on everything (``report.model``).
    """

    started = time.monotonic()
    replay_config = replay_config or ReplayConfig()
    config = config or EvalConfig()
    first_test = past.log.quantile(config.first_test_quantile)
    rankers = [r for r in past.refits if r >= first_test]
    if not rankers:
        raise VecrankError("no refit instant after the burn-in: too few distinct event times to evaluate")
    models, training = fit_rankers(
        past,
        [*rankers, *([None] if final_model else [])],
        replay_config=replay_config,
        config=config,
        train_config=train_config,
        model_id=model_id,
    )
    tests = test_requests(past, after_ms=rankers[0], config=config)
    by_refit: dict[int, list[ReplayRequest]] = defaultdict(list)
    for req in tests:
        refit = past.refit_before(req.cut_ms)
        assert refit is not None  # the test requests start after the first refit (rankers[0])
        by_refit[refit].append(req)

    rankings: dict[str, dict[str, list[str]]] = defaultdict(dict)
    relevant: dict[str, set[str]] = {}
    cold: dict[str, set[str]] = {}
    pool_recall: dict[str, list[float]] = defaultdict(list)
    vectors: dict[str, np.ndarray] = {}
    log_ = past.log
    for refit in sorted(by_refit):
        prior = [log_.event(n) for n in range(log_.count_before(refit))]
        fitted = {"cooccurrence": CoOccurrence().fit(prior), "itemknn": ItemKNN().fit(prior), "ease": EASE().fit(prior)}
        ranker = models.get(max((r for r in models if r is not None and r <= refit), default=None))
        for req in by_refit[refit]:
            replayed = past.replay(req.user, req.cut_ms, replay_config.pool)
            if replayed is None:
                continue
            seen = replayed.state.seen
            wanted = set(past.future_likes(req.user, req.cut_ms, req.label_end_ms)) - seen
            if not wanted:
                continue
            relevant[req.user] = wanted
            cold[req.user] = {i for i in wanted if _interactions_before(past, i, req.cut_ms) < config.cold_threshold}
            history = list(replayed.state.history)
            for name, base in fitted.items():
                rankings[name][req.user] = base.recommend_history(history, 50)
            rankings["als"][req.user] = _als_ranking(past, replayed, 50)
            rankings["popular"][req.user] = _popular_ranking(past, req.cut_ms, seen, 50)
            rankings["text"][req.user] = replayed.source_order.get("text", [])[:50]
            ids = replayed.item_ids
            if ranker is not None and ids:
                scores = ranker.predict(feats.compute(replay_config.spec, replayed.candidates, replayed.context))
                rankings["vecrank"][req.user] = [ids[i] for i in _served_order(scores, replayed, replay_config, 50)]
            pool_recall["pool"].append(len(set(ids) & wanted) / len(wanted))
            for source, items in replayed.source_order.items():
                pool_recall[source].append(len(set(items) & wanted) / len(wanted))
    users = sorted(relevant)
    if not users:
        raise VecrankError(
            f"no user has a history before their own cut and a like within {config.horizon_days:g} "
            f"days after it, with the cut after the burn-in ({len(tests)} candidates): nothing to "
            "evaluate; lower --test-fraction or raise --horizon-days"
        )
    for n in range(len(past.catalog)):
        if past.catalog.has_vector[n]:
            vectors.setdefault(past.catalog.ids[n], past.catalog.vectors[n])
    names = [*BASELINES, "vecrank"]
    systems, per_user = _score_systems(names, rankings, relevant, users, config, len(past.catalog), vectors)
    comparison = compare(systems, per_user, f"ndcg@{config.k}")
    cold_users = [u for u in users if cold[u]]
    cold_systems, cold_per_user = (
        _score_systems(names, rankings, cold, cold_users, config, None, None) if cold_users else ({}, {})
    )
    policy = {"cold_slots": _policy_summary(replay_config)}
    slices = {
        "cold_items": {
            "threshold": config.cold_threshold,
            "vecrank_policy": policy,
            "users": len(cold_users),
            "relevant_items": sum(len(cold[u]) for u in cold_users),
            "systems": {
                n: {"recall@50": v["recall@50"], "recall@50_ci95": v["recall@50_ci95"]} for n, v in cold_systems.items()
            },
            "comparison": compare(cold_systems, cold_per_user, "recall@50", others=COLLABORATIVE_BASELINES)
            if cold_users
            else {},
        }
    }
    final = models.get(None)
    if final is not None:
        final.metrics = {"offline": systems, "comparison": comparison, "cold_items": slices["cold_items"]}
    split = {
        "refits_ms": past.refits,
        "rankers_ms": rankers,
        "first_test_ms": rankers[0],
        "test_fraction": config.test_fraction,
        "horizon_days": config.horizon_days,
        "bucket_days": config.bucket_days,
        "evaluated_users": len(users),
        "test_requests": len(tests),
        "events": len(log_),
        "items": len(past.catalog),
        "config": config.to_dict(),
    }
    return EvalReport(
        split=split,
        training={**training, "config": replay_config.to_dict(), "policy": policy},
        systems=systems,
        candidate_recall={k: round(float(np.mean(v)), 4) for k, v in pool_recall.items()},
        comparison=comparison,
        slices=slices,
        seconds=round(time.monotonic() - started, 1),
        model=final,
    )


def _policy_summary(replay_config: ReplayConfig) -> dict[str, Any]:
    """What the report says of vecrank's exposure policy: its settings, whether it is on, and
    the positions of a top 50 it keeps for cold items."""
    policy = replay_config.cold_slots
    return {**policy.to_dict(), "on": policy.applies(50), "slots@50": policy.slots(50)}


def _served_order(scores: np.ndarray, replayed: Any, replay_config: ReplayConfig, k: int) -> np.ndarray:
    """The top ``k`` serving shows for a replayed request: the model's order through the cold
    slots, with the cold mask from the candidates' signals as of the request's bucket
    (``Past.signals(t)["interactions"]``), as serving reads ``signals.interactions``."""
    policy = replay_config.cold_slots
    counts = replayed.candidates.signals.get("interactions")
    cold = policy.cold_mask(counts if counts is not None else np.zeros(len(scores)))
    return place_cold(rank_order(scores, replayed.item_ids), cold, k=k, policy=policy)


def _interactions_before(past: Past, item: str, t_ms: int) -> int:
    code = past._log_code[past.catalog.index(item)] if past.catalog.index(item) is not None else -1
    if code < 0:
        return 0
    return int(past.interaction_counts(t_ms)[code])


def _als_ranking(past: Past, replayed: Any, k: int) -> list[str]:
    """The collaborative model alone: its fold-in's top ``k`` unseen items with a vector."""
    model = past.model(replayed.cut_ms)
    if model is None or replayed.state.cf_vector is None:
        return []
    scores = model.factors @ replayed.state.cf_vector
    seen = replayed.state.seen
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
    return [model.item_ids[i] for i in order if model.item_ids[i] not in seen][:k]


def _popular_ranking(past: Past, t_ms: int, seen: frozenset[str], k: int) -> list[str]:
    ranks = past.signals(t_ms).get("popular_rank")
    if ranks is None:
        return []
    order = np.flatnonzero(~np.isnan(ranks))
    order = order[np.argsort(ranks[order], kind="stable")]
    return [past.catalog.ids[n] for n in order if past.catalog.ids[n] not in seen][:k]


def _score_systems(
    names: Sequence[str],
    rankings: Mapping[str, Mapping[str, list[str]]],
    relevant: Mapping[str, set[str]],
    users: Sequence[str],
    config: EvalConfig,
    catalog_size: int | None,
    vectors: Mapping[str, np.ndarray] | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, float]]]]:
    systems: dict[str, dict[str, Any]] = {}
    per_user: dict[str, dict[str, dict[str, float]]] = {}
    rel = {u: relevant[u] for u in users}
    for name in names:
        result = metrics.evaluate(
            {u: rankings[name].get(u, []) for u in users},
            rel,
            k_values=(config.k, 50),
            catalog_size=catalog_size,
            vectors=vectors,
            per_user=True,
        )
        per_user[name] = result.pop("per_user")
        for key in (f"ndcg@{config.k}", "recall@50"):
            ci = metrics.bootstrap_ci(per_user[name][key])
            result[f"{key}_ci95"] = [round(ci.low, 5), round(ci.high, 5)]
        systems[name] = result
    return systems, per_user


def compare(
    systems: Mapping[str, Mapping[str, Any]],
    per_user: Mapping[str, Mapping[str, Mapping[str, float]]],
    key: str,
    *,
    others: Sequence[str] | None = None,
) -> dict[str, Any]:
    """vecrank against every other system on ``key``: paired bootstrap differences, and the best other."""
    candidates = [n for n in (others or systems) if n in systems and n != "vecrank"]
    best_other = max(candidates, key=lambda n: (systems[n][key] or 0.0))
    vs = {}
    for name in candidates:
        d = metrics.paired_bootstrap_diff(per_user["vecrank"][key], per_user[name][key])
        vs[name] = {"difference": round(d.mean, 5), "ci95": [round(d.low, 5), round(d.high, 5)]}
    base_value = systems[best_other][key]
    return {
        "metric": key,
        "best_other": best_other,
        f"{key}_vecrank": systems["vecrank"][key],
        f"{key}_best_other": base_value,
        "ratio": round(systems["vecrank"][key] / base_value, 4) if base_value else None,
        "difference": vs[best_other]["difference"],
        "ci95": vs[best_other]["ci95"],
        "vs": vs,
    }


# --- output ---------------------------------------------------------------------------------------


def write_outputs(report: EvalReport, out_dir: str | Path, *, k: int = 10) -> dict[str, str]:
    """``evaluation.json`` and ``evaluation.png``: per metric a bar per system with its 95%
    bootstrap interval, and the cold-item slice's Recall@50."""
    import matplotlib  # heavy optional dependency, only for the plot

    matplotlib.use("Agg")
    # lazy: matplotlib takes 0.8 s to import; only the plots need it
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    names = list(report.systems)
    panels = [
        (f"ndcg@{k}", report.systems, f"NDCG@{k}"),
        ("recall@50", report.systems, "Recall@50"),
        ("recall@50", report.slices.get("cold_items", {}).get("systems", {}), "Recall@50, cold items"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4.5))
    for ax, (key, systems, title) in zip(axes, panels):
        values = [systems.get(n, {}).get(key) or 0.0 for n in names]
        cis = [systems.get(n, {}).get(f"{key}_ci95") or [v, v] for n, v in zip(names, values)]
        err = np.array([[v - lo for (lo, _), v in zip(cis, values)], [hi - v for (_, hi), v in zip(cis, values)]])
        colors = ["tab:red" if n == "vecrank" else "tab:gray" for n in names]
        ax.bar(range(len(names)), values, yerr=np.clip(err, 0, None), color=colors, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_title(title)
    users = report.split.get("evaluated_users")
    cold_users = report.slices.get("cold_items", {}).get("users")
    fig.suptitle(
        f"Offline evaluation: {users} users ({cold_users} with cold items), rolling refits; "
        "bars: mean, whiskers: 95% bootstrap interval"
    )
    fig.tight_layout()
    fig.savefig(out / "evaluation.png", dpi=110)
    plt.close(fig)
    return {"json": str(out / "evaluation.json"), "png": str(out / "evaluation.png")}


def load_events(client: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    """Every event in the events index, as plain dicts."""

    return [
        {k: e.get(k) for k in ("user_id", "item_id", "type", "value", "timestamp")}
        for e in iter_events(client, settings)
    ]
