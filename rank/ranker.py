"""Serving: candidates → features → XGBoost → top-k, with the request id and model version.

``Ranker.recommend`` retrieves a wider pool than it returns (``pool``), computes the feature
matrix for the whole pool at once, scores it with the model and keeps the best ``k``. Where the
vecrank plugin is installed, the kNN search itself carries a ``rescore`` section and
Elasticsearch ranks the hits with the same model (no candidate vectors cross the wire); only the
popular and co-liked additions are scored here. With logging on, each response's exposures (impression events carrying the request id, position and
model version) and the exact feature rows used go to Elasticsearch, so training later sees what
serving saw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.rank import features as feats
from vecrank.rank.model import RankerModel
from vecrank.rank.profiles import ProfileConfig
from vecrank.rank.recommender import Candidate, CandidateSet, Recommender
from vecrank.rank.store import fetch_items

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)
RERANK_MODES = ("auto", "python", "plugin")


@dataclass
class Ranked:
    item_id: str
    score: float
    candidate: Candidate
    features: np.ndarray = field(repr=False)
    contributions: dict[str, float] | None = None


@dataclass
class Recommendation:
    request_id: str
    model: str
    path: str
    cold_start: bool
    items: list[Ranked]
    timings_ms: dict[str, float]
    rerank: str = "python"  # where the model ran: "python" or "plugin" (inside Elasticsearch)

    def to_dict(self, *, with_features: bool = False) -> dict[str, Any]:
        out = {"request_id": self.request_id, "model": self.model, "path": self.path, "cold_start": self.cold_start,
               "rerank": self.rerank, "timings_ms": self.timings_ms, "items": []}
        for r in self.items:
            knn = r.candidate.score
            item = {"item_id": r.item_id, "score": r.score, "knn_score": None if knn != knn else knn,
                    "cosine": r.candidate.cosine, "fields": r.candidate.fields}
            if r.contributions is not None:
                item["contributions"] = r.contributions
            out["items"].append(item)
        return out


def request_context(client: Elasticsearch, settings: Settings, spec: feats.FeatureSpec, cset: CandidateSet, *,
                    now_ms: int, profile: ProfileConfig) -> feats.RequestContext:
    """What the features need besides the candidates (see :func:`history_context`)."""
    return history_context(client, settings, spec, history=cset.history, path=cset.path,
                           query_vector=cset.query_vector, now_ms=now_ms, profile=profile)


def history_context(client: Elasticsearch, settings: Settings, spec: feats.FeatureSpec, *,
                    history: Sequence[Any], path: str, query_vector: np.ndarray | None, now_ms: int,
                    profile: ProfileConfig) -> feats.RequestContext:
    """The request's side of the features: the last K positive history items' vectors and facet
    values, fetched in one request."""
    positive = profile.liked(history)[: spec.history_k]
    found = fetch_items(client, settings.index("items"), {str(e["item_id"]) for e in positive}, spec.facets)
    vectors = {i: v for i, (v, _) in found.items() if v is not None}
    facets = {f: {i: feats.facet_values(src.get(f)) for i, (_, src) in found.items()} for f in spec.facets}
    return feats.RequestContext(now_ms=now_ms, path=path, history=history, history_vectors=vectors,
                                query_vector=query_vector, profile=profile, history_facets=facets)


class Ranker:
    """Recommendations ranked by a registered model.

    Args:
        recommender: retrieval (its config decides filters, exclusions, cold start).
        model: the XGBoost model and its feature spec.
        pool: candidates retrieved and scored per request.
        log_requests: write exposures and feature rows (see the module docstring).
    """

    def __init__(self, recommender: Recommender, model: RankerModel, *, pool: int = 100, log_requests: bool = False,
                 rerank: str = "auto"):
        if rerank not in RERANK_MODES:
            raise ValueError(f"rerank must be one of {', '.join(RERANK_MODES)}, not {rerank!r}")
        self.recommender = recommender
        self.model = model
        self.pool = pool
        self.log_requests = log_requests
        self.rerank = rerank
        self._plugin: bool | None = None
        # Serve the pools the model was trained on: kNN plus the same numbers of popular and
        # co-liked additions. The pool carries only what the features read; the k shown get
        # their full documents after.
        spec = model.spec
        self.recommender.config = replace(recommender.config, with_vectors=True,
                                          popular_mix=int(model.training.get("popular_mix", 0)),
                                          cooc=spec.cooc, cooc_mix=int(model.training.get("cooc_mix", 0)),
                                          source_fields=("signals", *spec.facets, *spec.item_numeric))

    def plugin_usable(self) -> bool:
        """Whether the vecrank plugin can rank for this model: installed on every node, and the
        model registered with its ``plugin_features``."""
        if self._plugin is None:
            from vecrank.rank.rescore import plugin_installed

            self._plugin = bool(self.model.plugin_features) and self.model.version > 0 and plugin_installed(
                self.recommender.client)
        return self._plugin

    def _mode(self, rerank: str | None, explain: bool) -> str:
        mode = rerank or self.rerank
        if mode not in RERANK_MODES:
            raise ValueError(f"rerank must be one of {', '.join(RERANK_MODES)}, not {mode!r}")
        if mode == "plugin" and not self.plugin_usable():
            raise VecrankError(f"model {self.model.model_id}@{self.model.version} cannot be ranked by the plugin "
                               "(not installed on every node, or the model has no plugin_features: "
                               "`vecrank plugin install`, `vecrank plugin attach`)")
        if mode == "auto":
            # The feature log and --explain need the feature rows, which only the Python path has.
            mode = "plugin" if not (explain or self.log_requests) and self.plugin_usable() else "python"
        return mode

    def recommend(self, *, k: int = 10, explain: bool = False, now_ms: int | None = None, rerank: str | None = None,
                  **retrieve: Any) -> Recommendation:
        """Top ``k`` for a user and/or query; ``retrieve`` goes to :meth:`Recommender.candidates`.

        Args:
            k: how many items.
            explain: each item's feature contributions (the Python path computes them).
            now_ms: the request time (default now).
            rerank: ``"python"`` (features here, XGBoost here), ``"plugin"`` (the kNN hits and the
                popular and co-liked additions ranked inside Elasticsearch by the vecrank
                rescorer; a path the plugin does not take, such as multi-interest, is ranked here),
                or ``"auto"``: the plugin when it can serve this model and neither ``explain`` nor
                request logging needs the feature rows. Both give the same order.
        """
        started = time.perf_counter()
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        mode = self._mode(rerank, explain)
        spec, trained = self.model.spec, self.model.training.get("paths")
        client, settings = self.recommender.client, self.recommender.settings
        profile = self.recommender.config.profile
        held: dict[str, Any] = {}

        def section(*, path: str, history: Sequence[Any], query_vector: np.ndarray | None,
                    profile_vector: np.ndarray, cooc: tuple[int, dict[str, int]] | None) -> dict[str, Any] | None:
            from vecrank.rank.rescore import rescore_body, rescore_params

            if trained and path not in trained:
                return None
            held["ctx"] = ctx = history_context(client, settings, spec, history=history, path=path,
                                                query_vector=query_vector, now_ms=now, profile=profile)
            shares = None
            if cooc is not None and cooc[0]:
                shares = {item: count / cooc[0] for item, count in cooc[1].items()}
            params = rescore_params(spec, ctx, profile_vector=profile_vector, cooc=shares,
                                    cooc_default=0.0 if shares is not None else None)
            return rescore_body(model_id=self.model.model_id, version=self.model.version, params=params,
                                window_size=max(self.pool, k), models_index=settings.index("models"))

        cset = self.recommender.candidates(k=max(self.pool, k), rescore=section if mode == "plugin" else None,
                                           **retrieve)
        t_retrieved = time.perf_counter()
        # What the plugin did not rank (everything on the Python path) gets its features here.
        local = np.array([c.model_score is None for c in cset.candidates], dtype=bool)
        todo = [c for c, here in zip(cset.candidates, local) if here]
        matrix = np.full((len(cset.candidates), len(spec.names)), np.nan, dtype=np.float32)
        if todo:
            ctx = held.get("ctx") or request_context(client, settings, spec, cset, now_ms=now, profile=profile)
            matrix[local] = feats.compute(spec, todo, ctx)
        t_features = time.perf_counter()
        if trained and cset.path not in trained:
            # The model never saw requests like this one (a cold start, a search query): its
            # scores would mean little, so keep retrieval's order.
            scores = -np.arange(len(cset.candidates), dtype=np.float32)
            model_name = f"none (path {cset.path} not in {self.model.model_id}@{self.model.version}'s training)"
            explain = False
        else:
            scores = np.array([np.nan if c.model_score is None else c.model_score for c in cset.candidates],
                              dtype=np.float32)
            if todo:
                scores[local] = self.model.predict(matrix[local])
            model_name = f"{self.model.model_id}@{self.model.version}"
        order = rank_order(scores, [c.item_id for c in cset.candidates])[:k]
        contribs = self.model.contributions(matrix[order]) if explain and len(order) else None
        t_model = time.perf_counter()
        shown = client.mget(index=settings.index("items"),
                            ids=[cset.candidates[i].item_id for i in order])["docs"] if len(order) else []
        for i, doc in zip(order, shown):
            if doc.get("found"):
                cset.candidates[i].fields = doc["_source"]
        ranked = []
        for row, i in enumerate(order):
            explained = None
            if contribs is not None:
                explained = {name: round(float(v), 5) for name, v in zip([*spec.names, "bias"], contribs[row])}
            ranked.append(Ranked(cset.candidates[i].item_id, float(scores[i]), cset.candidates[i], matrix[i], explained))
        rec = Recommendation(
            request_id=cset.request_id, model=model_name, path=cset.path,
            cold_start=cset.cold_start, items=ranked, rerank="python" if local.all() else mode,
            timings_ms={"retrieval": round((t_retrieved - started) * 1000, 2),
                        "features": round((t_features - t_retrieved) * 1000, 2),
                        "model": round((t_model - t_features) * 1000, 2),
                        "total": round((time.perf_counter() - started) * 1000, 2)})
        if self.log_requests:
            self._log(rec, user=retrieve.get("user"), now_ms=now)
        return rec

    def _log(self, rec: Recommendation, *, user: str | None, now_ms: int) -> None:
        from elasticsearch import helpers

        from vecrank.ingest.events import ensure_events_index
        from vecrank.ingest.indices import create_index_if_missing

        settings, client = self.recommender.settings, self.recommender.client
        events_index = ensure_events_index(client, settings)
        log_index = settings.index("feature-log")
        create_index_if_missing(client, log_index, feature_log_mapping())
        actions: list[dict[str, Any]] = []
        for position, r in enumerate(rec.items, 1):
            if user is not None:
                actions.append(impression_action(events_index, user=str(user), item_id=r.item_id,
                                                 request_id=rec.request_id, position=position,
                                                 model_version=rec.model, now_ms=now_ms))
            actions.append(feature_log_action(log_index, request_id=rec.request_id, user=user, item_id=r.item_id,
                                              position=position, now_ms=now_ms, model_version=rec.model,
                                              spec=self.model.spec.fingerprint(), path=rec.path, score=r.score,
                                              features=r.features))
        _, errors = helpers.bulk(client, actions, raise_on_error=False)
        for error in errors[:3]:
            log.warning("request log write failed: %s", error)


def impression_action(events_index: str, *, user: str, item_id: str, request_id: str, position: int,
                      model_version: str, now_ms: int, arm: str | None = None) -> dict[str, Any]:
    """The bulk action that records one shown item as an impression event (idempotent id)."""
    from vecrank.ingest.events import event_id

    eid = event_id(user, item_id, "impression", now_ms, request_id, None)
    doc = {"event_id": eid, "user_id": user, "item_id": item_id, "type": "impression", "timestamp": now_ms,
           "request_id": request_id, "position": position, "model_version": model_version, "ingested_at": now_ms}
    if arm:
        doc["arm"] = arm
    return {"_op_type": "create", "_index": events_index, "_id": eid, "_source": doc}


def feature_log_action(log_index: str, *, request_id: str, user: str | None, item_id: str, position: int,
                       now_ms: int, model_version: str, spec: str, path: str, score: float | None,
                       features: np.ndarray) -> dict[str, Any]:
    """The bulk action that records the feature row serving used for one shown item (see
    :func:`vecrank.rank.train.from_feature_log`); NaN is stored as null."""
    return {"_op_type": "index", "_index": log_index, "_id": f"{request_id}:{item_id}", "_source": {
        "request_id": request_id, "user_id": user, "item_id": item_id, "position": position, "timestamp": now_ms,
        "model": model_version, "spec": spec, "path": path, "score": score,
        "features": [None if not np.isfinite(x) else float(x) for x in features]}}


def feature_log_mapping() -> dict[str, Any]:
    return {"dynamic": "strict", "properties": {
        "request_id": {"type": "keyword"}, "user_id": {"type": "keyword"}, "item_id": {"type": "keyword"},
        "position": {"type": "integer"}, "timestamp": {"type": "date", "format": "epoch_millis"},
        "model": {"type": "keyword"}, "spec": {"type": "keyword"}, "path": {"type": "keyword"},
        "score": {"type": "float"},
        "features": {"type": "float", "index": False, "doc_values": False}}}


def rank_order(scores: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
    """Indices best first; ties (trees give many) by item id, so that every path that ranks the
    same scores (Python, the plugin, offline evaluation) gives the same order."""
    return np.lexsort((np.array(list(item_ids), dtype=object), -np.asarray(scores)))


def score_candidates(model: RankerModel, candidates: Sequence[Candidate], ctx: feats.RequestContext) -> np.ndarray:
    """Model scores for candidates in their given order (evaluation uses this)."""
    return model.predict(feats.compute(model.spec, candidates, ctx))
