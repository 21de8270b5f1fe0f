"""What the HTTP service does, without HTTP: recommendations under the running experiment, events
attributed to the arm that served them, and health.

One :class:`RecommendService` per process. It holds one *engine* per ranker it serves (a model
version plus retrieval settings, each over its own :class:`~vecrank.rank.recommender.Recommender`
that shares one query embedder: :mod:`vecrank.serve.engine`, :mod:`vecrank.serve.embedding`), the
running experiment (re-read every few seconds, so ``vecrank experiment start|stop`` takes effect
without a restart), the active default model and the items index behind the alias (re-read
likewise, and at once when Elasticsearch refuses a search as it does after the alias moved: a
reindex to another text model needs no restart, see :meth:`RecommendService.live_items`), a
bounded memory of recent requests (request id → arm, model version, shown positions) for
attributing events, and a :class:`~vecrank.serve.writer.BackgroundWriter` for exposures and
feature rows.

Nothing here needs Elasticsearch to construct: while the cluster is unreachable each call raises
:class:`~vecrank.serve.deadline.Unavailable`, and the next call after it comes back simply works.

**Deadlines.** Every recommendation and event batch runs within a time budget
(``ServeConfig.request_budget_s``, ``events_budget_s``), held by the client of
:mod:`vecrank.serve.deadline`; past it, a :class:`~vecrank.serve.deadline.BudgetExceeded` (HTTP 503).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

from vecrank import __version__
from vecrank.client import make_client
from vecrank.errors import VecrankError
from vecrank.ingest import indices
from vecrank.ingest.bulk import RETRYABLE_STATUS, bulk_with_retries
from vecrank.ingest.events import EventBounds, EventTypes, apply_to_users, ensure_events_index, parse_event
from vecrank.ingest.indices import create_index_if_missing
from vecrank.ingest.records import BadRecord, Record, normalise_id
from vecrank.rank.experiments import HOLDOUT, INTERLEAVED, ExperimentStore
from vecrank.rank.interleaving import team_draft
from vecrank.rank.model import Registry, search_model_id
from vecrank.rank.queries import RequestError
from vecrank.rank.ranker import feature_log_action, feature_log_mapping, impression_action
from vecrank.rank.store import refresh_profiles
from vecrank.serve.deadline import MIN_CALL_S, BudgetedClient, BudgetExceeded, Unavailable, deadline, unavailable_cause
from vecrank.serve.embedding import SharedEmbedder
from vecrank.serve.engine import Engine, EngineResult, LiveItems, wrong_index
from vecrank.serve.writer import BackgroundWriter

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.rank.experiments import Arm, Experiment
    from vecrank.rank.model import RankerModel
    from vecrank.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """Service settings (``vecrank serve`` options).

    Args:
        model_id: registry id whose active version ranks requests outside experiments.
        max_k: largest ``k`` a request may ask for.
        item_fields: item fields returned with each item (None: the whole document).
        log_exposures: record an impression per shown item (needed by experiment reports).
        log_features: record the feature rows of ranked items (``vecrank train --from-log``).
        experiment_refresh_s: how often the running experiment is re-read.
        model_refresh_s: how often the default model's active version is re-read.
        remember_requests: recent requests kept in memory for attributing events.
        max_events: events per ``POST /events``.
        retry_after_s: the ``Retry-After`` of a 503.
        es_timeout_s: Elasticsearch timeout outside requests (warm-up, the background writer);
            requests' calls get what is left of their budget instead.
        query_cache: search texts whose embeddings are kept (LRU); 0: none.
        key_cache_s: how long the service trusts an API key it read from ``<prefix>-apikeys``;
            a revoked key is refused within this time. 0: read the key on every request.
        rate_limit_rps: requests per second each API key may make on average (a token bucket per
            key, per worker process); 0: no limit.
        rate_limit_burst: requests a key may make at once before the rate applies.
        request_budget_s: the time a recommendation request may take, from its admission; its
            Elasticsearch calls get what is left, and past it the request fails with 503.
        events_budget_s: the same for a ``POST /events`` batch (it writes events and users).
        max_in_flight: requests a worker process admits at once to /recommendations and
            /events (running or waiting for a thread); past it, an immediate 503. None: twice
            the request threads.
        event_bounds: the plausible timestamps and ratings of posted events (the rule
            ``vecrank ingest events`` applies too).
        event_types: the event types ``POST /events`` accepts (the site's ``--event-type`` and
            ``--negative``, as ``vecrank ingest events`` takes them); the OpenAPI spec lists them.
    """

    model_id: str = "vecrank"
    max_k: int = 100
    item_fields: tuple[str, ...] | None = None
    log_exposures: bool = True
    log_features: bool = True
    experiment_refresh_s: float = 5.0
    model_refresh_s: float = 30.0
    remember_requests: int = 100_000
    max_events: int = 1000
    retry_after_s: int = 5
    es_timeout_s: float = 10.0
    query_cache: int = 10_000
    key_cache_s: float = 30.0
    rate_limit_rps: float = 50.0
    rate_limit_burst: int = 100
    request_budget_s: float = 1.0
    events_budget_s: float = 5.0
    max_in_flight: int | None = None
    event_bounds: EventBounds = field(default_factory=EventBounds)
    event_types: EventTypes = field(default_factory=EventTypes)

    def __post_init__(self) -> None:
        for name in ("request_budget_s", "events_budget_s"):
            value = getattr(self, name)
            if not 0.05 <= value <= 600:
                raise ValueError(f"{name} must be between 0.05 and 600 seconds, not {value}")
        if self.max_in_flight is not None and not 1 <= self.max_in_flight <= 10_000:
            raise ValueError(f"max_in_flight must be between 1 and 10000, not {self.max_in_flight}")
        if not 1 <= self.max_k <= 1000:
            raise ValueError(f"max_k must be between 1 and 1000, not {self.max_k}")
        if not 1 <= self.max_events <= 100_000:
            raise ValueError(f"max_events must be between 1 and 100000, not {self.max_events}")
        if self.query_cache < 0:
            raise ValueError(f"query_cache must be >= 0, not {self.query_cache}")
        if not 0 <= self.key_cache_s <= 3600:
            raise ValueError(f"key_cache_s must be between 0 and 3600, not {self.key_cache_s}")
        if self.rate_limit_rps < 0:
            raise ValueError(f"rate_limit_rps must be >= 0, not {self.rate_limit_rps}")
        if self.rate_limit_burst < 1:
            raise ValueError(f"rate_limit_burst must be >= 1, not {self.rate_limit_burst}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["item_fields"] = list(self.item_fields) if self.item_fields is not None else None
        out["event_bounds"] = self.event_bounds.to_dict()
        out["event_types"] = self.event_types.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServeConfig:
        data = dict(data)
        if data.get("item_fields") is not None:
            data["item_fields"] = tuple(data["item_fields"])
        if isinstance(data.get("event_bounds"), Mapping):
            data["event_bounds"] = EventBounds.from_dict(data["event_bounds"])
        if isinstance(data.get("event_types"), Mapping):
            data["event_types"] = EventTypes.from_dict(data["event_types"])
        return cls(**data)


@dataclass
class _Remembered:
    user: str | None
    experiment: str | None
    items: dict[str, tuple[int, str | None, str]]  # item -> (position, arm label, model version)
    arm_label: str | None
    model_version: str


class RecommendService:
    """Recommendations and events for the HTTP app (see the module docstring).

    Args:
        settings: the cluster and index prefix.
        config: service settings.
        client: an Elasticsearch client (default: one made from ``settings``).
    """

    def __init__(self, settings: Settings, config: ServeConfig | None = None, *, client: Elasticsearch | None = None):
        self.settings = settings
        self.config = config or ServeConfig()
        base = (client or make_client(settings)).options(request_timeout=self.config.es_timeout_s)
        # Requests go through the budgeted client; the background writer, outside any request,
        # keeps the plain one and its es_timeout_s. Typed as the client it proxies attribute by attribute.
        self.client = cast("Elasticsearch", BudgetedClient(base))
        self.embedder = SharedEmbedder(self.client, settings, cache_size=self.config.query_cache)
        self._lock = threading.RLock()
        self._engines: dict[tuple, Engine] = {}
        self._models: dict[tuple[str, int], RankerModel] = {}
        self._default: tuple[Engine, float] | None = None
        self._search: RankerModel | None = None
        self._experiment: tuple[Experiment | None, float] | None = None
        self._requests: OrderedDict[str, _Remembered] = OrderedDict()
        self._known_items: OrderedDict[str, None] = OrderedDict()
        self._items: tuple[LiveItems, float] | None = None  # (what the alias points at, re-read after)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vecrank-interleave")
        self.started = time.time()
        self.writer: BackgroundWriter | None = None
        if self.config.log_exposures or self.config.log_features:
            self.writer = BackgroundWriter(base, prepare=self._prepare_indices)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self._pool.shutdown(wait=False)

    def _prepare_indices(self) -> None:
        ensure_events_index(self.client, self.settings)
        if self.config.log_features:
            create_index_if_missing(self.client, self.settings.index("feature-log"), feature_log_mapping())

    # --- what serves -------------------------------------------------------------------------

    def experiment(self) -> Experiment | None:
        """The running experiment, re-read every ``experiment_refresh_s``."""
        now = time.monotonic()
        cached = self._experiment
        if cached is not None and cached[1] > now:
            return cached[0]

        try:
            found = ExperimentStore(self.client, self.settings).running()
        except Exception as exc:
            if cached is not None and unavailable_cause(exc) is None:
                raise
            if cached is not None:  # keep serving the last known assignment while the cluster blips
                log.warning(
                    "cannot re-read the running experiment (%s); keeping %s",
                    unavailable_cause(exc),
                    cached[0].experiment_id if cached[0] else "none",
                )
                self._experiment = (cached[0], now + 1.0)
                return cached[0]
            raise
        if (cached[0].experiment_id if cached and cached[0] else None) != (found.experiment_id if found else None):
            log.info("serving experiment: %s", found.experiment_id if found else "none")
        self._experiment = (found, now + self.config.experiment_refresh_s)
        return found

    def refresh(self) -> None:
        """Forget the cached experiment and default model (the next request re-reads them)."""
        self._experiment = None
        self._default = None

    def live_items(self, *, force: bool = False) -> LiveItems:
        """The items index behind the alias and its text model, re-read every ``model_refresh_s``
        (at once with ``force``).

        When the alias has moved (``vecrank index reindex``, ``index switch``, ``rollback``,
        ``cf fit``), every engine is dropped, to be rebuilt over the new index's spec, mapping
        and collaborative model by the next request; when the new index holds vectors of another
        text model, the query embedder is replaced by one of that model (loaded on first use).
        """
        now = time.monotonic()
        cached = self._items
        if cached is not None and not force and cached[1] > now:
            return cached[0]
        try:
            name = indices.live_index(self.client, self.settings)
            if cached is not None and cached[0].index == name:
                found = cached[0]
            elif name is None:
                found = LiveItems(None)
            else:
                spec = indices.spec_of(self.client, name)
                found = LiveItems(name, spec.model, spec.dims)
        except Exception as exc:
            if cached is not None and unavailable_cause(exc) is not None:
                self._items = (cached[0], now + 1.0)  # keep serving what we know while the cluster blips
                return cached[0]
            raise
        with self._lock:
            before = self._items[0] if self._items is not None else None
            if before is not None and before != found:
                self._engines.clear()
                self._known_items.clear()
                self._default = None
                if (before.model, before.dims) != (found.model, found.dims):
                    self.embedder = SharedEmbedder(
                        self.client, self.settings, cache_size=self.config.query_cache, model=found.model
                    )
                    # Loaded beside the requests, so that few of them wait for it.
                    self._pool.submit(self._load_quietly, self.embedder)
                log.info(
                    "the items alias moved from %s (%s, %s dims) to %s (%s, %s dims): serving the new index",
                    before.index,
                    before.model,
                    before.dims,
                    found.index,
                    found.model,
                    found.dims,
                )
            elif before is None and found.model is not None and self.embedder.model is None:
                self.embedder.model = found.model
            self._items = (found, now + self.config.model_refresh_s)
        return found

    @staticmethod
    def _load_quietly(embedder: SharedEmbedder) -> None:
        try:
            embedder.encode(["warm up"], show_progress_bar=False)
        except Exception as exc:  # the first request that needs it says why
            log.warning("cannot load the query embedder of model %s: %s", embedder.model, exc)

    def _model(self, model_id: str, version: int) -> RankerModel:
        key = (model_id, version)
        if key not in self._models:
            self._models[key] = Registry(self.client, self.settings).get(model_id, version)
        return self._models[key]

    def _engine(
        self, model: RankerModel | None, retrieval: Mapping[str, Any], search_model: RankerModel | None = None
    ) -> Engine:
        key = (
            None if model is None else (model.model_id, model.version),
            tuple(sorted(retrieval.items())),
            None if search_model is None else (search_model.model_id, search_model.version),
        )
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                # The feature log needs the rows, which only ranking in Python computes; without
                # it the plugin ranks inside Elasticsearch where it is installed. The pool is the
                # model's own (the one it was trained with).
                engine = Engine(
                    self.client,
                    self.settings,
                    self.embedder,
                    model,
                    retrieval=retrieval,
                    rerank="python" if self.config.log_features else "auto",
                    search_model=search_model,
                )
                self._engines[key] = engine
            return engine

    def default_engine(self) -> Engine:
        """The active version of ``config.model_id`` (retrieval order when none is active), with
        the active search model (``<model_id>-search``) ranking requests with search text."""
        now = time.monotonic()
        self.live_items()  # may drop the engines (and the cached default) when the alias moved
        cached = self._default
        if cached is not None and cached[1] > now:
            return cached[0]

        def active(model_id: str) -> RankerModel | None:
            registry = Registry(self.client, self.settings)
            try:
                # The version first (a few bytes): the booster (about 1 MB) is read once per version.
                version = registry.active_version(model_id)
                if version is None:
                    return None
                return self._models.get((model_id, version)) or registry.get(model_id, version)
            except Unavailable:  # the budget ran out: not "no model"
                raise
            except VecrankError:
                return None

        try:
            model = active(self.config.model_id)
            search = active(search_model_id(self.config.model_id))
        except Exception as exc:
            if cached is not None and unavailable_cause(exc) is not None:
                self._default = (cached[0], now + 1.0)
                return cached[0]
            raise
        if model is not None:
            model = self._models.setdefault((model.model_id, model.version), model)
        if search is not None:
            search = self._models.setdefault((search.model_id, search.version), search)
        self._search = search
        engine = self._engine(model, {}, search)
        if cached is None or cached[0] is not engine:
            log.info("default ranker: %s", engine.version)
        self._default = (engine, now + self.config.model_refresh_s)
        return engine

    def arm_engine(self, arm: Arm) -> Engine:
        ref = arm.model_ref
        self.default_engine()  # refreshes the active search model, which every arm shares
        return self._engine(self._model(*ref) if ref else None, arm.retrieval, self._search)

    # --- recommendations ---------------------------------------------------------------------

    def within(self, at: float | None, budget_s: float, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` under the deadline ``at`` (default: ``budget_s`` from now); an
        Elasticsearch failure after the deadline passed is reported as :class:`BudgetExceeded`."""
        at = time.monotonic() + budget_s if at is None else at
        with deadline(at):
            try:
                return fn(*args, **kwargs)
            except BudgetExceeded:
                raise
            except Exception as exc:
                if time.monotonic() >= at - MIN_CALL_S and unavailable_cause(exc) is not None:
                    raise BudgetExceeded(
                        f"Elasticsearch did not answer within the request's budget of "
                        f"{budget_s:g} s ({unavailable_cause(exc)})"
                    ) from exc
                raise

    def recommend(
        self,
        *,
        user: str | None = None,
        query: str | None = None,
        filters: Mapping[str, Any] | None = None,
        k: int = 10,
        context_items: Sequence[str] = (),
        request_id: str | None = None,
        reasons: bool = False,
        deadline_at: float | None = None,
    ) -> dict[str, Any]:
        """The ranked items for one request, with its request id, arm and model version; with
        ``reasons``, each item the model ranked carries its top reasons (``[{code, text}]``).

        Args:
            deadline_at: when the request must be done (``time.monotonic()``); default
                ``config.request_budget_s`` from now.

        Raises:
            vecrank.rank.queries.RequestError: bad arguments (HTTP 422).
            Unavailable: Elasticsearch is down or busy (HTTP 503); :class:`BudgetExceeded` when
                the budget ran out.
        """
        return self.within(
            deadline_at,
            self.config.request_budget_s,
            self._recommend_current,
            user=user,
            query=query,
            filters=filters,
            k=k,
            context_items=context_items,
            request_id=request_id,
            reasons=reasons,
        )

    def _recommend_current(self, **kwargs: Any) -> dict[str, Any]:
        """:meth:`_recommend`; when Elasticsearch refuses the search as it does once the items
        alias moved under the service (a 400), the alias is re-read at once and, if it moved,
        the request runs once more over the new index."""
        seen = self._items[0] if self._items is not None else None
        try:
            return self._recommend(**kwargs)
        except Exception as exc:
            if not wrong_index(exc) or self.live_items(force=True) == seen:
                raise
        return self._recommend(**kwargs)

    def _recommend(
        self,
        *,
        user: str | None,
        query: str | None,
        filters: Mapping[str, Any] | None,
        k: int,
        context_items: Sequence[str],
        request_id: str | None,
        reasons: bool,
    ) -> dict[str, Any]:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.config.max_k:
            raise RequestError(f"k must be an integer between 1 and {self.config.max_k}, not {k!r}")
        started = time.perf_counter()
        request_id = request_id or uuid.uuid4().hex
        try:
            exp = self.experiment()
            unit = exp.assign(user) if exp is not None and user is not None else None
            retrieve = {
                "user": user,
                "query": query,
                "filters": dict(filters or {}),
                "context_items": list(context_items),
            }
            teams: dict[str, str] | None = None
            labels: dict[str, str | None]
            results: dict[str | None, EngineResult]
            if exp is None or unit is None or unit == HOLDOUT:
                engine = self.default_engine()
                result = engine.run(k=k, reasons=reasons, **retrieve)
                holdout = exp.label(HOLDOUT) if exp is not None and unit == HOLDOUT else None
                labels = {s.item_id: holdout for s in result.items}
                versions = {s.item_id: result.model_version for s in result.items}
                results = {None: result}
                model_version, ranked_by = result.model_version, result.ranked_by
            elif unit == INTERLEAVED:
                result, teams, by_arm = self._interleave(exp, k, retrieve, request_id, reasons)
                labels = {item: exp.label(team) for item, team in teams.items()}
                versions = {item: by_arm[team].model_version for item, team in teams.items()}
                results = {name: r for name, r in by_arm.items()}
                model_version = "+".join(by_arm[a.name].model_version for a in exp.arms)
                ranked_by = "+".join(r for r in (by_arm[a.name].ranked_by for a in exp.arms) if r) or None
            else:
                result = self.arm_engine(exp.arm(unit)).run(k=k, reasons=reasons, **retrieve)
                labels = {s.item_id: exp.label(unit) for s in result.items}
                versions = {s.item_id: result.model_version for s in result.items}
                results = {unit: result}
                model_version, ranked_by = result.model_version, result.ranked_by
            # the experiment this request counts for (None: none running, or the user was not assigned)
            counted = exp if unit is not None else None
        except Exception as exc:
            cause = unavailable_cause(exc)
            if cause is not None:
                raise Unavailable(cause) from exc
            raise
        now_ms = int(time.time() * 1000)
        items = []
        for position, s in enumerate(result.items, 1):
            entry = {
                "item_id": s.item_id,
                "position": position,
                **({"score": s.score} if s.score is not None else {}),
                "fields": self._fields(s.fields),
                **({"reasons": s.reasons} if s.reasons is not None else {}),
            }
            if teams is not None:
                entry["team"] = teams[s.item_id]
                entry["model_version"] = versions[s.item_id]
            items.append(entry)
        arm_label = counted.label(unit) if counted is not None and unit is not None else None
        self._remember(
            request_id,
            _Remembered(
                user,
                counted.experiment_id if counted is not None else None,
                {s.item_id: (p, labels[s.item_id], versions[s.item_id]) for p, s in enumerate(result.items, 1)},
                arm_label,
                model_version,
            ),
        )
        if user is not None and self.writer is not None:
            self._log(request_id, str(user), result, labels, versions, results, teams, now_ms)
        return {
            "request_id": request_id,
            "experiment": counted.experiment_id if counted is not None else None,
            "arm": unit,
            "model_version": model_version,
            "ranked_by": ranked_by,
            "path": result.path,
            "cold_start": result.cold_start,
            "items": items,
            "timings_ms": {**result.timings_ms, "total": round((time.perf_counter() - started) * 1000, 2)},
        }

    def _interleave(
        self, exp: Experiment, k: int, retrieve: dict[str, Any], request_id: str, reasons: bool = False
    ) -> tuple[EngineResult, dict[str, str], dict[str, EngineResult]]:
        a, b = exp.arms
        engines = {a.name: self.arm_engine(a), b.name: self.arm_engine(b)}

        def run_b() -> EngineResult:
            return engines[b.name].run(k=k, reasons=reasons, **retrieve)

        # The copied context carries the request's deadline into the pool's thread.
        future = self._pool.submit(contextvars.copy_context().run, run_b)
        results = {a.name: engines[a.name].run(k=k, reasons=reasons, **retrieve)}
        results[b.name] = future.result()
        merged = team_draft({name: [s.item_id for s in r.items] for name, r in results.items()}, k, seed=request_id)
        by_id = {s.item_id: s for r in reversed(list(results.values())) for s in r.items}
        first = results[a.name]
        timings = {f"{name}.{key}": v for name, r in results.items() for key, v in r.timings_ms.items()}
        combined = EngineResult(
            first.model_version,
            first.ranked_by,
            first.path,
            first.cold_start,
            [by_id[i] for i, _ in merged],
            None,
            timings,
        )
        return combined, dict(merged), results

    def _fields(self, source: Mapping[str, Any] | None) -> dict[str, Any]:
        source = source or {}
        if self.config.item_fields is None:
            return {k: v for k, v in source.items() if k != "embedding"}
        return {k: source[k] for k in self.config.item_fields if k in source}

    def _remember(self, request_id: str, entry: _Remembered) -> None:
        with self._lock:
            self._requests[request_id] = entry
            while len(self._requests) > self.config.remember_requests:
                self._requests.popitem(last=False)

    def _log(
        self,
        request_id: str,
        user: str,
        result: EngineResult,
        labels: Mapping[str, str | None],
        versions: Mapping[str, str],
        results: Mapping[str | None, EngineResult],
        teams: Mapping[str, str] | None,
        now_ms: int,
    ) -> None:
        actions: list[dict[str, Any]] = []
        events_index, log_index = self.settings.index("events"), self.settings.index("feature-log")
        for position, s in enumerate(result.items, 1):
            if self.config.log_exposures:
                actions.append(
                    impression_action(
                        events_index,
                        user=user,
                        item_id=s.item_id,
                        request_id=request_id,
                        position=position,
                        model_version=versions[s.item_id],
                        now_ms=now_ms,
                        arm=labels.get(s.item_id),
                    )
                )
            source = results[teams[s.item_id]] if teams is not None else result
            if self.config.log_features and s.features is not None and source.spec is not None:
                actions.append(
                    feature_log_action(
                        log_index,
                        request_id=request_id,
                        user=user,
                        item_id=s.item_id,
                        position=position,
                        now_ms=now_ms,
                        model_version=source.model_version,
                        spec=source.spec,
                        path=source.path,
                        score=s.score,
                        features=s.features,
                    )
                )
        if actions and self.writer is not None:
            self.writer.put(actions)

    # --- events ------------------------------------------------------------------------------

    def record_events(self, events: Sequence[Mapping[str, Any]], *, deadline_at: float | None = None) -> dict[str, Any]:
        """Validate, attribute and store a batch of events; update the users' histories and profiles.

        Each event is ``{user, item, type, timestamp?, value?, request_id?, position?}``
        (timestamp: ISO 8601 or epoch; default now). An event citing a request id this service
        served gets that request's arm, model version and the item's position, provided the
        request was served to the event's user and a ``position`` given is where it showed the
        item; otherwise it is stored without request id, position, arm and model version, and
        ``warnings`` says why.

        Returns:
            ``{accepted, duplicates, attributed, rejected: [{index, field, reason, detail}], warnings}``.

        Events without a timestamp get the time the service received them plus their position in
        the batch in milliseconds (so two identical ones in a batch stay two, and a retry of such an
        event is a new event: send timestamps where retries must be idempotent). Ids longer than
        512 UTF-8 bytes, timestamps and ratings outside ``config.event_bounds`` are rejected
        (:func:`vecrank.ingest.events.parse_event`, the rule ingest applies).

        Raises:
            Unavailable: Elasticsearch is down, or did not answer within ``events_budget_s``
                (events may have been stored; a retry is safe: they come back as duplicates).
        """
        try:
            return self.within(deadline_at, self.config.events_budget_s, self._record_events, events)
        except Exception as exc:
            cause = unavailable_cause(exc)
            if cause is not None:
                raise Unavailable(cause) from exc
            raise

    def _record_events(self, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        types = self.config.event_types
        now_ms = int(time.time() * 1000)
        rejected: list[dict[str, Any]] = []
        docs: list[tuple[int, dict[str, Any]]] = []
        for index, raw in enumerate(events):
            data = {k: v for k, v in raw.items() if v is not None}
            # The receipt time plus the position in the batch (ms): two identical events sent
            # without timestamps in one batch are two events, not one event id twice.
            data.setdefault("timestamp", now_ms + index)
            parsed = parse_event(
                Record("request", index, data), event_types=types, bounds=self.config.event_bounds, now_ms=now_ms
            )
            if isinstance(parsed, BadRecord):
                rejected.append(
                    {"index": index, "field": parsed.field, "reason": parsed.reason, "detail": parsed.detail}
                )
            else:
                docs.append((index, parsed))
        attributed, warnings = self._attribute(docs)
        unknown = self._unknown_items({d["item_id"] for _, d in docs})
        kept = []
        for index, doc in docs:
            if doc["item_id"] in unknown:
                rejected.append(
                    {
                        "index": index,
                        "field": "item",
                        "reason": "unknown item",
                        "detail": f"item {doc['item_id']!r} is not in {self.settings.index('items')}",
                    }
                )
            else:
                kept.append((index, doc))
        accepted = duplicates = 0
        created: list[dict[str, Any]] = []
        repeated: list[dict[str, Any]] = []
        if kept:
            events_index = ensure_events_index(self.client, self.settings)
            actions = [
                (
                    {
                        "_op_type": "create",
                        "_index": events_index,
                        "_id": d["event_id"],
                        "_source": {**d, "ingested_at": now_ms},
                    },
                    (i, d),
                )
                for i, d in kept
            ]
            for outcome in bulk_with_retries(self.client, actions, max_retries=1, initial_backoff=0.2, max_backoff=1.0):
                i, d = outcome.origin
                if outcome.ok:
                    accepted += 1
                    created.append(d)
                elif outcome.status == 409:
                    duplicates += 1
                    repeated.append(d)
                elif outcome.status == "N/A" or outcome.status in RETRYABLE_STATUS:
                    raise Unavailable(f"Elasticsearch did not store the events: {outcome.reason}")
                else:
                    rejected.append({"index": i, "field": None, "reason": outcome.reason, "detail": outcome.detail})
        if created or repeated:
            # ingest's path: merge what is new, rebuild the users of what was already stored (a
            # retry whose first attempt may have stopped before its users), then their states.
            try:
                apply_to_users(self.client, self.settings, created, repeated, refresh_states=refresh_profiles)
            except Unavailable:  # 503: a retry finds the events stored and rebuilds their users
                raise
            except VecrankError as exc:
                warnings.append(f"events stored, but users not updated: {exc}")
                log.warning("events stored, but users not updated: %s", exc)
        rejected.sort(key=lambda r: r["index"])
        return {
            "accepted": accepted,
            "duplicates": duplicates,
            "attributed": sum(1 for d in created if d.get("event_id") in attributed),
            "rejected": rejected,
            "warnings": warnings,
        }

    def _attribute(self, docs: list[tuple[int, dict[str, Any]]]) -> tuple[set[str], list[str]]:
        """Stamp events citing a served request with its arm, model version and position.

        Returns the event ids stamped and one warning per event refused attribution: one citing a
        request that was served to another user (or to no user), or giving a ``position`` that is
        not where that request showed the item. Those are stored without request id, position, arm
        and model version, so that no report counts them for the request they cite. Requests not in
        memory are looked up among the stored impressions; a request id found nowhere is kept as
        sent, unattributed (its impressions may still be on their way from another worker).
        """
        citing = [(i, d) for i, d in docs if d.get("request_id")]
        if not citing:
            return set(), []
        with self._lock:
            known = {d["request_id"]: self._requests.get(d["request_id"]) for _, d in citing}
        missing = sorted({rid for rid, entry in known.items() if entry is None})
        if missing:
            known.update(self._stored_requests(missing))
        stamped: set[str] = set()
        warnings: list[str] = []
        for index, d in citing:
            rid = d["request_id"]
            entry = known.get(rid)
            if entry is None:
                continue
            shown = entry.items.get(d["item_id"])
            served_to = normalise_id(entry.user)[0] if entry.user is not None else None
            problem = None
            if served_to != d["user_id"]:
                problem = f"request {rid!r} was not served to user {d['user_id']!r}"
            elif d.get("position") is not None and shown is None:
                problem = f"request {rid!r} did not show item {d['item_id']!r}, so position {d['position']} is not its"
            elif d.get("position") is not None and shown is not None and shown[0] != d["position"]:
                problem = (
                    f"position {d['position']} is not where request {rid!r} showed item {d['item_id']!r} "
                    f"({shown[0]})"
                )
            if problem is not None:
                for name in ("request_id", "position", "arm", "model_version"):
                    d.pop(name, None)
                warnings.append(f"event {index}: {problem}; stored without attribution")
                continue
            if shown is not None:
                position, label, version = shown
                d.setdefault("position", position)
            else:  # an event on something the request did not show: the request's own arm
                label, version = entry.arm_label, entry.model_version
            if label:
                d["arm"] = label
            d["model_version"] = version
            stamped.add(d["event_id"])
        if warnings:
            log.warning("%d event(s) refused attribution, e.g. %s", len(warnings), warnings[0])
        return stamped, warnings

    def _stored_requests(self, request_ids: list[str]) -> dict[str, _Remembered]:
        index = self.settings.index("events")
        if not self.client.indices.exists(index=index):
            return {}
        hits = self.client.search(
            index=index,
            size=min(10_000, 100 * len(request_ids)),
            query={"bool": {"filter": [{"terms": {"request_id": request_ids}}, {"term": {"type": "impression"}}]}},
            source_includes=["request_id", "user_id", "item_id", "position", "arm", "model_version"],
        )
        out: dict[str, _Remembered] = {}
        labels: dict[str, set[str | None]] = {}
        for h in hits["hits"]["hits"]:
            s = h["_source"]
            entry = out.setdefault(
                s["request_id"], _Remembered(s.get("user_id"), None, {}, None, s.get("model_version"))
            )
            entry.items[s["item_id"]] = (s.get("position"), s.get("arm"), s.get("model_version"))
            labels.setdefault(s["request_id"], set()).add(s.get("arm"))
        for rid, entry in out.items():  # one arm for the whole request (A/B), else per item only
            if len(labels[rid]) == 1:
                entry.arm_label = next(iter(labels[rid]))
        return out

    def _unknown_items(self, ids: set[str]) -> set[str]:
        with self._lock:
            todo = sorted(i for i in ids if i not in self._known_items)
        if not todo:
            return set()
        docs = self.client.mget(index=self.settings.index("items"), ids=todo, source=False)["docs"]
        found = {d["_id"] for d in docs if d.get("found")}
        with self._lock:
            for i in found:
                self._known_items[i] = None
            while len(self._known_items) > 1_000_000:
                self._known_items.popitem(last=False)
        return set(todo) - found

    # --- health ------------------------------------------------------------------------------

    def health(self, budget_s: float = 0.8) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): the cluster's answer, the running experiment, the default ranker, the
        items index served and its text model; every Elasticsearch call of it within ``budget_s``
        together."""
        with deadline(time.monotonic() + budget_s):
            return self._health()

    def _health(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {"version": __version__, "uptime_s": round(time.time() - self.started, 1)}
        ok = True
        try:
            h = self.client.cluster.health()
            body["elasticsearch"] = {"status": h["status"], "nodes": h["number_of_nodes"]}
            ok = h["status"] != "red"
        except Exception as exc:
            cause = unavailable_cause(exc) or f"{type(exc).__name__}"
            body["elasticsearch"] = {"status": "unreachable", "error": cause}
            ok = False
        if ok:
            try:
                exp = self.experiment()
                body["experiment"] = exp.summary() if exp else None
                body["default_model"] = self.default_engine().version
                body["items"] = self.live_items().to_dict()
            except Exception as exc:
                body["error"] = unavailable_cause(exc) or f"{type(exc).__name__}: {exc}"[:300]
                ok = False
        if self.writer is not None:
            body["writer"] = self.writer.stats()
        body["status"] = "ok" if ok else "unavailable"
        return ok, body

    def warm_up(self) -> None:
        """Load what the first requests would otherwise wait for; failures are only logged."""
        try:
            exp = self.experiment()
            self.default_engine()
            if exp is not None:
                for arm in exp.arms:
                    self.arm_engine(arm)
            engine = self.default_engine()
            _ = engine.recommender.field_types  # the live index's mapping
            self.embedder.encode(["warm up"], show_progress_bar=False)
        except Exception as exc:
            log.warning(
                "warm-up incomplete (%s); the first requests will load what is missing",
                unavailable_cause(exc) or f"{type(exc).__name__}: {exc}",
            )
