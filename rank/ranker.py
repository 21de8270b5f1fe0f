"""Serving: the user's state → one search for the pool → XGBoost → top-k, with the request id
and model version.

``Ranker.recommend`` gathers the pool the model was trained with in one search, computes the
feature matrix for the whole pool at once, scores it and keeps the best ``k``. Where the vecrank
plugin is installed, that search carries a ``rescore`` section and Elasticsearch ranks the pool
with the same model (no candidate vectors cross the wire). Either way the model's order then
goes through the cold-item exposure policy (:mod:`vecrank.rank.exposure`, the model's
``ReplayConfig.cold_slots``): a few positions below the head go to the best-ranked candidates
with little history, by the same function in Python, with the plugin and in the offline
evaluation. With logging on, each response's
exposures (impression events carrying the request id, position and model version) and the exact
feature rows used go to Elasticsearch, so training later sees what serving saw.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest.events import ensure_events_index, event_id
from vecrank.ingest.indices import create_index_if_missing
from vecrank.rank import features as feats
from vecrank.rank import queries
from vecrank.rank.exposure import SIGNAL_FIELD, interactions_of, place_cold
from vecrank.rank.model import RankerModel
from vecrank.rank.offline import ReplayConfig
from vecrank.rank.recommender import Candidate, Recommender
from vecrank.rank.rescore import plugin_installed, rescore_body, rescore_params, score_to_model
from vecrank.rank.state import UserState

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
RERANK_MODES = ("auto", "python", "plugin")


@dataclass
class Ranked:
    """One shown item. ``score`` and ``features`` are None where no model ranked the request."""

    item_id: str
    score: float | None
    candidate: Candidate
    features: np.ndarray | None = field(default=None, repr=False)
    contributions: dict[str, float] | None = None


@dataclass
class Recommendation:
    """A response. ``ranked_by`` is the model version that ordered the items (``id@version``), or
    None on a path the model was not trained for: then the items keep retrieval's order, carry no
    score, and ``unranked_reason`` says why."""

    request_id: str
    ranked_by: str | None
    path: str
    cold_start: bool
    items: list[Ranked]
    timings_ms: dict[str, float]
    rerank: str | None = "python"  # where the model ran: "python", "plugin" (inside Elasticsearch), None
    unranked_reason: str | None = None

    def to_dict(self, *, with_features: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "ranked_by": self.ranked_by,
            "path": self.path,
            "cold_start": self.cold_start,
            "rerank": self.rerank,
            "timings_ms": self.timings_ms,
            "items": [],
        }
        if self.unranked_reason is not None:
            out["unranked_reason"] = self.unranked_reason
        for r in self.items:
            knn = r.candidate.score
            item = {
                "item_id": r.item_id,
                **({"score": r.score} if r.score is not None else {}),
                "knn_score": None if knn != knn else knn,
                "cosine": r.candidate.cosine,
                "fields": r.candidate.fields,
            }
            if r.contributions is not None:
                item["contributions"] = r.contributions
            out["items"].append(item)
        return out


class Ranker:
    """Recommendations ranked by a registered model.

    The profile path (a known user, no search text) is the one the model is trained on: the
    user document, then **one search** that gathers the pool the model was trained with
    (:class:`~vecrank.rank.offline.PoolConfig`: text-profile kNN, collaborative kNN, the user's
    co-occurring and next-in-sequence items, popular and trending items, under the request's
    filters and exclusions). With the plugin, that search also carries the ``rescore`` that
    ranks the pool inside Elasticsearch and returns the ``k`` best with their documents (two
    round trips in all); in Python the pool comes back with its vectors, is ranked here, and the
    shown documents are read (three). Either way the model's order then goes through the model's
    cold slots (:func:`vecrank.rank.exposure.place_cold`, cold mask from the candidates'
    ``signals.interactions``); with the plugin, when ``k`` reaches a slot the search returns the
    whole ranked pool (``size`` = the rescore window, not ``k``) so that the cold candidates below
    the top ``k`` can be placed; still two round trips.

    Requests with search text are ranked by the **search model** where one is given
    (``search_model``, trained by ``evaluate --task search``): the user document (for a known
    user), then one search for the pool it was trained on (its embedding's kNN top and the best
    BM25 hits outside them, :func:`Recommender.search_pool_hits`). With the plugin that search
    carries the model's rescore and returns the ``k`` best with their shown fields; in Python it
    returns the pool with its vectors, ranked here. Two round trips either way. Other paths (cold starts
    without text, item pages, several interests, search text without a search model) keep
    retrieval's order and say so: no model saw requests like them.

    Args:
        recommender: retrieval (its config decides filters, exclusions, cold start).
        model: the XGBoost model, its feature spec and the pool and user-state rule it was trained with.
        log_requests: write exposures and feature rows (see the module docstring).
        rerank: where the model runs by default (``auto``, ``python`` or ``plugin``).
    """

    def __init__(
        self,
        recommender: Recommender,
        model: RankerModel,
        *,
        log_requests: bool = False,
        rerank: str = "auto",
        search_model: RankerModel | None = None,
    ):
        if rerank not in RERANK_MODES:
            raise ValueError(f"rerank must be one of {', '.join(RERANK_MODES)}, not {rerank!r}")
        self.recommender = recommender
        self.model = model
        self.log_requests = log_requests
        self.rerank = rerank
        self._plugin: bool | None = None
        config = (model.training or {}).get("config")
        if not config:
            raise VecrankError(
                f"model {model.model_id}@{model.version} records no pool or state config; "
                "train it again with this vecrank"
            )
        self.config = ReplayConfig.from_dict(config)
        self.search_model = search_model
        self.search_config = None
        if search_model is not None:
            if not search_model.spec.search:
                raise VecrankError(
                    f"model {search_model.model_id}@{search_model.version} is not a search model "
                    "(train one with `vecrank evaluate --task search`)"
                )
            self.search_config = ReplayConfig.from_dict((search_model.training or {})["config"])

    @property
    def version(self) -> str:
        return f"{self.model.model_id}@{self.model.version}"

    def plugin_usable(self, model: RankerModel | None = None) -> bool:
        """Whether the vecrank plugin can rank for ``model`` (default the profile model): installed
        on every node, and the model registered with its ``plugin_features``."""
        model = model or self.model
        if not (model.plugin_features and model.version > 0):
            return False
        if self._plugin is None:
            self._plugin = plugin_installed(self.recommender.client)
        return self._plugin

    def _mode(self, rerank: str | None, explain: bool, model: RankerModel | None = None) -> str:
        model = model or self.model
        mode = rerank or self.rerank
        if mode not in RERANK_MODES:
            raise ValueError(f"rerank must be one of {', '.join(RERANK_MODES)}, not {mode!r}")
        if mode == "plugin" and not self.plugin_usable(model):
            raise VecrankError(
                f"model {model.model_id}@{model.version} cannot be ranked by the plugin "
                "(not installed on every node, or the model has no plugin_features: "
                "`vecrank plugin install`, `vecrank plugin attach`)"
            )
        if mode == "auto":
            # The feature log and --explain need the feature rows, which only the Python path has.
            mode = "plugin" if not (explain or self.log_requests) and self.plugin_usable(model) else "python"
        return mode

    def recommend(
        self,
        *,
        k: int = 10,
        explain: bool = False,
        now_ms: int | None = None,
        rerank: str | None = None,
        user: str | None = None,
        query: str | None = None,
        filters: Any = None,
        extra_filters: Sequence[dict[str, Any]] = (),
        **retrieve: Any,
    ) -> Recommendation:
        """Top ``k`` for a user and/or query; other arguments go to :meth:`Recommender.candidates`.

        Args:
            k: how many items.
            explain: each item's feature contributions (the Python path computes them).
            now_ms: the request time (default now).
            rerank: ``"python"``, ``"plugin"`` or ``"auto"`` (the plugin when it can serve this
                model and neither ``explain`` nor request logging needs the feature rows). Both
                give the same order.
        """
        started = time.perf_counter()
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        rec = self.recommender
        profile_path = (
            user is not None
            and (query is None or not str(query).strip())
            and not retrieve.get("context_items")
            and retrieve.get("history") is None
            and rec.config.max_interests == 1
        )
        text = str(query).strip() if query is not None else ""
        if (
            text
            and self.search_model is not None
            and not retrieve.get("context_items")
            and retrieve.get("history") is None
            and rec.config.max_interests == 1
        ):
            return self._search(
                text,
                k=k,
                explain=explain,
                mode=self._mode(rerank, explain, self.search_model),
                started=started,
                now=now,
                user=user,
                filters=filters,
                extra_filters=extra_filters,
            )
        mode = self._mode(rerank, explain)
        state = rec.user_state(user, self.config.state) if profile_path and user is not None else None
        if state is None or (state.profile_vector is None and state.cf_vector is None):
            return self._unranked(
                k=k,
                started=started,
                now=now,
                user=user,
                query=query,
                filters=filters,
                extra_filters=extra_filters,
                **retrieve,
            )
        t_state = time.perf_counter()
        spec, pool = self.model.spec, self.config.pool
        ctx = feats.RequestContext(now_ms=now, path="profile", state=state)
        policy = self.config.cold_slots
        if mode == "plugin":
            window = max(pool.size, k)
            # Slots below k need the cold candidates ranked after k: the whole ranked window comes back.
            slotted = policy.applies(k)
            section = rescore_body(
                model_id=self.model.model_id,
                version=self.model.version,
                params=rescore_params(spec, ctx),
                window_size=window,
                models_index=rec.settings.index("models"),
                keep=None if slotted else k,
            )
            shown_source = queries.shown_source(rec.config.source_fields)
            source = queries.source_with(shown_source, SIGNAL_FIELD) if slotted else shown_source
            hits = rec.pool_hits(
                state,
                pool=pool,
                size=window if slotted else k,
                filters=filters,
                extra_filters=extra_filters,
                source=source,
                rescore=section,
            )
            if slotted:
                cold = policy.cold_mask(interactions_of([h.get("_source") or {} for h in hits]))
                picked = place_cold(np.arange(len(hits)), cold, k=k, policy=policy)
                hits = [_shown_hit(hits[i], strip=source != shown_source) for i in picked]
            t_pool = time.perf_counter()
            # The plugin returns scores, not feature rows: those stay in Elasticsearch.
            scores = np.atleast_1d(score_to_model(np.array([h["_score"] for h in hits], dtype=np.float64)))
            ranked = [Ranked(h["_id"], float(s), _candidate_of(h)) for h, s in zip(hits, scores)]
            timings = {"retrieval": _ms(started, t_pool), "features": 0.0, "model": 0.0}
        else:
            hits = rec.pool_hits(
                state,
                pool=pool,
                size=pool.size,
                filters=filters,
                extra_filters=extra_filters,
                source=queries.source_with(list(spec.source_fields()), SIGNAL_FIELD),
                with_vectors=True,
            )
            t_pool = time.perf_counter()
            candidates = [_candidate_of(h) for h in hits]
            matrix = feats.compute(spec, candidates, ctx)
            t_features = time.perf_counter()
            scores = self.model.predict(matrix)
            cold = policy.cold_mask(interactions_of([c.fields for c in candidates]))
            order = place_cold(rank_order(scores, [c.item_id for c in candidates]), cold, k=k, policy=policy)
            contribs = self.model.contributions(matrix[order]) if explain and len(order) else None
            t_model = time.perf_counter()
            shown = rec.documents([candidates[i].item_id for i in order], rec.config.source_fields)
            ranked = []
            for row, i in enumerate(order):
                c = candidates[i]
                c.fields = shown.get(c.item_id, c.fields)
                ranked.append(Ranked(c.item_id, float(scores[i]), c, matrix[i], _explained(spec, contribs, row)))
            timings = {
                "retrieval": _ms(started, t_pool),
                "features": _ms(t_pool, t_features),
                "model": _ms(t_features, t_model),
            }
        timings["state"] = _ms(started, t_state)
        timings["total"] = _ms(started, time.perf_counter())
        result = Recommendation(
            request_id=uuid.uuid4().hex,
            ranked_by=self.version,
            path="profile",
            cold_start=False,
            items=ranked,
            timings_ms=timings,
            rerank=mode,
        )
        if self.log_requests:
            self._log(result, user=user, now_ms=now)
        return result

    def _search(
        self,
        text: str,
        *,
        k: int,
        explain: bool,
        mode: str,
        started: float,
        now: int,
        user: str | None,
        filters: Any,
        extra_filters: Sequence[dict[str, Any]],
    ) -> Recommendation:
        """A request with search text, ranked by the search model (see the class docstring)."""
        rec, model = self.recommender, self.search_model
        assert model is not None and self.search_config is not None
        state = rec.user_state(user, self.search_config.state) if user is not None else None
        t_state = time.perf_counter()
        vector = np.asarray(rec.embedder.encode([text], show_progress_bar=False)[0], dtype=np.float32)
        spec = model.spec
        personal = state is not None and bool(state.history)
        ctx = feats.RequestContext(
            now_ms=now,
            path="profile+query" if personal else "query",
            state=state if state is not None else UserState(),
            query_vector=vector,
        )
        shown = rec.config.source_fields
        where = {"size": queries.SEARCH_POOL, "filters": filters, "extra_filters": extra_filters}
        if mode == "plugin":
            section = rescore_body(
                model_id=model.model_id,
                version=model.version,
                params=rescore_params(spec, ctx),
                window_size=queries.search_window(),
                models_index=rec.settings.index("models"),
                keep=k,
            )
            hits, _ = rec.search_pool_hits(
                text,
                vector,
                state,
                **where,
                source=queries.shown_source(shown),
                with_vectors=False,
                rescore=section,
                hits=k,
            )
            t_pool = time.perf_counter()
            scores = np.atleast_1d(score_to_model(np.array([h["_score"] for h in hits], dtype=np.float64)))
            ranked = [Ranked(h["_id"], float(s), _candidate_of(h)) for h, s in zip(hits, scores)]
            t_features = t_model = t_pool
        else:
            source = sorted({*shown, *spec.source_fields()}) if shown is not None else queries.shown_source(None)
            hits, bm25 = rec.search_pool_hits(text, vector, state, **where, source=source)
            t_pool = time.perf_counter()
            candidates = [_candidate_of(h) for h in hits]
            ctx = replace(ctx, bm25=bm25)
            matrix = feats.compute(spec, candidates, ctx)
            t_features = time.perf_counter()
            scores = model.predict(matrix)
            order = rank_order(scores, [c.item_id for c in candidates])[:k]
            contribs = model.contributions(matrix[order]) if explain and len(order) else None
            t_model = time.perf_counter()
            ranked = []
            for row, i in enumerate(order):
                c = candidates[i]
                if shown is not None:  # the features read more fields than the caller asked to see
                    c.fields = {f: v for f, v in c.fields.items() if f in shown}
                ranked.append(Ranked(c.item_id, float(scores[i]), c, matrix[i], _explained(spec, contribs, row)))
        timings = {
            "state": _ms(started, t_state),
            "retrieval": _ms(t_state, t_pool),
            "features": _ms(t_pool, t_features),
            "model": _ms(t_features, t_model),
            "total": _ms(started, time.perf_counter()),
        }
        result = Recommendation(
            request_id=uuid.uuid4().hex,
            ranked_by=f"{model.model_id}@{model.version}",
            path=ctx.path,
            cold_start=not personal,
            items=ranked,
            timings_ms=timings,
            rerank=mode,
        )
        if self.log_requests:
            self._log(result, user=user, now_ms=now, spec=spec)
        return result

    def _unranked(self, *, k: int, started: float, now: int, user: str | None, **retrieve: Any) -> Recommendation:
        """Retrieval's own order, for the paths no model was trained on."""
        cset = self.recommender.candidates(k=k, user=user, **retrieve)
        ranked = [Ranked(c.item_id, None, c) for c in cset.candidates[:k]]
        trained = "the profile path" + (" and search text" if self.search_model is not None else "")
        result = Recommendation(
            request_id=cset.request_id,
            ranked_by=None,
            path=cset.path,
            cold_start=cset.cold_start,
            items=ranked,
            rerank=None,
            unranked_reason=f"{self.version} is trained for {trained} only, not {cset.path}",
            timings_ms={
                "retrieval": _ms(started, time.perf_counter()),
                "features": 0.0,
                "model": 0.0,
                "total": _ms(started, time.perf_counter()),
            },
        )
        if self.log_requests:
            self._log(result, user=user, now_ms=now)
        return result

    def _log(
        self, rec: Recommendation, *, user: str | None, now_ms: int, spec: feats.FeatureSpec | None = None
    ) -> None:
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import helpers

        settings, client = self.recommender.settings, self.recommender.client
        events_index = ensure_events_index(client, settings)
        log_index = settings.index("feature-log")
        create_index_if_missing(client, log_index, feature_log_mapping())
        actions: list[dict[str, Any]] = []
        shown_by = rec.ranked_by or self.version  # the model that ranked them, else the serving one
        for position, r in enumerate(rec.items, 1):
            if user is not None:
                actions.append(
                    impression_action(
                        events_index,
                        user=str(user),
                        item_id=r.item_id,
                        request_id=rec.request_id,
                        position=position,
                        model_version=shown_by,
                        now_ms=now_ms,
                    )
                )
            if r.features is not None:  # a feature row only where the model ranked the item
                actions.append(
                    feature_log_action(
                        log_index,
                        request_id=rec.request_id,
                        user=user,
                        item_id=r.item_id,
                        position=position,
                        now_ms=now_ms,
                        model_version=shown_by,
                        spec=(spec or self.model.spec).fingerprint(),
                        path=rec.path,
                        score=r.score,
                        features=r.features,
                    )
                )
        if not actions:
            return
        _, errors = helpers.bulk(client, actions, raise_on_error=False)
        assert isinstance(errors, list)  # not stats_only: the failed items themselves
        for error in errors[:3]:
            log.warning("request log write failed: %s", error)


