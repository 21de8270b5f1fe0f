"""The HTTP API (FastAPI; the OpenAPI spec is at ``/openapi.json``, interactive docs at ``/docs``).

* ``GET /recommendations?user=42&query=space&k=10&filter=genres=Comedy&filter=year>=1990&context=31``
  and ``POST /recommendations`` with ``{"user", "query", "filters", "k", "context_items"}``;
* ``POST /events`` with ``{"events": [{"user", "item", "type", "timestamp"?, "value"?, "request_id"?,
  "position"?}, ...]}``, of the event types the service was given (``ServeConfig.event_types``,
  ``vecrank serve --event-type``, as ``vecrank ingest events`` takes them; the spec lists them);
* ``GET /health``;
* ``GET /``: the search page (``static/index.html``, its script and style under ``/static/``),
  which calls the API above.

Every response carries ``X-Request-Id`` (and ``request_id`` in its JSON body); recommendations
also carry the experiment arm and the model version (``X-Vecrank-Arm``, ``X-Vecrank-Model``, and
in the body). Errors are ``{"error": {"status", "message", "details"}, "request_id"}``: 400 for a
malformed JSON body, 422 for wrong types, out-of-range values, ids over 512 UTF-8 bytes, unknown
fields or filters and filter values that do not fit their field's type, 413 for a body over
:data:`MAX_BODY_BYTES` (counted as it is read, chunked bodies too), 503 with ``Retry-After``
while Elasticsearch cannot answer, when a request's time budget ran out before it answered, or
when the worker already holds its ``max_in_flight`` requests; 500 for an unexpected error (its
traceback logged once) and for a service that is not set up (no items index...: the message
says what is missing).

Bounds: each /recommendations and /events request is admitted only while the worker holds
fewer than ``ServeConfig.max_in_flight`` of them (else an immediate 503, ``Retry-After: 1``) and
runs within its budget (``request_budget_s``, ``events_budget_s``, from admission: see
:mod:`vecrank.serve.deadline`). ``/health`` is an async endpoint whose check runs on two threads
of its own, never behind recommendations, and answers within :data:`HEALTH_TIMEOUT_S` whatever
Elasticsearch does. JSON bodies are parsed on the event loop, which the body limit bounds to a
few tens of milliseconds per request.

API keys (:mod:`vecrank.serve.auth`): every path but ``/health``, ``/``, ``/static/*`` and the
OpenAPI docs needs ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``): 401 with
``WWW-Authenticate: Bearer`` without a live key, 403 when the key lacks the path's scope
(``/recommendations``: ``recommend``, ``/events``: ``events``; ``admin`` has every scope), 429
with ``Retry-After`` past the key's token bucket. ``create_app(auth=False)`` turns this off
(``vecrank serve --no-auth``, which only a loopback host may use).
"""

from __future__ import annotations

import gc
import html
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import orjson
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from vecrank import __version__
from vecrank.errors import VecrankError
from vecrank.ingest.events import EventTypes
from vecrank.rank.queries import RequestError, parse_filter_expressions
from vecrank.serve.auth import ApiKey, ApiKeyStore, KeyCache, RateLimiter, parse_key
from vecrank.serve.deadline import unavailable_cause
from vecrank.serve.schemas import (
    ErrorResponse,
    EventsRequest,
    EventsResponse,
    RangeFilter,
    RecommendRequest,
    RecommendResponse,
    events_request_model,
    id_problem,
)
from vecrank.serve.service import RecommendService, ServeConfig
from vecrank.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
#: /health answers within this many seconds, whatever Elasticsearch does.
HEALTH_TIMEOUT_S = 0.9
_HEALTH_THREADS = 2
_KEY_THREADS = 4
STATIC_DIR = Path(__file__).with_name("static")
# The page loads only its own script and style and talks only to this origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_GET_PARAMS = {"user", "query", "k", "filter", "context", "reasons"}
# The scope each protected path needs; any other protected path takes a key of any scope.
SCOPE_OF_PATH = {"/recommendations": "recommend", "/events": "events"}
_PAGE_KEY_META = '<meta name="vecrank-api-key" content="">'
_REALM = 'Bearer realm="vecrank"'


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def _request_id(request: Request) -> str:
    return request.scope.setdefault("state", {}).setdefault("request_id", uuid.uuid4().hex)


