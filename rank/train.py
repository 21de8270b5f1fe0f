"""Training data and the XGBoost ranker.

Training rows come from a **replay** of a dataset's history (:mod:`vecrank.rank.offline`): for a
user and a cut time ``t`` the user's state comes from their events before ``t`` only, the
collaborative model is the one fitted at the last refit instant before ``t``, the signals are
read as of ``t``'s bucket, and each candidate of the pool is labelled exactly as the evaluation
labels its test requests: 1 if the user liked it (:func:`vecrank.interactions.is_positive`) in
``[t, t + horizon]``, else 0. Nothing from after ``t`` reaches a feature. Rows are grouped by
request (one request per user and cut) and can be kept as Parquet.

The model is an XGBoost ranker (``rank:ndcg`` by default), seeded, monotone in the
collaborative scores and their pool ranks (:data:`vecrank.rank.features.MONOTONE`: with a few
hundred requests per ranker, trees otherwise learn bumps from noise); its tree shape and round
count are chosen on a later time slice than the one it first learns from, then it is trained
again on both slices (:func:`fit_ranker`, the one way a table becomes a model).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.interactions import DAY_MS
from vecrank.rank import features as feats
from vecrank.rank.offline import Past, PoolConfig

if TYPE_CHECKING:
    import xgboost
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelConfig:
    """Relevance of a later event, for training from the feature log: per type, and
    ``rating_grades`` (threshold, grade) pairs. The default is the evaluation's rule
    (:func:`vecrank.interactions.is_positive`): 1 for a click, cart, purchase or a rating >= 4."""

    type_grades: dict[str, float] = field(default_factory=lambda: {"click": 1.0, "cart": 1.0, "purchase": 1.0})
    rating_type: str = "rating"
    rating_grades: tuple[tuple[float, float], ...] = ((4.0, 1.0),)

    def grade(self, event: Mapping[str, Any]) -> float:
        if event.get("type") == self.rating_type and event.get("value") is not None:
            value = float(event["value"])
            return next((g for threshold, g in self.rating_grades if value >= threshold), 0.0)
        kind = event.get("type")
        return float(self.type_grades.get(kind, 0.0)) if kind is not None else 0.0

    def labels(self, future: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Item id -> the highest grade among the user's later events on it."""
        out: dict[str, float] = {}
        for e in future:
            g = self.grade(e)
            if g > 0:
                out[str(e["item_id"])] = max(out.get(str(e["item_id"]), 0.0), g)
        return out


