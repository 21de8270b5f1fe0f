"""Personalized search evaluation: ``vecrank evaluate --task search``.

The requests come from a search log in the generic format (:func:`read_searches`: ``user``,
``query``, ``item``, ``timestamp``; JSONL, CSV or Parquet): a user searched for that text and
chose that item. MovieLens has no search log, so ``scripts/prepare_movielens.py`` writes its tags
as one (a user who tagged a movie "dark comedy" stands for that user searching "dark comedy" and
choosing it).

The protocol (leak-free: a request sees nothing from after its instant):

* One **request** per user and query (the text trimmed, case-folded, spaces collapsed; a row
  without a user is an anonymous search, one request per row). Each chosen item's instant is
  the earlier of the search row and the user's first interaction with the item (a tag is often
  written after the rating); the request is made just before the earliest of them, and its
  relevant items are the chosen ones within ``horizon_days`` of it. The query text is the tag's:
  the one piece of the request that comes from the log, never from the catalog.
* The user's **history** is their interactions before the instant (the newest 200, what the users
  index holds); what they have seen is excluded from every system's list, so no relevant item
  is ever excluded (each was first touched at or after the instant).
* **Systems**, each a real search on the live items index, the user's seen items excluded:
  ``bm25`` (a ``multi_match`` of the query on the embedded text and the catalog's other text
  fields), ``knn`` (the query embedding's kNN), ``hybrid`` (the bool of the two that
  Elasticsearch scores by the sum of both: the RRF retriever needs a paid licence), ``blend``
  (:meth:`vecrank.rank.recommender.Recommender.candidates` with the history and the query: the
  profile blended with the query text, unranked, what serving did before search models), and
  ``vecrank``: the **search model** over the pool serving gathers for it (the query kNN's top
  :data:`vecrank.rank.queries.SEARCH_POOL` and the best BM25 hits outside them, twice that in
  all, :func:`vecrank.rank.queries.search_pool_ids`; offline the kNN is exact) with
  every feature of the spec plus :data:`vecrank.rank.features.SEARCH`. One ranker per refit
  instant after the burn-in, trained on the search requests before it with the choices known
  before it (shape chosen and boosting stopped on their latest 20%); each test request is ranked
  by the ranker of the last instant before it, its state, collaborative model and signals those
  of its instant (:class:`~vecrank.rank.offline.Past`). ``final_model`` trains the one that
  serves afterwards on every request.
* **Metrics**: each user counts once (the mean over their requests, so that the one user with a
  thousand tags does not decide alone), NDCG@10, Recall@10/50 and MRR@10 with bootstrap
  intervals over users and paired differences, as in the recommendation evaluation; the
  per-request means beside them; slices for users with a history (personalized) and without.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from vecrank.errors import VecrankError
from vecrank.ingest.events import parse_timestamp
from vecrank.ingest.records import BadRecord, normalise_id, read_records
from vecrank.interactions import DAY_MS
from vecrank.rank import features as feats
from vecrank.rank import metrics, queries
from vecrank.rank.evaluate import EvalReport, compare
from vecrank.rank.model import RankerModel
from vecrank.rank.offline import Past, ReplayConfig, top_rows
from vecrank.rank.ranker import rank_order
from vecrank.rank.state import UserState
from vecrank.rank.train import TrainConfig, TrainingTable, fit_ranker

if TYPE_CHECKING:
    from vecrank.rank.recommender import Recommender

log = logging.getLogger(__name__)

SEARCH_BASELINES = ("bm25", "knn", "hybrid")
SYSTEMS = (*SEARCH_BASELINES, "vecrank")
MAX_QUERY_CHARS = 1000
K_FETCH = 50
#: a ranker needs at least this many search requests with a choice in their pool before its instant
MIN_TRAIN_REQUESTS = 10


class SearchLogError(VecrankError, ValueError):
    """The search log has rows that cannot be used: file, line and field named."""


@dataclass(frozen=True)
class Search:
    """One row of a search log: ``user`` (None: anonymous) searched ``query`` and chose ``item``."""

    user: str | None
    query: str
    item: str
    timestamp_ms: int


@dataclass(frozen=True)
class SearchRequest:
    """One evaluated search: made at ``cut_ms``; ``chosen``: (item, instant) of the items chosen for it."""

    request_id: str
    user: str | None
    query: str
    cut_ms: int
    chosen: tuple[tuple[str, int], ...]

    @property
    def relevant(self) -> frozenset[str]:
        return frozenset(i for i, _ in self.chosen)


def normalise_query(text: str) -> str:
    """Trimmed, case-folded, runs of white space as one space."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def read_searches(path: str | Path, *, format: str | None = None) -> list[Search]:
    """The rows of a search log; every bad row is reported (file, line, field), none is skipped."""
    out, bad = [], []
    for rec in read_records(path, format=format):
        if isinstance(rec, BadRecord):
            bad.append(f"{rec.source}:{rec.line}: {rec.reason}" + (f" ({rec.detail})" if rec.detail else ""))
            continue
        data, where = rec.data, f"{rec.source}:{rec.line}"
        item, (reason, _) = normalise_id(data.get("item"))
        user = None
        if data.get("user") not in (None, ""):
            user, (user_reason, _) = normalise_id(data.get("user"))
            if user is None:
                bad.append(f"{where}: field user: {user_reason}")
                continue
        query = data.get("query")
        if item is None:
            bad.append(f"{where}: field item: {reason}")
        elif not isinstance(query, str) or not normalise_query(query):
            bad.append(f"{where}: field query: missing or empty")
        elif len(query) > MAX_QUERY_CHARS:
            bad.append(f"{where}: field query: longer than {MAX_QUERY_CHARS} characters")
        else:
            try:
                out.append(Search(user, query, item, parse_timestamp(data.get("timestamp"))))
            except ValueError as exc:
                bad.append(f"{where}: field timestamp: {exc}")
    if bad:
        shown = "; ".join(bad[:5])
        raise SearchLogError(
            f"{len(bad)} unusable row(s) in the search log: {shown}"
            + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    if not out:
        raise SearchLogError(f"the search log {path} has no rows")
    return out


def search_requests(searches: Iterable[Search], past: Past, *, horizon_days: float) -> list[SearchRequest]:
    """The requests of the module docstring's protocol, sorted by instant."""
    horizon = int(horizon_days * DAY_MS)
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    anonymous = []
    for s in searches:
        if s.user is None:
            anonymous.append(s)
            continue
        chosen = groups[(s.user, normalise_query(s.query))]
        chosen[s.item] = min(chosen.get(s.item, s.timestamp_ms), s.timestamp_ms)
    out = []
    for (user, query), chosen in groups.items():
        touched = _first_interactions(past, user)
        instants = {item: min(t, touched.get(item, t)) for item, t in chosen.items()}
        cut = min(instants.values())
        chosen_ = tuple(sorted((i, t) for i, t in instants.items() if t <= cut + horizon))
        out.append(SearchRequest(f"{user}|{query}", user, query, cut, chosen_))
    for n, s in enumerate(anonymous):
        out.append(SearchRequest(f"-|{n}", None, normalise_query(s.query), s.timestamp_ms, ((s.item, s.timestamp_ms),)))
    out.sort(key=lambda r: (r.cut_ms, r.request_id))
    return out


def _first_interactions(past: Past, user: str) -> dict[str, int]:
    rows = past.by_user.get(user, np.zeros(0, dtype=np.int64))
    out: dict[str, int] = {}
    for n in rows:  # rows are in time order
        if past.log.interaction[n]:
            out.setdefault(past.log.item_ids[past.log.item[n]], int(past.log.timestamp[n]))
    return out


# --- the systems --------------------------------------------------------------------------------


def baseline_bodies(
    query: str,
    vector: Sequence[float] | np.ndarray,
    *,
    fields: Sequence[str],
    exclude: Sequence[str],
    size: int = K_FETCH,
    bm25_size: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The three baselines' search bodies, under the same exclusions (and availability);
    ``bm25_size``: more BM25 hits (the search ranker's pool takes them). The hybrid is the bool of
    the two that Elasticsearch scores by their sum."""
    flt = queries.candidate_filter([], exclude_ids=list(exclude))
    bm25 = queries.bm25_body(query, fields=fields, size=bm25_size or size, filter=flt)
    knn = queries.query_knn_body(vector, size=size, filter=flt)
    hybrid = queries.search_body(
        size=size,
        knn=knn["knn"],
        query=queries.bm25_body(query, fields=fields, size=size, filter=flt)["query"],
        source=False,
    )
    return {"bm25": bm25, "knn": knn, "hybrid": hybrid}


@dataclass
class SearchReport(EvalReport):
    """The search task's report: an evaluation's parts, marked ``"task": "search"`` in its JSON."""

    def to_dict(self) -> dict[str, Any]:
        return {"task": "search", **super().to_dict()}

    def table(self, k: int = 10) -> list[dict[str, Any]]:
        keys = [f"ndcg@{k}", f"recall@{k}", "recall@50", f"mrr@{k}", f"ndcg@{k}_per_request"]
        return self._rows(keys)


@dataclass
class _Replayed:
    """One search request as it was: its pool (ids, feature rows) and the baselines' lists."""

    item_ids: list[str]
    matrix: np.ndarray
    rankings: dict[str, list[str]]
    personal: bool


class _Searcher:
    """Replays search requests: the baselines' searches on Elasticsearch, the pool and its features."""

    def __init__(
        self, recommender: Recommender, past: Past, spec: feats.FeatureSpec, vectors: Mapping[str, np.ndarray]
    ):
        self.rec, self.past, self.spec, self.vectors = recommender, past, spec, vectors
        self.fields = queries.text_fields(recommender.field_types)
        self.index = recommender.settings.index("items")

    def replay(self, req: SearchRequest, *, test: bool) -> _Replayed:
        past, catalog = self.past, self.past.catalog
        state = past.state(req.user, req.cut_ms) if req.user is not None else UserState()
        seen = sorted(state.seen)
        qv = self.vectors[req.query]
        # The pool serving's one search gathers (queries.search_pool_body), with the kNN exact:
        # the kNN's top, then BM25's best outside them; every member's BM25 score where the text matches.
        eligible = past.eligible(state.seen) & catalog.has_vector
        knn_rows = top_rows(catalog.vectors @ np.asarray(qv, dtype=np.float64), eligible, queries.SEARCH_POOL)
        knn_ids = [catalog.ids[n] for n in knn_rows]
        bodies = baseline_bodies(req.query, qv, fields=self.fields, exclude=seen, bm25_size=queries.search_window())
        if not test:
            bodies = {"bm25": bodies["bm25"]}
        if knn_ids:
            bodies["bm25_of_knn"] = queries.bm25_body(
                req.query, fields=self.fields, size=len(knn_ids), filter={"ids": {"values": knn_ids}}
            )
        parts = [part for body in bodies.values() for part in ({"index": self.index}, body)]
        hits = {}
        for name, resp in zip(bodies, self.rec.client.msearch(searches=parts)["responses"]):
            if "error" in resp:
                raise VecrankError(f"the {name} search failed: {resp['error']}")
            hits[name] = resp["hits"]["hits"]
        pool = queries.search_pool_ids(knn_ids, [h["_id"] for h in hits["bm25"]])
        bm25 = {h["_id"]: float(h["_score"]) for h in (*hits["bm25"], *hits.pop("bm25_of_knn", ()))}
        rows = {n for n in (catalog.index(i) for i in pool) if n is not None}
        batch = past.candidate_batch(np.array(sorted(rows), dtype=np.int64), req.cut_ms)
        ctx = feats.RequestContext(
            now_ms=req.cut_ms,
            path="profile+query" if state.history else "query",
            state=state,
            query_vector=qv,
            bm25=bm25,
        )
        matrix = feats.compute(self.spec, batch, ctx)
        ids = list(batch.item_ids)
        rankings = {name: [h["_id"] for h in found][:K_FETCH] for name, found in hits.items()}
        if test:
            history = past.history(req.user, req.cut_ms) if req.user is not None else []
            cands = self.rec.candidates(history=history, query=req.query, k=K_FETCH, source_fields=("item_id",))
            rankings["blend"] = [c.item_id for c in cands.candidates]
        return _Replayed(ids, matrix.astype(np.float32), rankings, bool(state.history))


def run(
    recommender: Recommender,
    past: Past,
    searches: Sequence[Search],
    *,
    replay_config: ReplayConfig,
    horizon_days: float = 180.0,
    first_test_quantile: float = 0.5,
    k: int = 10,
    train_config: TrainConfig | None = None,
    final_model: bool = False,
    model_id: str = "vecrank-search",
    progress: bool = False,
) -> SearchReport:
    """Train the search rankers, then evaluate every system on the later requests (module docstring).

    Args:
        recommender: the live items index's retrieval (its embedder embeds the queries).
        past: the events and the catalog (:func:`vecrank.rank.evaluate.load_past`).
        searches: the search log.
        replay_config: the state, collaborative and feature settings (the search features are
            added to its spec).
        first_test_quantile: requests after this quantile of the interactions' times are tested
            (the rankers learn from the ones before each refit instant).
        final_model: also train the search model that serves afterwards, on every request
            (``report.model``, id ``model_id``).
    """

    started = time.monotonic()
    first_test = past.log.quantile(first_test_quantile)
    instants = [r for r in past.refits if r >= first_test]
    requests = search_requests(searches, past, horizon_days=horizon_days)
    tests = [r for r in requests if r.cut_ms >= first_test]
    if not instants or not tests:
        raise VecrankError(
            f"no search request after the burn-in ({len(requests)} requests): lower " "--first-test-quantile"
        )
    texts = sorted({r.query for r in requests})
    vectors = {
        t: np.asarray(v, dtype=np.float32)
        for t, v in zip(texts, recommender.embedder.encode(texts, show_progress_bar=False))
    }
    config = dataclasses.replace(replay_config, spec=dataclasses.replace(replay_config.spec, search=True))
    spec = config.spec
    searcher = _Searcher(recommender, past, spec, vectors)
    names = spec.names
    table = TrainingTable(feature_names=names)
    replayed: dict[str, _Replayed] = {}
    for req in tqdm(requests, desc="search requests", unit="req", disable=not progress):
        is_test = req.cut_ms >= first_test
        r = searcher.replay(req, test=is_test)
        chosen = dict(req.chosen)
        table.add(
            req.request_id,
            req.user or req.request_id,
            req.cut_ms,
            r.item_ids,
            [1.0 if i in chosen else 0.0 for i in r.item_ids],
            r.matrix,
            label_ms=[float(chosen.get(i, np.inf)) for i in r.item_ids],
        )
        if is_test:
            replayed[req.request_id] = r
    rankers, training = _fit_rankers(table, [*instants, *([None] if final_model else [])], train_config)
    rankings: dict[str, dict[str, list[str]]] = defaultdict(dict)
    relevant: dict[str, set[str]] = {}
    personal: dict[str, bool] = {}
    pool_recall: list[float] = []
    for req in tests:
        r = replayed[req.request_id]
        wanted = set(req.relevant)
        relevant[req.request_id], personal[req.request_id] = wanted, r.personal
        for name, ranking in r.rankings.items():
            rankings[name][req.request_id] = ranking
        fitted = rankers.get(max(i for i in instants if i <= req.cut_ms))
        if fitted is not None and r.item_ids:
            order = rank_order(fitted[0].predict(_dmatrix(r.matrix, names)), r.item_ids)
            rankings["vecrank"][req.request_id] = [r.item_ids[i] for i in order][:K_FETCH]
        pool_recall.append(len(wanted & set(r.item_ids)) / len(wanted))
    owner = {r.request_id: r.user or r.request_id for r in tests}
    systems_ = (*SYSTEMS, "blend")
    systems, per_user = score_systems(systems_, rankings, relevant, owner, k)
    comparison = compare(systems, per_user, f"ndcg@{k}", others=SEARCH_BASELINES)
    slices = {}
    for name, keep in (("with_history", True), ("without_history", False)):
        ids = {q for q in relevant if personal[q] is keep}
        if ids:
            sub, sub_per_user = score_systems(
                systems_, rankings, {q: relevant[q] for q in ids}, {q: owner[q] for q in ids}, k
            )
            slices[name] = {
                "requests": len(ids),
                "users": len({owner[q] for q in ids}),
                "systems": sub,
                "comparison": compare(sub, sub_per_user, f"ndcg@{k}", others=SEARCH_BASELINES),
            }
    split = {
        "searches": len(searches),
        "requests": len(requests),
        "first_test_ms": first_test,
        "rankers_ms": instants,
        "evaluated_requests": len(relevant),
        "evaluated_users": len(set(owner.values())),
        "horizon_days": horizon_days,
        "bm25_fields": searcher.fields,
        "pool": {"knn": queries.SEARCH_POOL, "size": queries.search_window()},
    }
    model = None
    if final_model and None in rankers:
        booster, chosen_config, info = rankers[None]
        model = RankerModel.from_booster(
            model_id,
            spec,
            booster,
            params=chosen_config.to_dict(),
            training={"task": "search", **info, "horizon_days": horizon_days, "config": config.to_dict()},
        )
        model.metrics = {"offline_search": systems, "comparison": comparison}
    return SearchReport(
        split=split,
        training={**training, "config": config.to_dict()},
        systems=systems,
        candidate_recall={"pool": round(float(np.mean(pool_recall)), 4)},
        comparison=comparison,
        slices=slices,
        seconds=round(time.monotonic() - started, 1),
        model=model,
    )


def _fit_rankers(
    table: TrainingTable,
    instants: Sequence[int | None],
    train_config: TrainConfig | None,
) -> tuple[dict[int | None, tuple[Any, TrainConfig, dict[str, Any]]], dict[str, Any]]:
    """One search ranker per instant (None: on everything), trained on the requests before it
    (labels known before it), its shape chosen and its boosting stopped on the latest 20% of them.
    Returns instant -> (booster, the chosen config, its training summary)."""
    rankers: dict[int | None, tuple[Any, TrainConfig, dict[str, Any]]] = {}
    summaries = []
    for instant in instants:
        subset = table.before(instant if instant is not None else np.iinfo(np.int64).max)
        if len(subset.groups()) < MIN_TRAIN_REQUESTS:
            log.info("%d search requests with a choice before %s: no ranker there", len(subset.groups()), instant)
            continue
        booster, info, chosen = fit_ranker(subset, train_config)
        rankers[instant] = (booster, chosen, info)
        summaries.append(
            {
                "instant_ms": instant,
                "requests": int(len(subset.groups())),
                "valid_ndcg": round(info["best_score"], 5),
                "shape": {"max_depth": chosen.max_depth, "min_child_weight": chosen.min_child_weight},
            }
        )
    if not any(i is not None for i in rankers):
        raise VecrankError("too few search requests before the first test instant to train a search ranker")
    return rankers, {"rankers": summaries, "features": list(table.feature_names)}


def _dmatrix(matrix: np.ndarray, names: Sequence[str]) -> Any:
    import xgboost  # heavy optional dependency

    return xgboost.DMatrix(matrix, missing=np.nan, feature_names=list(names))


def score_systems(
    names: Sequence[str],
    rankings: Mapping[str, Mapping[str, list[str]]],
    relevant: Mapping[str, set[str]],
    owner: Mapping[str, str],
    k: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, dict[str, float]]]]:
    """Each system's metrics with every user counting once (the mean over their requests), the
    per-request means beside them; per-user values for :func:`vecrank.rank.evaluate.compare`."""
    systems: dict[str, dict[str, Any]] = {}
    per_user: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        result = metrics.evaluate(
            {q: rankings[name].get(q, []) for q in relevant}, relevant, k_values=(k, 50), per_user=True
        )
        by_request = result.pop("per_user")
        per_user[name] = {key: _user_means(values, owner) for key, values in by_request.items()}
        out: dict[str, Any] = {"requests": result["users"], "users": len(set(owner.values()))}
        for key, values in per_user[name].items():
            out[key] = float(np.mean(list(values.values())))
            out[f"{key}_per_request"] = result[key]
        for key in (f"ndcg@{k}", "recall@50"):
            ci = metrics.bootstrap_ci(per_user[name][key])
            out[f"{key}_ci95"] = [round(ci.low, 5), round(ci.high, 5)]
        systems[name] = out
    return systems, per_user


def _user_means(values: Mapping[str, float], owner: Mapping[str, str]) -> dict[str, float]:
    sums: dict[str, list[float]] = defaultdict(list)
    for request, value in values.items():
        sums[owner[request]].append(value)
    return {user: float(np.mean(v)) for user, v in sorted(sums.items())}


def write_outputs(report: SearchReport, out_dir: str | Path, *, k: int = 10) -> dict[str, str]:
    """``search-evaluation.json`` and ``search-evaluation.png`` (NDCG@k and Recall@50 per system,
    whiskers: 95% bootstrap intervals over users)."""

    import matplotlib  # heavy optional dependency, only for the plot

    matplotlib.use("Agg")
    # lazy: matplotlib takes 0.8 s to import; only the plots need it
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search-evaluation.json").write_text(json.dumps(report.to_dict(), indent=2, default=str))
    names = list(report.systems)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key in zip(axes, (f"ndcg@{k}", "recall@50")):
        values = [report.systems[n][key] for n in names]
        cis = [report.systems[n][f"{key}_ci95"] for n in names]
        err = np.array([[v - lo for (lo, _), v in zip(cis, values)], [hi - v for (_, hi), v in zip(cis, values)]])
        ax.bar(
            range(len(names)),
            values,
            yerr=np.clip(err, 0, None),
            capsize=3,
            color=["tab:red" if n == "vecrank" else "tab:gray" for n in names],
        )
        ax.set_xticks(range(len(names)), names)
        ax.set_title(key.upper().replace("@", "@"))
    fig.suptitle(
        f"Search evaluation: {report.split['evaluated_requests']} requests of "
        f"{report.split['evaluated_users']} users; whiskers: 95% bootstrap interval over users"
    )
    fig.tight_layout()
    fig.savefig(out / "search-evaluation.png", dpi=110)
    plt.close(fig)
    return {"json": str(out / "search-evaluation.json"), "png": str(out / "search-evaluation.png")}