def _error(
    request: Request, status: int, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> Response:
    rid = _request_id(request)
    body = {"error": {"status": status, "message": message, "details": details}, "request_id": rid}
    return _json(body, status, {"X-Request-Id": rid, **(headers or {})})


class _OrjsonRequest(Request):
    """A request whose JSON body is parsed by orjson, not the standard library's json.

    Parsing stays on the event loop (a worker thread would not free it: both parsers hold the
    GIL), so its cost is what bounds a stall there: the worst body under :data:`MAX_BODY_BYTES`
    (one object of some 60,000 keys) takes about 10 ms with orjson against 25 ms with json.
    orjson's :class:`orjson.JSONDecodeError` is a :class:`json.JSONDecodeError`, so FastAPI
    answers a malformed body as before (400); orjson also refuses what JSON does not allow
    (``NaN``, ``Infinity``, invalid UTF-8).
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class _OrjsonRoute(APIRoute):
    """Routes that hand their endpoint an :class:`_OrjsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


class _RequestIds:
    """ASGI middleware, the outermost: a request id for every request (``X-Request-Id``), the
    body size limit, and the last word on errors.

    The limit is checked on ``Content-Length`` and again on the bytes received, so a chunked
    body is refused (413) once it passes :data:`MAX_BODY_BYTES`, not read whole. An exception
    no handler took is answered here (:func:`error_answer`) and logged once, rather than by
    Starlette's error middleware, which logs it and re-raises it for the server to log again.
    Pure ASGI rather than ``BaseHTTPMiddleware``, which costs a task and a stream per request.
    """

    def __init__(self, app: Any, *, retry_after: Callable[[], dict[str, str]]):
        self.app, self.retry_after = app, retry_after

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope.setdefault("state", {}).setdefault("request_id", uuid.uuid4().hex)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await _send_error(send, rid, 413, f"request body over {MAX_BODY_BYTES} bytes")
            return
        received = 0
        started = False

        async def receive_limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    # FastAPI passes an HTTPException raised while reading the body to its handler.
                    raise StarletteHTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
            return message

        async def send_with_id(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers") or [])
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive_limited, send_with_id)
        except Exception as exc:
            if started:  # too late for an answer of ours; the server logs it
                raise
            status, message, headers = error_answer(
                exc, self.retry_after, where=f"{scope.get('method')} " f"{scope.get('path')}"
            )
            await _send_error(send, rid, status, message, headers)


def error_answer(
    exc: BaseException, retry_after: Callable[[], dict[str, str]], *, where: str = "request"
) -> tuple[int, str, dict[str, str] | None]:
    """(status, message, headers) for an exception that reached the top, logged at most once.

    422 for a bad argument; 503 with ``Retry-After`` for what passes (Elasticsearch down, busy,
    slower than the request's budget); 500 with the error's own message for a service that is
    not set up (a :class:`~vecrank.errors.VecrankError`: no items index, a broken model...),
    which no retry mends; 500 for anything else, its traceback logged here, once.
    """
    if isinstance(exc, RequestError):
        return 422, str(exc), None
    cause = unavailable_cause(exc)
    if cause is not None:
        return 503, f"{cause}; retry later", retry_after()
    if isinstance(exc, VecrankError):
        log.warning("%s failed: %s", where, exc)
        return 500, f"the service cannot answer this: {exc}", None
    log.error("unexpected error on %s", where, exc_info=exc)
    return 500, f"internal error ({type(exc).__name__}); see the service log", None


class _Admission:
    """ASGI middleware: at most ``limit()`` requests to the working paths at once in this worker
    (running or waiting for a thread), an immediate 503 past it; each admitted request gets its
    deadline (``scope["state"]["deadline"]``, ``time.monotonic()``) from ``budget(path)``.

    The count lives on the event loop, which alone touches it: no lock.
    """

    def __init__(self, app: Any, *, paths: frozenset[str], limit: Callable[[], int], budget: Callable[[str], float]):
        self.app, self.paths, self.limit, self.budget = app, paths, limit, budget
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        limit = self.limit()
        if self.in_flight >= limit:
            await _send_error(
                send,
                state.setdefault("request_id", uuid.uuid4().hex),
                503,
                f"the service is at its limit of {limit} requests in progress; retry later",
                {"Retry-After": "1"},
            )
            return
        state["deadline"] = time.monotonic() + self.budget(scope["path"])
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _send_error(send: Any, rid: str, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
    """An error response in the API's shape, straight from ASGI middleware."""
    body = orjson.dumps({"error": {"status": status, "message": message, "details": None}, "request_id": rid})
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-request-id", rid.encode()),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def presented_key(headers: Mapping[bytes, bytes]) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``X-API-Key: <key>``."""
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    header = headers.get(b"x-api-key")
    return (header.decode("latin-1").strip() or None) if header else None


class _Guard:
    """ASGI middleware: the API key, its scope and its rate limit, before routing or reading a body.

    Public paths pass untouched. A key is looked up in the :class:`KeyCache` first; a miss reads
    ``<prefix>-apikeys`` in a worker thread. Nothing here logs a presented key.
    """

    def __init__(
        self,
        app: Any,
        *,
        public: Callable[[str], bool],
        keys: Callable[[], KeyCache],
        limiter: Callable[[], RateLimiter],
        retry_after: Callable[[], dict[str, str]],
        lookup_budget: Callable[[], float] = lambda: 1.0,
        within: Callable[..., Any] | None = None,
    ):
        self.app, self.public, self.keys, self.limiter, self.retry_after = app, public, keys, limiter, retry_after
        self.lookup_budget, self.within = lookup_budget, within
        # Key reads have threads of their own: they never wait behind recommendations.
        self.threads = anyio.CapacityLimiter(_KEY_THREADS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.public(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        rid = state.setdefault("request_id", uuid.uuid4().hex)
        token = presented_key(dict(scope.get("headers") or []))
        if token is None:
            await _send_error(
                send,
                rid,
                401,
                "an API key is required: send 'Authorization: Bearer <key>' (or "
                "'X-API-Key: <key>'); `vecrank apikey create` makes one",
                {"WWW-Authenticate": _REALM},
            )
            return
        try:
            cache = self.keys()
            cached = cache.cached(token)
            key: ApiKey | None
            if cached is KeyCache.MISS:
                budget, within = self.lookup_budget(), self.within
                read: Callable[[str], ApiKey | None] = (
                    cache.authenticate if within is None else lambda t: within(None, budget, cache.authenticate, t)
                )
                with anyio.fail_after(budget + 0.1):
                    key = await anyio.to_thread.run_sync(read, token, limiter=self.threads, abandon_on_cancel=True)
            else:
                key = cached
        except TimeoutError:
            await _send_error(
                send, rid, 503, "the API key store did not answer in time; retry later", self.retry_after()
            )
            return
        except Exception as exc:
            status, message, headers = error_answer(exc, self.retry_after, where="the API key check")
            await _send_error(send, rid, status, message, headers)
            return
        if key is None:
            await _send_error(
                send,
                rid,
                401,
                "invalid API key: unknown, wrong or revoked",
                {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
            return
        needed = SCOPE_OF_PATH.get(scope["path"])
        if needed is not None and not key.allows(needed):
            await _send_error(
                send,
                rid,
                403,
                f"API key {key.key_id} lacks the {needed!r} scope that {scope['path']} "
                f"needs (it has {', '.join(key.scopes)})",
                {"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{needed}"'},
            )
            return
        limiter = self.limiter()
        wait = limiter.take(key.key_id)
        if wait > 0:
            after = RateLimiter.retry_after(wait)
            await _send_error(
                send,
                rid,
                429,
                f"rate limit of API key {key.key_id}: {limiter.rate:g} requests per "
                f"second, bursts of {limiter.burst}; retry in {after} s",
                {"Retry-After": after},
            )
            return
        state["api_key_id"] = key.key_id
        await self.app(scope, receive, send)


def page_html(page_key: str | None = None) -> str:
    """The search page's ``index.html``, with ``page_key`` in its ``vecrank-api-key`` meta tag."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if page_key is None:
        return text
    if _PAGE_KEY_META not in text:
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} lacks {_PAGE_KEY_META}, where the page key goes")
    return text.replace(_PAGE_KEY_META, f'<meta name="vecrank-api-key" content="{html.escape(page_key, quote=True)}">')


def _validation_message(errors: list[dict[str, Any]]) -> tuple[int, str]:
    for e in errors:
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            return 400, f"malformed JSON body: {ctx.get('error', e.get('msg'))}"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if first.get("type") == "missing" and loc == "body":
        return 422, "a JSON body is required"
    if first.get("type") == "extra_forbidden":
        return 422, f"unknown field {loc!r}"
    return 422, f"{loc}: {first.get('msg')}"


def create_app(
    service: RecommendService | None = None,
    *,
    settings: Settings | None = None,
    config: ServeConfig | None = None,
    threads: int = 8,
    warm_up: bool = True,
    auth: bool = True,
    page_key: str | None = None,
) -> FastAPI:
    """The FastAPI application over ``service`` (or a new one for ``settings`` and ``config``).

    Args:
        service: an existing service (tests share one); else built at startup.
        settings: the cluster and index prefix, when no service is given.
        config: service settings, when no service is given.
        threads: worker threads for requests (each holds at most one Elasticsearch connection);
            ``config.max_in_flight`` defaults to twice this.
        warm_up: load the models and the query embedder before accepting requests.
        auth: require API keys (see the module docstring). False serves anyone who reaches the
            port: ``vecrank serve --no-auth`` allows it on a loopback host only.
        page_key: an API key put in the search page's ``vecrank-api-key`` meta tag, so that the
            page's calls carry it: anyone who loads the page can read and use it.

    Raises:
        ValueError: ``page_key`` is not of the form ``vrk_<id>_<secret>``.
    """
    if page_key is not None and parse_key(page_key) is None:
        raise ValueError("page_key is not an API key of the form vrk_<id>_<secret>")
    if page_key is not None and not auth:
        log.warning("the page key is not put in the page: the service runs without API keys")
        page_key = None
    rt = _Runtime(service, threads)
    page = page_html(page_key)
    app = FastAPI(
        title="vecrank",
        summary="Personalized recommendations on Elasticsearch, with A/B and " "interleaving experiments.",
        version=_version(),
        lifespan=_lifespan(rt, settings, config, warm_up=warm_up, auth=auth, page_key=page_key),
        responses=_ERROR_RESPONSES,
    )
    app.router.route_class = _OrjsonRoute  # before any route is added
    _add_middleware(app, rt, auth=auth)
    _add_error_handlers(app)
    _add_recommendation_routes(app, rt, auth=auth)
    served = service.config if isinstance(service, RecommendService) else config or ServeConfig()
    _add_events_route(app, rt, served.event_types, auth=auth)
    _add_page_routes(app, page, page_key_given=page_key is not None)
    _add_health_route(app, rt)
    return app


class _Runtime:
    """What one app's routes, middleware and startup read while it runs: the service (made at
    startup unless given), and the key cache and rate limiter made from its config on first use."""

    def __init__(self, service: RecommendService | None, threads: int):
        self.service, self.threads = service, threads
        self._keys: KeyCache | None = None
        self._limiter: RateLimiter | None = None

    def svc(self) -> RecommendService:
        if self.service is None:
            raise KeyError("service")
        return self.service

    def retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.svc().config.retry_after_s)}

    def keys(self) -> KeyCache:
        if self._keys is None:
            svc = self.svc()
            self._keys = KeyCache(ApiKeyStore(svc.client, svc.settings), ttl_s=svc.config.key_cache_s)
        return self._keys

    def limiter(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = RateLimiter(self.svc().config.rate_limit_rps, self.svc().config.rate_limit_burst)
        return self._limiter

    def budget(self, path: str) -> float:
        return self.svc().config.events_budget_s if path == "/events" else self.svc().config.request_budget_s

    def in_flight_limit(self) -> int:
        return self.svc().config.max_in_flight or 2 * self.threads

    def check_page_key(self, token: str) -> None:
        """Say at startup what the page key (``token``) can do, since everyone who loads the page has it."""
        try:
            key = self.keys().authenticate(token)
        except Exception as exc:
            log.warning("cannot check the page key now (%s)", unavailable_cause(exc) or type(exc).__name__)
            return
        if key is None:
            log.warning("the page key is not a live API key: the page's calls will get 401")
        elif key.allows("admin"):
            log.warning(
                "the page key %s has the admin scope, and anyone who loads the page can read it: give the "
                "page a key of its own (`vecrank apikey create --name page --scope recommend --scope events`)",
                key.key_id,
            )
        elif not key.allows("recommend"):
            log.warning("the page key %s lacks the recommend scope: the page's searches will get 403", key.key_id)
        elif not key.allows("events"):
            log.info("the page key %s lacks the events scope: clicks on the page will get 403", key.key_id)
        else:
            log.info(
                "the page key %s can post events: anyone who loads the page can post events for any user", key.key_id
            )


def _lifespan(
    rt: _Runtime,
    settings: Settings | None,
    config: ServeConfig | None,
    *,
    warm_up: bool,
    auth: bool,
    page_key: str | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup (the threads, the service made and warmed up, the page key checked) and shutdown
    (a service the app made is closed)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = rt.threads
        owned = rt.service is None
        if owned:
            if settings is None:
                raise ValueError("create_app needs a service or settings")
            rt.service = RecommendService(settings, config)
        if warm_up:
            await anyio.to_thread.run_sync(rt.svc().warm_up)
        if page_key is not None:
            await anyio.to_thread.run_sync(rt.check_page_key, page_key)
        # Everything loaded so far (the embedder, torch, the model: about 500,000 objects) lives as
        # long as the process; frozen, it leaves the collector's full passes, which took 180 ms each
        # with every request thread stopped (the p99 of a loaded service), and take under 1 ms now.
        gc.collect()
        gc.freeze()
        if not auth:
            log.warning(
                "API keys are off (--no-auth): anyone who reaches the port can read recommendations "
                "and post events for any user"
            )
        log.info("vecrank serve ready")
        try:
            yield
        finally:
            if owned:
                await anyio.to_thread.run_sync(rt.svc().close)

    return lifespan


def _add_middleware(app: FastAPI, rt: _Runtime, *, auth: bool) -> None:
    """Admission, the key check (with ``auth``) and request ids, innermost first."""
    public = {"/", "/health", app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    # The innermost first: admission after the key check, so a flood without keys takes no slot.
    app.add_middleware(_Admission, paths=frozenset(SCOPE_OF_PATH), limit=rt.in_flight_limit, budget=rt.budget)
    if auth:
        app.add_middleware(
            _Guard,
            public=lambda path: path in public or path.startswith("/static/"),
            keys=rt.keys,
            limiter=rt.limiter,
            retry_after=rt.retry_after,
            lookup_budget=lambda: rt.svc().config.request_budget_s,
            within=lambda *a: rt.svc().within(*a),
        )
    # The outermost: every answer, the guard's too, has a request id.
    app.add_middleware(_RequestIds, retry_after=rt.retry_after)
    if auth:
        _declare_security(app)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        status, message = _validation_message(errors)
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")} for e in errors[:20]
        ]
        return _error(request, status, message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    # Other exceptions reach _RequestIds, which answers them (error_answer) and logs them once.


def _deadline_of(request: Request) -> float | None:
    return request.scope.get("state", {}).get("deadline")


def _add_recommendation_routes(app: FastAPI, rt: _Runtime, *, auth: bool) -> None:
    """``GET /recommendations`` (query parameters) and ``POST /recommendations`` (a JSON body)."""

    def recommend(request: Request, **kwargs: Any) -> Response:
        try:
            body = rt.svc().recommend(request_id=_request_id(request), deadline_at=_deadline_of(request), **kwargs)
        except RequestError as exc:
            return _error(request, 422, str(exc))
        headers = {
            "X-Vecrank-Arm": body["arm"] or "none",
            "X-Vecrank-Model": body["model_version"],
            "X-Request-Id": body["request_id"],
        }
        return _json(body, 200, headers)

    @app.get(
        "/recommendations",
        response_model=RecommendResponse,
        summary="Recommendations for a user and/or query",
        **_security("recommend", auth),
    )
    def get_recommendations(
        request: Request,
        user: Annotated[str | None, Query(min_length=1)] = None,
        query: Annotated[str | None, Query(max_length=1000)] = None,
        k: Annotated[int, Query(description="how many items")] = 10,
        filter: Annotated[
            list[str],
            Query(max_length=32, description=("FIELD=VALUE (repeat for any of several values), FIELD>=V, FIELD<V...")),
        ] = [],  # noqa: B006
        context: Annotated[list[str], Query(max_length=50, description="item ids on screen")] = [],  # noqa: B006
        reasons: Annotated[bool, Query(description="each ranked item's top reasons")] = False,
    ) -> Response:
        unknown = sorted(set(request.query_params) - _GET_PARAMS)
        if unknown:
            return _error(
                request, 422, f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(_GET_PARAMS))}"
            )
        for name, values in (("user", [user] if user is not None else []), ("context", context)):
            for value in values:
                problem = id_problem(value)
                if problem is not None:
                    return _error(request, 422, f"{name}: {problem}")
        try:
            filters = parse_filter_expressions(filter)
        except RequestError as exc:
            return _error(request, 422, str(exc))
        return recommend(request, user=user, query=query, filters=filters, k=k, context_items=context, reasons=reasons)

    @app.post(
        "/recommendations",
        response_model=RecommendResponse,
        summary="Recommendations (JSON body)",
        **_security("recommend", auth),
    )
    def post_recommendations(request: Request, body: Annotated[RecommendRequest, Body()]) -> Response:
        filters = {name: v.to_filter() if isinstance(v, RangeFilter) else v for name, v in body.filters.items()}
        return recommend(
            request,
            user=body.user,
            query=body.query,
            filters=filters,
            k=body.k,
            context_items=body.context_items,
            reasons=body.reasons,
        )


def _add_events_route(app: FastAPI, rt: _Runtime, event_types: EventTypes, *, auth: bool) -> None:
    """``POST /events``, its body model listing ``event_types``."""

    def post_events(request: Request, body: EventsRequest) -> Response:
        limit = rt.svc().config.max_events
        if len(body.events) > limit:
            return _error(request, 413, f"at most {limit} events per request, not {len(body.events)}")
        result = rt.svc().record_events([e.model_dump() for e in body.events], deadline_at=_deadline_of(request))
        result["request_id"] = _request_id(request)
        status = 422 if result["rejected"] and not (result["accepted"] or result["duplicates"]) else 200
        if status == 422:
            first = result["rejected"][0]
            return _error(
                request,
                422,
                f"no event stored; event {first['index']}: {first['reason']}"
                + (f" ({first['detail']})" if first.get("detail") else ""),
                result["rejected"],
            )
        return _json(result, status)

    # FastAPI reads the body model from the annotation: this service's event types.
    post_events.__annotations__["body"] = Annotated[events_request_model(event_types), Body()]
    app.post("/events", response_model=EventsResponse, summary="Record a batch of events", **_security("events", auth))(
        post_events
    )


def _add_page_routes(app: FastAPI, page: str, *, page_key_given: bool) -> None:
    """The search page at ``/`` (not cached when it holds a key) and its files under ``/static``."""
    page_headers = {**_PAGE_HEADERS, "Cache-Control": "no-store"} if page_key_given else _PAGE_HEADERS

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(page, media_type="text/html", headers=page_headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _add_health_route(app: FastAPI, rt: _Runtime) -> None:
    health_threads = anyio.CapacityLimiter(_HEALTH_THREADS)

    @app.get(
        "/health",
        summary="Liveness and readiness: Elasticsearch, the experiment, the default model",
        responses={503: {"description": "not ready: Elasticsearch unreachable, red or slow (see Retry-After)"}},
    )
    async def health(request: Request) -> Response:
        # Async, on threads of its own: it never queues behind recommendations, and it answers
        # within HEALTH_TIMEOUT_S even when its check does not (the thread is left to finish
        # by its own deadline).
        try:
            with anyio.fail_after(HEALTH_TIMEOUT_S):
                ok, body = await anyio.to_thread.run_sync(
                    rt.svc().health, HEALTH_TIMEOUT_S - 0.15, limiter=health_threads, abandon_on_cancel=True
                )
        except TimeoutError:
            ok, body = (
                False,
                {
                    "status": "unavailable",
                    "elasticsearch": {
                        "status": "unknown",
                        "error": f"the health check did not finish within {HEALTH_TIMEOUT_S:g} s",
                    },
                },
            )
        body["request_id"] = _request_id(request)
        return _json(body, 200 if ok else 503, None if ok else rt.retry_after())


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed JSON body"},
    413: {"model": ErrorResponse, "description": f"request body over {MAX_BODY_BYTES} bytes, or too many events"},
    422: {"model": ErrorResponse, "description": "invalid request: the message names the field or parameter"},
    500: {
        "model": ErrorResponse,
        "description": "the service is not set up for this (the message says what is "
        "missing), or an unexpected error",
    },
    503: {
        "model": ErrorResponse,
        "description": "Elasticsearch unavailable or slower than the request's budget, or "
        "the worker at its limit of requests in progress; see Retry-After",
    },
}
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "no API key, or an unknown, wrong or revoked one " "(`WWW-Authenticate: Bearer`)",
    },
    403: {"model": ErrorResponse, "description": "the API key lacks the scope this path needs"},
    429: {"model": ErrorResponse, "description": "the API key's rate limit; see Retry-After"},
}


def _security(scope: str, auth: bool) -> dict[str, Any]:
    """A protected operation's 401/403/429 responses and security requirement: a bearer key or an
    ``X-API-Key`` with ``scope`` (OpenAPI 3.1 lets non-OAuth schemes list such roles)."""
    if not auth:
        return {}
    return {"responses": _AUTH_RESPONSES, "openapi_extra": {"security": [{"bearer": [scope]}, {"apiKey": [scope]}]}}


def _declare_security(app: FastAPI) -> None:
    """Add the two ways of presenting a key to the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI.openapi keeps it as app.openapi_schema too
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "vrk_<id>_<secret>",
                "description": "an API key from `vecrank apikey create`, as 'Authorization: Bearer <key>'",
            },
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "the same key in the X-API-Key header",
            },
        }
        return schema

    # FastAPI's documented way to extend the schema ("Extending OpenAPI" in its docs) replaces the method.
    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    return __version__


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` in worker processes: settings and config come from the
    ``VECRANK_SERVE_JSON`` variable that ``vecrank serve`` sets for its workers."""

    spec = json.loads(os.environ["VECRANK_SERVE_JSON"])
    settings = Settings.load(spec["overrides"])
    return create_app(
        settings=settings,
        config=ServeConfig.from_dict(spec["config"]),
        threads=spec["threads"],
        auth=spec.get("auth", True),
        page_key=spec.get("page_key"),
    )