@dataclass
class TrainingTable:
    """Rows grouped by request (contiguous), with the feature matrix in ``spec.names`` order."""

    feature_names: list[str]
    request_id: list[str] = field(default_factory=list)
    user_id: list[str] = field(default_factory=list)
    cut_ms: list[int] = field(default_factory=list)
    item_id: list[str] = field(default_factory=list)
    label: list[float] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)  # the candidate's position in the pool
    label_ms: list[float] = field(default_factory=list)  # when the label became known (inf: never)
    blocks: list[np.ndarray] = field(default_factory=list, repr=False)

    def add(
        self,
        request_id: str,
        user_id: str,
        cut_ms: int,
        items: Sequence[str],
        labels: Sequence[float],
        matrix: np.ndarray,
        label_ms: Sequence[float] | None = None,
    ) -> None:
        n = len(items)
        self.request_id += [request_id] * n
        self.user_id += [user_id] * n
        self.cut_ms += [cut_ms] * n
        self.item_id += list(items)
        self.label += list(labels)
        self.rank += list(range(n))
        self.label_ms += list(label_ms) if label_ms is not None else [float(cut_ms)] * n
        self.blocks.append(np.asarray(matrix, dtype=np.float32))

    @property
    def features(self) -> np.ndarray:
        if not self.blocks:
            return np.zeros((0, len(self.feature_names)), dtype=np.float32)
        if len(self.blocks) > 1:
            self.blocks = [np.vstack(self.blocks)]
        return self.blocks[0]

    def __len__(self) -> int:
        return len(self.item_id)

    def groups(self) -> np.ndarray:
        """Sizes of consecutive request groups, as XGBoost's ``group`` wants them."""
        sizes, last = [], None
        for rid in self.request_id:
            if rid != last:
                sizes.append(0)
                last = rid
            sizes[-1] += 1
        return np.asarray(sizes, dtype=np.uint32)

    def to_parquet(self, path: str | Path) -> None:
        # lazy: pyarrow takes 0.4 s to import; only Parquet files need it
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "cut_ms": self.cut_ms,
            "item_id": self.item_id,
            "label": self.label,
            "rank": self.rank,
            "label_ms": self.label_ms,
        }
        matrix = self.features
        for j, name in enumerate(self.feature_names):
            columns[f"f:{name}"] = matrix[:, j]
        pq.write_table(pa.table(columns), path)

    @classmethod
    def from_parquet(cls, path: str | Path) -> TrainingTable:
        # lazy: pyarrow takes 0.4 s to import; only Parquet files need it
        import pyarrow.parquet as pq

        table = pq.read_table(path).to_pydict()
        names = [c[2:] for c in table if c.startswith("f:")]
        out = cls(
            feature_names=names,
            request_id=table["request_id"],
            user_id=table["user_id"],
            cut_ms=table["cut_ms"],
            item_id=table["item_id"],
            label=table["label"],
            rank=table["rank"],
            label_ms=table.get("label_ms") or [float(c) for c in table["cut_ms"]],
        )
        out.blocks = [
            np.column_stack([np.asarray(table[f"f:{n}"], dtype=np.float32) for n in names])
            if names
            else np.zeros((len(out.item_id), 0), dtype=np.float32)
        ]
        return out

    def requests(self) -> list[tuple[str, int, int, int]]:
        """(request id, cut ms, first row, end row) of each request, in table order."""
        out, start = [], 0
        for size in self.groups():
            end = start + int(size)
            out.append((self.request_id[start], self.cut_ms[start], start, end))
            start = end
        return out

    def before(self, instant_ms: int, keep: set[str] | None = None) -> TrainingTable:
        """The requests (of ``keep``, default all) a ranker trained at ``instant_ms`` may learn
        from: cut before it, labels only from likes before it; requests left with no positive are
        dropped."""
        out = TrainingTable(self.feature_names)
        matrix = self.features
        for rid, cut, start, end in self.requests():
            if cut >= instant_ms or (keep is not None and rid not in keep):
                continue
            labels = [
                1.0 if (lab > 0 and t < instant_ms) else 0.0
                for lab, t in zip(self.label[start:end], self.label_ms[start:end])
            ]
            if any(labels):
                out.add(
                    rid,
                    self.user_id[start],
                    cut,
                    self.item_id[start:end],
                    labels,
                    matrix[start:end],
                    self.label_ms[start:end],
                )
        return out

    def split_by_time(self, later_fraction: float) -> tuple[TrainingTable, TrainingTable]:
        """(earlier, later) by request time: the later requests are the early-stopping slice."""
        order = sorted({(c, r) for c, r in zip(self.cut_ms, self.request_id)})
        later = (
            {r for _, r in order[len(order) - int(round(len(order) * later_fraction)) :]} if later_fraction else set()
        )
        parts = (TrainingTable(self.feature_names), TrainingTable(self.feature_names))
        matrix = self.features
        start = 0
        for size in self.groups():
            end = start + int(size)
            rid = self.request_id[start]
            parts[rid in later].add(
                rid,
                self.user_id[start],
                self.cut_ms[start],
                self.item_id[start:end],
                self.label[start:end],
                matrix[start:end],
                self.label_ms[start:end],
            )
            start = end
        return parts

    def paths(self) -> list[str]:
        """The retrieval paths the requests came from (read from the ``path_code`` feature)."""
        if "path_code" not in self.feature_names or not len(self):
            return []
        codes = set(self.features[:, self.feature_names.index("path_code")].tolist())
        return sorted(name for name, code in feats.PATH_CODES.items() if code in codes)

    def summary(self) -> dict[str, Any]:
        labels = np.asarray(self.label)
        return {
            "rows": len(self),
            "requests": int(len(self.groups())),
            "users": len(set(self.user_id)),
            "cuts": len(set(self.cut_ms)),
            "first_cut_ms": min(self.cut_ms, default=None),
            "last_cut_ms": max(self.cut_ms, default=None),
            "positive_rows": int((labels > 0).sum()),
            "label_counts": {str(g): int((labels == g).sum()) for g in sorted(set(labels.tolist()))},
        }


