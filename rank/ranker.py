"""Serving: candidates → features → XGBoost → top-k, with the request id and model version.

``Ranker.recommend`` retrieves a wider pool than it returns (``pool``), computes the feature
matrix for the whole pool at once, scores it with the model and keeps the best ``k``. With
logging on, each response's exposures (impression events carrying the request id, position and
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

from vecrank.rank import features as feats
from vecrank.rank.model import RankerModel
from vecrank.rank.profiles import ProfileConfig
from vecrank.rank.recommender import Candidate, CandidateSet, Recommender
from vecrank.rank.store import fetch_items

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)


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

    def to_dict(self, *, with_features: bool = False) -> dict[str, Any]:
        out = {"request_id": self.request_id, "model": self.model, "path": self.path, "cold_start": self.cold_start,
               "timings_ms": self.timings_ms, "items": []}
        for r in self.items:
            item = {"item_id": r.item_id, "score": r.score, "knn_score": r.candidate.score,
                    "cosine": r.candidate.cosine, "fields": r.candidate.fields}
            if r.contributions is not None:
                item["contributions"] = r.contributions
            out["items"].append(item)
        return out


def request_context(client: Elasticsearch, settings: Settings, spec: feats.FeatureSpec, cset: CandidateSet, *,
                    now_ms: int, profile: ProfileConfig) -> feats.RequestContext:
    """What the features need besides the candidates: the last K positive history items' vectors
    and facet values, fetched in one request."""
    positive = [e for e in sorted(cset.history, key=lambda e: -int(e["timestamp"]))
                if profile.event_weight(e, int(e["timestamp"])) > 0][: spec.history_k]
    found = fetch_items(client, settings.index("items"), {str(e["item_id"]) for e in positive}, spec.facets)
    vectors = {i: v for i, (v, _) in found.items() if v is not None}
    facets = {f: {i: feats.facet_values(src.get(f)) for i, (_, src) in found.items()} for f in spec.facets}
    return feats.RequestContext(now_ms=now_ms, path=cset.path, history=cset.history, history_vectors=vectors,
                                query_vector=cset.query_vector, profile=profile, history_facets=facets)


class Ranker:
    """Recommendations ranked by a registered model.

    Args:
        recommender: retrieval (its config decides filters, exclusions, cold start).
        model: the XGBoost model and its feature spec.
        pool: candidates retrieved and scored per request.
        log_requests: write exposures and feature rows (see the module docstring).
    """

    def __init__(self, recommender: Recommender, model: RankerModel, *, pool: int = 100, log_requests: bool = False):
        self.recommender = recommender
        self.model = model
        self.pool = pool
        self.log_requests = log_requests
        # Serve the pools the model was trained on: kNN plus the same numbers of popular and
        # co-liked additions.
        # The pool carries only what the features read; the k shown get their full documents after.
        spec = model.spec
        self.recommender.config = replace(recommender.config, with_vectors=True,
                                          popular_mix=int(model.training.get("popular_mix", 0)),
                                          cooc=spec.cooc, cooc_mix=int(model.training.get("cooc_mix", 0)),
                                          source_fields=("signals", *spec.facets, *spec.item_numeric))

    def recommend(self, *, k: int = 10, explain: bool = False, now_ms: int | None = None,
                  **retrieve: Any) -> Recommendation:
        """Top ``k`` for a user and/or query; ``retrieve`` goes to :meth:`Recommender.candidates`."""
        started = time.perf_counter()
        cset = self.recommender.candidates(k=max(self.pool, k), **retrieve)
        t_retrieved = time.perf_counter()
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        ctx = request_context(self.recommender.client, self.recommender.settings, self.model.spec, cset,
                              now_ms=now, profile=self.recommender.config.profile)
        matrix = feats.compute(self.model.spec, cset.candidates, ctx)
        t_features = time.perf_counter()
        trained = self.model.training.get("paths")
        if trained and cset.path not in trained:
            # The model never saw requests like this one (a cold start, a search query): its
            # scores would mean little, so keep retrieval's order.
            scores = -np.arange(len(cset.candidates), dtype=np.float32)
            model_name = f"none (path {cset.path} not in {self.model.model_id}@{self.model.version}'s training)"
            explain = False
        else:
            scores = self.model.predict(matrix)
            model_name = f"{self.model.model_id}@{self.model.version}"
        order = np.argsort(-scores, kind="stable")[:k]
        contribs = self.model.contributions(matrix[order]) if explain and len(order) else None
        t_model = time.perf_counter()
        shown = self.recommender.client.mget(index=self.recommender.settings.index("items"),
                                             ids=[cset.candidates[i].item_id for i in order])["docs"] if len(order) else []
        for i, doc in zip(order, shown):
            if doc.get("found"):
                cset.candidates[i].fields = doc["_source"]
        ranked = []
        for row, i in enumerate(order):
            explained = None
            if contribs is not None:
                explained = {name: round(float(v), 5) for name, v in zip([*self.model.spec.names, "bias"], contribs[row])}
            ranked.append(Ranked(cset.candidates[i].item_id, float(scores[i]), cset.candidates[i], matrix[i], explained))
        rec = Recommendation(
            request_id=cset.request_id, model=model_name, path=cset.path,
            cold_start=cset.cold_start, items=ranked,
            timings_ms={"retrieval": round((t_retrieved - started) * 1000, 2),
                        "features": round((t_features - t_retrieved) * 1000, 2),
                        "model": round((t_model - t_features) * 1000, 2),
                        "total": round((time.perf_counter() - started) * 1000, 2)})
        if self.log_requests:
            self._log(rec, user=retrieve.get("user"), now_ms=now)
        return rec

    def _log(self, rec: Recommendation, *, user: str | None, now_ms: int) -> None:
        from elasticsearch import helpers

        from vecrank.ingest.events import ensure_events_index, event_id
        from vecrank.ingest.indices import create_index_if_missing

        settings, client = self.recommender.settings, self.recommender.client
        events_index = ensure_events_index(client, settings)
        log_index = settings.index("feature-log")
        create_index_if_missing(client, log_index, feature_log_mapping())
        actions: list[dict[str, Any]] = []
        for position, r in enumerate(rec.items, 1):
            if user is not None:
                eid = event_id(str(user), r.item_id, "impression", now_ms, rec.request_id, None)
                actions.append({"_op_type": "create", "_index": events_index, "_id": eid, "_source": {
                    "event_id": eid, "user_id": str(user), "item_id": r.item_id, "type": "impression",
                    "timestamp": now_ms, "request_id": rec.request_id, "position": position,
                    "model_version": rec.model, "ingested_at": now_ms}})
            actions.append({"_op_type": "index", "_index": log_index, "_id": f"{rec.request_id}:{r.item_id}", "_source": {
                "request_id": rec.request_id, "user_id": user, "item_id": r.item_id, "position": position,
                "timestamp": now_ms, "model": rec.model, "spec": self.model.spec.fingerprint(), "path": rec.path,
                "score": r.score,
                "features": [None if not np.isfinite(x) else float(x) for x in r.features]}})
        _, errors = helpers.bulk(client, actions, raise_on_error=False)
        for error in errors[:3]:
            log.warning("request log write failed: %s", error)


def feature_log_mapping() -> dict[str, Any]:
    return {"dynamic": "strict", "properties": {
        "request_id": {"type": "keyword"}, "user_id": {"type": "keyword"}, "item_id": {"type": "keyword"},
        "position": {"type": "integer"}, "timestamp": {"type": "date", "format": "epoch_millis"},
        "model": {"type": "keyword"}, "spec": {"type": "keyword"}, "path": {"type": "keyword"},
        "score": {"type": "float"},
        "features": {"type": "float", "index": False, "doc_values": False}}}


def score_candidates(model: RankerModel, candidates: Sequence[Candidate], ctx: feats.RequestContext) -> np.ndarray:
    """Model scores for candidates in their given order (evaluation uses this)."""
    return model.predict(feats.compute(model.spec, candidates, ctx))
