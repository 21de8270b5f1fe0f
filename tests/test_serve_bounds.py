"""The HTTP API's bounds against a real node: bad input is a 4xx naming the field (never a 500),
bodies are limited while they are read, ids are limited in bytes, events must be plausible, and
a slow Elasticsearch (a delaying TCP proxy in front of the test node) costs a request its budget,
not the service its health.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import socket
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_serve import REPO, Server

_spec = importlib.util.spec_from_file_location("slowproxy", REPO / "scripts" / "slowproxy.py")
slowproxy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slowproxy)
SlowProxy = slowproxy.SlowProxy

T0 = 1_600_000_000  # epoch seconds, 2020
EMOJI_USER = "\U0001f600" * 256  # 256 characters, 1,024 UTF-8 bytes


@pytest.fixture(scope="module")
def world(es, es_settings, tmp_path_factory):
    """Eight items with a keyword, an integer, a date and a boolean field; one user with a rating."""
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.rank.store import refresh_profiles

    prefix = f"vrb-{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(es_settings, index_prefix=prefix)
    tmp = tmp_path_factory.mktemp("bounds-world")
    words = ["dogs", "cats", "rockets", "bread", "ghosts", "tennis", "storms", "pirates"]
    items = [
        {
            "id": f"i{n}",
            "title": f"A story about {w}",
            "genre": "a" if n % 2 else "b",
            "year": 1990 + n,
            "added": f"2020-01-0{n + 1}",
            "free": n % 2 == 0,
        }
        for n, w in enumerate(words)
    ]
    (tmp / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    source = ItemSource(template="{title}", field_types={"year": "integer", "added": "date", "free": "boolean"})
    assert ingest_items(es, settings, tmp / "items.jsonl", source, embedder=Embedder()).written == 8
    (tmp / "events.jsonl").write_text(
        json.dumps({"user": "u1", "item": "i0", "type": "rating", "value": 5, "timestamp": T0}) + "\n"
    )
    assert (
        ingest_events(es, settings, tmp / "events.jsonl", progress=False, refresh_states=refresh_profiles).written == 1
    )
    yield settings, tmp
    names = list(es.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


@pytest.fixture(scope="module")
def service(world):
    from vecrank.serve import RecommendService, ServeConfig

    svc = RecommendService(world[0], ServeConfig(experiment_refresh_s=60, model_refresh_s=60))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def api(service):
    from vecrank.serve import create_app

    with Server(create_app(service, threads=4, auth=False)) as server:
        yield server


def _error(result, code, *fragments):
    status, headers, body = result
    assert status == code, (status, body)
    message = body["error"]["message"]
    assert all(f in message for f in fragments), message
    assert body["request_id"] == headers["x-request-id"]
    return headers, body


# --- every former 500 is a 4xx naming what is wrong ---------------------------------------------


@pytest.mark.parametrize(
    "method,path,body,fragments",
    [
        ("GET", "/recommendations?k=1&context=", None, ["context", "empty"]),
        ("GET", "/recommendations?k=1&filter=year>=abc", None, ["'year'", "'abc'", "whole number"]),
        ("GET", "/recommendations?k=1&filter=free=maybe", None, ["'free'", "true or false"]),
        ("GET", "/recommendations?k=1&filter=added>=yesterday", None, ["'added'", "not a date"]),
        ("GET", "/recommendations?k=1&filter=year=99999999999", None, ["'year'", "outside the range of integer"]),
        ("GET", f"/recommendations?k=1&user={urllib.parse.quote(EMOJI_USER)}", None, ["user", "1024 bytes"]),
        ("POST", "/recommendations", {"k": 1, "filters": {"year": "abc"}}, ["'year'", "whole number"]),
        ("POST", "/recommendations", {"k": 1, "filters": {"year": True}}, ["'year'", "whole number"]),
        ("POST", "/recommendations", {"k": 1, "filters": {"year": {"gte": "now"}}}, ["'year'", "'now'"]),
        (
            "POST",
            "/recommendations",
            {"k": 1, "filters": {"indexed_at": {"gte": "01/01/2020"}}},
            ["'indexed_at'", "not a date"],
        ),
        ("POST", "/recommendations", {"k": 1, "filters": {"genre": True}}, ["'genre'", "not text"]),
        ("POST", "/recommendations", {"k": 1, "user": EMOJI_USER}, ["user", "1024 bytes"]),
        ("POST", "/recommendations", {"k": 1, "context_items": ["i1", "x" * 600]}, ["context_items.1", "600 bytes"]),
    ],
)
def test_former_500s_are_422_naming_the_field(api, method, path, body, fragments):
    _error(api.call(method, path, body), 422, *fragments)


def test_filters_that_fit_their_types_still_work(api):
    status, _, body = api.call(
        "POST",
        "/recommendations",
        {
            "query": "a story",
            "k": 8,
            "filters": {
                "year": {"gte": "1992", "lt": 1996.0},
                "added": {"gte": "2020-01-02T00:00:00Z"},
                "free": "true",
            },
        },
    )
    assert status == 200, body
    assert sorted(it["item_id"] for it in body["items"]) == ["i2", "i4"]
    status, _, body = api.call("GET", "/recommendations?query=story&k=8&filter=free=false&filter=year<1994")
    assert status == 200 and sorted(it["item_id"] for it in body["items"]) == ["i1", "i3"], body


def _users_doc(es, settings, user):
    return es.options(ignore_status=404).get(index=settings.index("users"), id=user[:512]).body.get("found")


def _stored_for(es, settings, user):
    es.indices.refresh(index=settings.index("events"))
    return es.count(index=settings.index("events"), query={"term": {"user_id": user}})["count"]


def test_long_ids_are_refused_before_anything_is_stored(api, world, es):
    settings, _ = world
    for user in (EMOJI_USER, "u" * 600):
        _, body = _error(
            api.call("POST", "/events", {"events": [{"user": user, "item": "i1", "type": "click"}]}),
            422,
            "events.0.user",
            "bytes in UTF-8; at most 512",
        )
        assert _stored_for(es, settings, user) == 0 and not _users_doc(es, settings, user)
    _error(
        api.call("POST", "/events", {"events": [{"user": "u1", "item": "i" * 513, "type": "click"}]}),
        422,
        "events.0.item",
        "513 bytes",
    )


@pytest.mark.parametrize(
    "event,reason",
    [
        ({"timestamp": "9999-12-31T00:00:00Z"}, "implausible timestamp"),
        ({"timestamp": 253_402_000_000_000}, "implausible timestamp"),  # epoch ms in the year 9999
        ({"timestamp": "0001-01-01"}, "implausible timestamp"),
        ({"timestamp": -86_400}, "implausible timestamp"),
        ({"type": "rating", "value": 1000}, "implausible rating"),
        ({"type": "rating", "value": -5}, "implausible rating"),
    ],
)
def test_implausible_events_are_rejected_with_reasons(api, world, es, event, reason):
    settings, _ = world
    user = f"p-{uuid.uuid4().hex[:8]}"
    sent = {"user": user, "item": "i1", "type": "click", "timestamp": T0, **event}
    _, body = _error(api.call("POST", "/events", {"events": [sent]}), 422, "no event stored", reason)
    assert body["error"]["details"][0]["reason"] == reason
    assert _stored_for(es, settings, user) == 0


def test_plausible_events_are_stored_and_bounds_round_trip(api, world, es):
    from vecrank.ingest.events import EventBounds
    from vecrank.serve import ServeConfig

    settings, _ = world
    user = f"ok-{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    status, _, body = api.call(
        "POST",
        "/events",
        {
            "events": [
                {"user": user, "item": "i1", "type": "rating", "value": 0.5, "timestamp": now - 10},
                {"user": user, "item": "i2", "type": "rating", "value": 5, "timestamp": now + 3600},  # clocks drift
                {"user": user, "item": "i3", "type": "click", "timestamp": now + 3 * 86_400},
            ]
        },
    )
    assert status == 200 and body["accepted"] == 2, body
    assert [r["reason"] for r in body["rejected"]] == ["implausible timestamp"]
    assert _stored_for(es, settings, user) == 2
    config = ServeConfig(event_bounds=EventBounds(rating_range=(1, 10), max_future_s=0))
    assert ServeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="rating_range"):
        EventBounds(rating_range=(5, 1))


def test_ingest_refuses_the_same_rows(world, es, tmp_path):
    """`vecrank ingest events` and the service share parse_event's rule."""
    from vecrank.ingest.events import ingest_events
    from vecrank.rank.store import refresh_profiles

    settings, _ = world
    rows = [
        {"user": "v1", "item": "i1", "type": "rating", "value": 4.5, "timestamp": T0},
        {"user": "v1", "item": "i2", "type": "rating", "value": 1000, "timestamp": T0},
        {"user": "v1", "item": "i3", "type": "rating", "value": -5, "timestamp": T0},
        {"user": "v1", "item": "i4", "type": "click", "timestamp": "9999-01-01"},
        {"user": "v1", "item": "i5", "type": "click", "timestamp": "0001-01-01"},
        {"user": EMOJI_USER, "item": "i6", "type": "click", "timestamp": T0},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dead = tmp_path / "dead.jsonl"
    summary = ingest_events(es, settings, path, dead_letter_path=dead, progress=False, refresh_states=refresh_profiles)
    assert (summary.written, summary.failed) == (1, 5) and summary.reconciles()
    assert dict(summary.reasons) == {"implausible rating": 2, "implausible timestamp": 2, "bad user": 1}
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert any("at most 512" in (d.get("detail") or "") for d in letters)


# --- bodies --------------------------------------------------------------------------------------


def _chunked(port: int, total: int, *, finish: bool, chunk: int = 64 * 1024) -> tuple[int | None, int, float]:
    """POST ``total`` bytes of a JSON-ish body in chunks; returns (status, bytes sent, seconds to
    the answer). Without ``finish`` the body never ends: only a server that stops reading at its
    limit answers at all."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sent = 0
    try:
        sock.sendall(
            b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b'{"events": [' + b" " * (chunk - 12)
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
                piece = b" " * chunk
            if finish:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        except (TimeoutError, ConnectionResetError):
            pass
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
        return status, sent, time.monotonic() - started
    finally:
        sock.close()


def test_chunked_bodies_are_limited_while_read(api):
    from vecrank.serve.app import MAX_BODY_BYTES

    status, sent, _ = _chunked(api.port, 5_000_000, finish=True)
    assert status == 413
    # A body that never ends is answered too: the server stopped reading at the limit.
    status, sent, took = _chunked(api.port, 2 * MAX_BODY_BYTES, finish=False)
    assert status == 413 and took < 10, (status, took)
    big = json.dumps({"events": [{"user": "u1", "item": "i1", "type": "click"}], "pad": "x" * MAX_BODY_BYTES})
    _error(api.call("POST", "/events", raw=big.encode()), 413, "request body over")
    assert api.call("GET", "/health")[0] == 200  # and the service is fine


# --- errors ------------------------------------------------------------------------------------


def test_unexpected_errors_are_logged_once_and_permanent_ones_are_500(
    api, service, world, es_settings, caplog, monkeypatch
):
    from vecrank.serve import RecommendService, ServeConfig, create_app

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "recommend", broken)
    with caplog.at_level(logging.INFO):
        _error(api.call("GET", "/recommendations?k=1"), 500, "internal error (RuntimeError)")
        time.sleep(0.2)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "boom" in str(tracebacks[0].exc_info[1]), [r.getMessage() for r in caplog.records]
    monkeypatch.undo()
    # No items index is not something a retry mends: 500 with a message that says what is missing.
    empty = RecommendService(
        dataclasses.replace(es_settings, index_prefix=f"vrb-none-{uuid.uuid4().hex[:6]}"),
        ServeConfig(log_exposures=False, log_features=False),
    )
    try:
        with Server(create_app(empty, threads=2, auth=False, warm_up=False)) as bare:
            headers, body = _error(bare.call("GET", "/recommendations?query=dogs&k=1"), 500, "items")
            assert "retry-after" not in headers
    finally:
        empty.close()


def test_openapi_lists_every_status(api):
    from vecrank.serve import create_app

    _, _, spec = api.call("GET", "/openapi.json")
    for path, method in (("/recommendations", "get"), ("/recommendations", "post"), ("/events", "post")):
        assert {"400", "413", "422", "500", "503"} <= set(spec["paths"][path][method]["responses"]), path
    with_keys = create_app(object(), auth=True).openapi()  # the spec needs no service
    assert {"401", "403", "429", "503"} <= set(with_keys["paths"]["/events"]["post"]["responses"])


# --- a slow Elasticsearch ------------------------------------------------------------------------


def _timed(api, path):
    started = time.monotonic()
    status, headers, body = api.call("GET", path)
    return status, headers, body, time.monotonic() - started


def test_a_slow_elasticsearch_costs_requests_their_budget_not_the_health(world, es_settings):
    from vecrank.serve import RecommendService, ServeConfig, create_app

    settings, _ = world
    url = urllib.parse.urlsplit(settings.es_url)
    proxy = SlowProxy(url.hostname, url.port)
    slow = dataclasses.replace(settings, es_url=f"{url.scheme}://127.0.0.1:{proxy.port}")
    service = RecommendService(
        slow,
        ServeConfig(
            request_budget_s=1.0,
            max_in_flight=3,
            log_exposures=False,
            log_features=False,
            experiment_refresh_s=0.2,
            model_refresh_s=0.2,
        ),
    )
    try:
        with Server(create_app(service, threads=2, auth=False)) as api:
            status, _, body, _ = _timed(api, "/recommendations?query=dogs&k=3")
            assert status == 200, body
            proxy.delay = 3.0
            time.sleep(0.3)  # the cached experiment and model are due for a re-read
            status, headers, body, took = _timed(api, "/health")
            assert status == 503 and took < 1.0, (status, took, body)
            assert headers["retry-after"] == "5"
            status, headers, body, took = _timed(api, "/recommendations?query=dogs&k=3&user=u1")
            assert status == 503 and took < 1.0 + 0.5, (status, took, body)
            assert "budget" in body["error"]["message"] and headers["retry-after"] == "5"
            # Saturated: three admitted (two threads), the rest refused at once; health still answers.
            with ThreadPoolExecutor(9) as pool:
                calls = [pool.submit(_timed, api, f"/recommendations?query=dogs&k=3&user=u{n}") for n in range(8)]
                time.sleep(0.2)
                health = pool.submit(_timed, api, "/health")
                results = [c.result() for c in calls]
                h_status, _, _, h_took = health.result()
            assert h_status == 503 and h_took < 1.0, h_took
            refused = [r for r in results if r[0] == 503 and "at its limit" in r[2]["error"]["message"]]
            assert len(refused) == 5, [(r[0], r[2]["error"]["message"], round(r[3], 2)) for r in results]
            assert all(r[3] < 0.5 and r[1]["retry-after"] == "1" for r in refused)
            assert all(r[0] == 503 and r[3] < 1.0 + 0.5 for r in results), [(r[0], round(r[3], 2)) for r in results]
            # A request that fails validation answers at once as well.
            status, _, _, took = _timed(api, "/recommendations?k=ten")
            assert status == 422 and took < 0.5
            proxy.delay = 0.0
            deadline = time.monotonic() + 20
            while True:  # back to normal once the node answers in time
                status, _, body, _ = _timed(api, "/recommendations?query=dogs&k=3")
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert status == 200, body
            assert _timed(api, "/health")[0] == 200
    finally:
        service.close()
        proxy.close()


def test_each_call_gets_the_time_left_rounded_down_and_the_copies_are_kept():
    from elasticsearch import Elasticsearch

    from vecrank.serve.deadline import MIN_CALL_S, TIMEOUT_STEP, BudgetedClient, BudgetExceeded, deadline

    client = Elasticsearch("https://127.0.0.1:1")  # nothing is sent: only the per-call options are read
    budgeted = BudgetedClient(client)
    assert budgeted.search.__self__ is client, "outside a request: the client itself"
    for budget in (0.5, 7.0, 60.0):  # steps of 25 ms and more: both reads fall in one
        with deadline(time.monotonic() + budget):
            first = budgeted.search.__self__
            timeout = first._request_timeout
            assert budget / TIMEOUT_STEP**2 <= timeout <= budget, (budget, timeout)
            assert first._max_retries == 0
            assert budgeted.get.__self__ is first, "the same step: the same copy, not a new client"
    with deadline(time.monotonic() + MIN_CALL_S / 2):
        with pytest.raises(BudgetExceeded):
            budgeted.search  # noqa: B018 (the attribute access is the call's admission)
    assert len(budgeted._copies) == 3