@dataclass(frozen=True)
class ReplayRequest:
    """One replayed request: what ``user`` had done before ``cut_ms``, labelled by what they liked
    in ``[cut_ms, label_end_ms]``."""

    user: str
    cut_ms: int
    label_end_ms: int


def user_cuts(times: Sequence[int], fractions: Sequence[float]) -> list[int]:
    """Cut times at ``fractions`` of a user's interaction times (sorted): the time of the first
    interaction past each fraction, when at least one interaction comes strictly before it."""
    cuts = []
    for f in fractions:
        i = int(np.ceil(len(times) * f))
        if 0 < i < len(times) and times[0] < times[i]:
            cuts.append(int(times[i]))
    return sorted(set(cuts))


def replay(
    past: Past,
    requests: Iterable[ReplayRequest],
    *,
    spec: feats.FeatureSpec,
    pool: PoolConfig,
    table: TrainingTable | None = None,
    progress: bool = False,
) -> TrainingTable:
    """Training rows for replayed requests (see the module docstring): each candidate of each
    request's pool with its features and the time of the user's first like of it in the label
    window (``label_ms``; infinite when none), so that a ranker trained at an earlier instant can
    truncate the labels it may see (:meth:`TrainingTable.before`).

    Requests without a history, a pool or a later like are skipped.
    """
    table = table if table is not None else TrainingTable(feature_names=spec.names)
    started = time.monotonic()
    done = 0
    for req in requests:
        future = past.future_likes(req.user, req.cut_ms, req.label_end_ms)
        if not future:
            continue
        replayed = past.replay(req.user, req.cut_ms, pool)
        if replayed is None or not replayed.candidates:
            continue
        matrix = feats.compute(spec, replayed.candidates, replayed.context)
        items = replayed.item_ids
        table.add(
            f"{req.user}@{req.cut_ms}",
            req.user,
            req.cut_ms,
            items,
            [1.0 if i in future else 0.0 for i in items],
            matrix,
            label_ms=[float(future.get(i, np.inf)) for i in items],
        )
        done += 1
        if progress and done % 500 == 0:
            log.info("replayed %d requests (%.1fs)", done, time.monotonic() - started)
    return table