def impression_action(
    events_index: str,
    *,
    user: str,
    item_id: str,
    request_id: str,
    position: int,
    model_version: str,
    now_ms: int,
    arm: str | None = None,
) -> dict[str, Any]:
    """The bulk action that records one shown item as an impression event (idempotent id)."""

    eid = event_id(user, item_id, "impression", now_ms, request_id, None)
    doc = {
        "event_id": eid,
        "user_id": user,
        "item_id": item_id,
        "type": "impression",
        "timestamp": now_ms,
        "request_id": request_id,
        "position": position,
        "model_version": model_version,
        "ingested_at": now_ms,
    }
    if arm:
        doc["arm"] = arm
    return {"_op_type": "create", "_index": events_index, "_id": eid, "_source": doc}


def feature_log_action(
    log_index: str,
    *,
    request_id: str,
    user: str | None,
    item_id: str,
    position: int,
    now_ms: int,
    model_version: str,
    spec: str,
    path: str,
    score: float | None,
    features: np.ndarray,
) -> dict[str, Any]:
    """The bulk action that records the feature row serving used for one shown item (see
    :func:`vecrank.rank.train.from_feature_log`); NaN is stored as null."""
    return {
        "_op_type": "index",
        "_index": log_index,
        "_id": f"{request_id}:{item_id}",
        "_source": {
            "request_id": request_id,
            "user_id": user,
            "item_id": item_id,
            "position": position,
            "timestamp": now_ms,
            "model": model_version,
            "spec": spec,
            "path": path,
            "score": score,
            "features": [None if not np.isfinite(x) else float(x) for x in features],
        },
    }