@dataclass(frozen=True)
class TrainConfig:
    """XGBoost hyperparameters; ``params()`` is exactly what ``xgboost.train`` receives."""

    objective: str = "rank:ndcg"
    learning_rate: float = 0.1
    max_depth: int = 6
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    num_boost_round: int = 500
    early_stopping_rounds: int = 30
    eval_at: int = 10
    seed: int = 0
    lambdarank_pair_method: str = "topk"
    lambdarank_num_pair_per_sample: int = 10
    num_parallel_tree: int = 4  # each round averages this many subsampled trees: less variance between seeds
    # (feature, +1 or -1): the score may only rise (fall) with it; features not in a table are ignored
    monotone: tuple[tuple[str, int], ...] = feats.MONOTONE
    nthread: int = 0  # 0: all cores

    def __post_init__(self) -> None:
        if self.objective not in {"rank:ndcg", "rank:pairwise", "rank:map"}:
            raise ValueError(f"objective must be rank:ndcg, rank:pairwise or rank:map, not {self.objective!r}")

    def params(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "eval_metric": [f"ndcg@{self.eval_at}"],
            "seed": self.seed,
            "nthread": self.nthread,
            "lambdarank_pair_method": self.lambdarank_pair_method,
            "lambdarank_num_pair_per_sample": self.lambdarank_num_pair_per_sample,
            "tree_method": "hist",
            "num_parallel_tree": self.num_parallel_tree,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Tree shapes select_ranker tries, from shallow and heavily regularized to deep: a documented grid,
# the choice is the validation slice's.
SHAPES: tuple[dict[str, Any], ...] = (
    {"max_depth": 2, "min_child_weight": 30.0},
    {"max_depth": 3, "min_child_weight": 20.0},
    {"max_depth": 4, "min_child_weight": 10.0},
)


def select_ranker(
    train: TrainingTable,
    valid: TrainingTable | None,
    config: TrainConfig | None = None,
    shapes: Sequence[Mapping[str, Any]] = SHAPES,
    refit_on: TrainingTable | None = None,
) -> tuple[xgboost.Booster, dict[str, Any], TrainConfig]:
    """Train one model per tree shape and keep the best on the validation slice (a later time
    slice than ``train``, never the test data). Without a validation slice, ``config`` as given.

    With ``refit_on`` (``train`` and ``valid`` together), the chosen shape is then trained again on
    it, without early stopping, for the early-stopped round count scaled by its rows over
    ``train``'s: the latest requests, the nearest to what is served next, are learnt from too.

    Returns:
        (booster, info, the chosen config); ``info["selection"]`` lists every shape's validation score.
    """

    config = config or TrainConfig()
    if valid is None or not len(valid) or not shapes:
        booster, info = train_ranker(train, valid, config)
        return booster, info, config
    tried = []
    for shape in shapes:
        candidate = replace(config, **shape)
        booster, info = train_ranker(train, valid, candidate)
        tried.append((info["best_score"], candidate, booster, info))
        log.info("shape %s: validation ndcg@%d %.4f", dict(shape), config.eval_at, info["best_score"])
    best = max(tried, key=lambda t: t[0])
    if refit_on is not None and len(refit_on):
        rounds = max(1, round((best[3]["best_iteration"] + 1) * len(refit_on) / max(len(train), 1)))
        booster, _ = train_ranker(refit_on, None, replace(best[1], num_boost_round=rounds))
        best = (best[0], best[1], booster, {**best[3], "refit_rows": len(refit_on), "refit_rounds": rounds})
    info = {
        **best[3],
        "selection": [
            {"max_depth": c.max_depth, "min_child_weight": c.min_child_weight, "valid_score": round(v, 5)}
            for v, c, _, _ in tried
        ],
    }
    return best[2], info, best[1]


#: the share of a table's requests, its latest, that choose the tree shape and the round count
VALID_FRACTION = 0.2


def fit_ranker(
    table: TrainingTable, config: TrainConfig | None = None
) -> tuple[xgboost.Booster, dict[str, Any], TrainConfig]:
    """The one way a training table becomes a model: its latest :data:`VALID_FRACTION` of requests
    choose the shape and the round count, then the chosen shape is trained on the whole table
    (:func:`select_ranker` with ``refit_on``). ``info`` also has the two slices' summaries; the
    config returned is the one the booster was trained with (the chosen shape, the refit's rounds)."""
    train, valid = table.split_by_time(VALID_FRACTION)
    booster, info, chosen = select_ranker(train, valid, config, refit_on=table)
    if "refit_rounds" in info:  # the config the booster was trained with: the refit's round count
        chosen = replace(chosen, num_boost_round=info["refit_rounds"])
    return booster, {"train": train.summary(), "valid": valid.summary(), **info}, chosen


def _dmatrix(table: TrainingTable) -> xgboost.DMatrix:
    """The table as XGBoost reads it: features (NaN missing), labels and query groups."""
    # lazy: xgboost takes 2 s to import; only training and scoring need it
    import xgboost

    matrix = xgboost.DMatrix(
        table.features,
        label=np.asarray(table.label, dtype=np.float32),
        missing=np.nan,
        feature_names=table.feature_names,
    )
    matrix.set_group(table.groups())
    return matrix


def train_ranker(
    train: TrainingTable, valid: TrainingTable | None, config: TrainConfig | None = None
) -> tuple[xgboost.Booster, dict[str, Any]]:
    """Train on ``train``; early-stop on ``valid`` (a later time slice). Returns (booster, info)."""
    # lazy: xgboost takes 2 s to import; only training and scoring need it
    import xgboost

    config = config or TrainConfig()
    if len(train) == 0 or not any(train.label):
        raise ValueError(f"the training table has no positive label, nothing to learn: {train.summary()}")
    dtrain = _dmatrix(train)
    evals = [(dtrain, "train")]
    if valid is not None and len(valid):
        evals.append((_dmatrix(valid), "valid"))
    history: dict[str, Any] = {}
    params = config.params()
    if config.monotone:
        wanted = dict(config.monotone)
        params["monotone_constraints"] = "(" + ",".join(str(int(wanted.get(n, 0))) for n in train.feature_names) + ")"
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=config.num_boost_round,
        evals=evals,
        early_stopping_rounds=config.early_stopping_rounds if len(evals) > 1 else None,
        evals_result=history,
        verbose_eval=False,
    )
    info: dict[str, Any] = {
        "best_iteration": int(getattr(booster, "best_iteration", config.num_boost_round - 1)),
        "best_score": float(getattr(booster, "best_score", float("nan"))),
        "rounds": len(next(iter(history.get("train", {}).values()), [])),
        "train_rows": len(train),
        "valid_rows": len(valid) if valid is not None else 0,
    }
    if len(evals) > 1:  # keep only the trees up to the best round
        booster = booster[: info["best_iteration"] + 1]
    return booster, info


def from_feature_log(
    client: Elasticsearch,
    settings: Settings,
    spec: feats.FeatureSpec,
    *,
    horizon_days: float = 7.0,
    labels: LabelConfig | None = None,
    since_ms: int | None = None,
) -> TrainingTable:
    """Training rows from what serving logged: the feature rows it actually used, labelled by the
    user's later events on each shown item within ``horizon_days`` (an event that cites the
    request id counts only for that request).

    Only requests logged with this feature spec are used, so training sees exactly the features
    serving computed.
    """
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import helpers

    labels = labels or LabelConfig()
    log_index = settings.index("feature-log")
    if not client.indices.exists(index=log_index):
        return TrainingTable(feature_names=spec.names)
    query: dict[str, Any] = {"bool": {"filter": [{"term": {"spec": spec.fingerprint()}}]}}
    if since_ms is not None:
        query["bool"]["filter"].append({"range": {"timestamp": {"gte": since_ms}}})
    requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for hit in helpers.scan(client, index=log_index, query={"query": query}, size=1000):
        requests[hit["_source"]["request_id"]].append(hit["_source"])
    if not requests:
        return TrainingTable(feature_names=spec.names)
    horizon = int(horizon_days * DAY_MS)
    users = sorted({r[0]["user_id"] for r in requests.values() if r[0].get("user_id") is not None})
    start = min(int(r[0]["timestamp"]) for r in requests.values())
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if users:
        body = {
            "query": {
                "bool": {
                    "filter": [{"terms": {"user_id": users}}, {"range": {"timestamp": {"gt": start}}}],
                    "must_not": [{"term": {"type": "impression"}}],
                }
            }
        }
        for hit in helpers.scan(client, index=settings.index("events"), query=body, size=1000):
            events[hit["_source"]["user_id"]].append(hit["_source"])
    table = TrainingTable(feature_names=spec.names)
    for request_id in sorted(requests, key=lambda r: (requests[r][0]["timestamp"], r)):
        rows = sorted(requests[request_id], key=lambda d: d["position"])
        shown_at = int(rows[0]["timestamp"])
        user = rows[0].get("user_id")
        later = [
            e
            for e in (events.get(user, ()) if user is not None else ())
            if shown_at < int(e["timestamp"]) <= shown_at + horizon and e.get("request_id") in (None, request_id)
        ]
        grades = labels.labels(later)
        matrix = np.array([[np.nan if x is None else x for x in d["features"]] for d in rows], dtype=np.float32)
        table.add(
            request_id,
            str(user),
            shown_at,
            [d["item_id"] for d in rows],
            [grades.get(d["item_id"], 0.0) for d in rows],
            matrix,
        )
    return table