def feature_log_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "request_id": {"type": "keyword"},
            "user_id": {"type": "keyword"},
            "item_id": {"type": "keyword"},
            "position": {"type": "integer"},
            "timestamp": {"type": "date", "format": "epoch_millis"},
            "model": {"type": "keyword"},
            "spec": {"type": "keyword"},
            "path": {"type": "keyword"},
            "score": {"type": "float"},
            "features": {"type": "float", "index": False, "doc_values": False},
        },
    }


def rank_order(scores: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
    """Indices best first; ties (trees give many) by item id, so that every path that ranks the
    same scores (Python, the plugin, offline evaluation) gives the same order."""
    return np.lexsort((np.array(list(item_ids), dtype=object), -np.asarray(scores)))


def _explained(spec: feats.FeatureSpec, contribs: np.ndarray | None, row: int) -> dict[str, float] | None:
    """The ``row``-th ranked item's score split into each feature's contribution and the bias,
    where the request asked for it (``contribs`` not None)."""
    if contribs is None:
        return None
    return {name: round(float(v), 5) for name, v in zip([*spec.names, "bias"], contribs[row])}


def _ms(since: float, until: float) -> float:
    """Milliseconds between two ``perf_counter`` readings, to two decimals."""
    return round((until - since) * 1000, 2)


def _shown_hit(hit: dict[str, Any], *, strip: bool) -> dict[str, Any]:
    """``hit``, or a copy without the ``signals.interactions`` its search added to the shown fields."""
    if not strip:
        return hit
    source = dict(hit.get("_source") or {})
    signals = {k: v for k, v in (source.pop("signals", None) or {}).items() if k != "interactions"}
    if signals:
        source["signals"] = signals
    return {**hit, "_source": source}


def _candidate_of(hit: dict[str, Any]) -> Candidate:
    """A pool hit as a candidate: its stored fields, and its vectors when the search returned them."""
    f = hit.get("fields") or {}
    emb, cfv = f.get("embedding"), f.get("cf_vector")
    return Candidate(
        item_id=hit["_id"],
        score=float(hit.get("_score") or 0.0),
        cosine=None,
        fields=hit.get("_source") or {},
        vector=np.asarray(emb, dtype=np.float32) if emb else None,
        cf_vector=np.asarray(cfv, dtype=np.float32) if cfv else None,
        origin=",".join(hit.get("matched_queries") or ()) or "pool",
    )
