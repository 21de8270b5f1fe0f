"""API keys for ``vecrank serve``, against a real node: hashed at rest, managed through the CLI,
required by every endpoint but the public ones, scoped, cached for a short time, rate limited per
key; ``--no-auth`` only on loopback; events attributed only to requests of their own user.

One small world per module: eight items, two users with a few ratings, no registered model (the
service serves retrieval order)."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import uuid

import pytest
from clihelp import connection_args, run_cli
from test_serve import Server

from vecrank.serve.auth import SCOPES, ApiKeyStore, KeyCache, RateLimiter, digest, is_loopback, parse_key

KEY_CACHE_S = 0.3
TITLES = ["dogs", "cats", "rockets", "bread", "ghosts", "tennis", "storms", "pirates"]
PROTECTED = [
    ("GET", "/recommendations?query=dogs&k=2", None),
    ("POST", "/recommendations", {"query": "dogs", "k": 2}),
    ("POST", "/events", {"events": [{"user": "u1", "item": "i0", "type": "click"}]}),
    ("GET", "/no-such-path", None),
    ("DELETE", "/recommendations", None),
]


@pytest.fixture(scope="module")
def world(es, es_settings, tmp_path_factory):
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.rank.store import refresh_profiles

    prefix = f"vra-{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(es_settings, index_prefix=prefix)
    tmp = tmp_path_factory.mktemp("auth-world")
    (tmp / "items.jsonl").write_text(
        "".join(json.dumps({"id": f"i{n}", "title": f"A story about {w}"}) + "\n" for n, w in enumerate(TITLES))
    )
    assert (
        ingest_items(es, settings, tmp / "items.jsonl", ItemSource(template="{title}"), embedder=Embedder()).written
        == 8
    )
    events = [
        {"user": u, "item": f"i{i}", "type": "rating", "value": 5, "timestamp": 1_600_000_000 + i}
        for u, items in (("u1", (0, 1)), ("u2", (4, 6)))
        for i in items
    ]
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    ingest_events(es, settings, tmp / "events.jsonl", progress=False, refresh_states=refresh_profiles)
    yield settings
    names = list(es.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


@pytest.fixture(scope="module")
def store(es, world):
    return ApiKeyStore(es, world)


@pytest.fixture(scope="module")
def keys(store):
    """One key per scope set the tests need: name -> full key."""
    return {
        name: store.create(name, scopes)[1]
        for name, scopes in (
            ("recommend", ["recommend"]),
            ("events", ["events"]),
            ("both", ["recommend", "events"]),
            ("admin", ["admin"]),
        )
    }


@pytest.fixture(scope="module")
def service(world):
    from vecrank.serve import RecommendService, ServeConfig

    svc = RecommendService(
        world, ServeConfig(key_cache_s=KEY_CACHE_S, experiment_refresh_s=60, model_refresh_s=60, log_features=False)
    )
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def api(service):
    from vecrank.serve import create_app

    with Server(create_app(service, threads=4)) as server:
        yield server


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _raw_get(port: int, path: str) -> str:
    """The whole HTTP answer (status line, headers, body) to a GET without any key."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    conn.close()
    return answer.decode(errors="replace")


def _error(response, code: int, fragment: str) -> dict:
    status, headers, body = response
    assert status == code, (status, body)
    assert body["error"]["status"] == code and fragment in body["error"]["message"], body
    assert body["request_id"] == headers["x-request-id"]
    return headers


# --- the store -----------------------------------------------------------------------------------------


def test_keys_are_hashed_at_rest(es, store, world):
    key, token = store.create("backend", ["events", "recommend", "events"])
    key_id, secret = parse_key(token)
    assert token == f"vrk_{key.key_id}_{secret}" and key_id == key.key_id and len(secret) >= 43
    assert key.scopes == ("recommend", "events")  # canonical order, no duplicates
    stored = es.get(index=world.index("apikeys"), id=key_id)["_source"]
    assert secret not in json.dumps(stored) and token not in json.dumps(stored)
    assert set(stored) == {"key_id", "name", "scopes", "created_at", "revoked", "hash_alg", "salt", "hash"}
    assert stored["hash"] == digest(key_id, secret, stored["salt"]) and stored["hash_alg"] == "hmac-sha256"
    assert len(bytes.fromhex(stored["salt"])) == 16 and stored["revoked"] is False
    # each key its own salt: the same secret under another salt hashes differently
    assert digest(key_id, secret, "00" * 16) != stored["hash"]
    assert store.verify(token) == key
    assert store.verify(f"vrk_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}") is None  # wrong secret
    assert store.verify(token.replace(key_id, "0" * 16)) is None  # unknown id
    assert store.verify("not-a-key") is None and store.verify("") is None
    listed = {k.key_id: k for k in store.list()}
    assert listed[key_id] == key and "hash" not in listed[key_id].to_dict()
    revoked, now = store.revoke(key_id)
    assert now and revoked.revoked and revoked.revoked_at and store.verify(token) is None
    assert store.revoke(key_id) == (revoked, False)


def test_the_cache_keeps_a_key_for_its_time(store):
    key, token = store.create("cached", ["recommend"])
    long, short = KeyCache(store, ttl_s=600), KeyCache(store, ttl_s=0.2)
    assert long.cached(token) is KeyCache.MISS and long.authenticate(token) == key == short.authenticate(token)
    store.revoke(key.key_id)
    assert long.cached(token) == key  # still trusted within its time
    time.sleep(0.25)
    assert short.authenticate(token) is None  # re-read after its time: revoked
    assert long.cached("vrk_" + key.key_id + "_" + "x" * 43) is None  # a wrong secret never passes the cache


def test_token_bucket():
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("a", now=10.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert limiter.take("b", now=10.0) == 0.0  # per key
    assert limiter.take("a", now=10.5) == 0.0 and limiter.take("a", now=10.5) == 0.5
    assert RateLimiter.retry_after(0.01) == "1" and RateLimiter.retry_after(2.2) == "3"
    assert RateLimiter(rate=0, burst=1).take("a") == 0.0  # 0: no limit
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=0)


def test_serve_config_round_trips():
    from vecrank.serve import ServeConfig

    config = ServeConfig(key_cache_s=2.5, rate_limit_rps=7.0, rate_limit_burst=9, item_fields=("title",))
    assert ServeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert ServeConfig().key_cache_s == 30.0 and (ServeConfig().rate_limit_rps, ServeConfig().rate_limit_burst) == (
        50.0,
        100,
    )
    for bad in ({"key_cache_s": -1}, {"rate_limit_rps": -1}, {"rate_limit_burst": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServeConfig(**bad)


# --- the CLI -------------------------------------------------------------------------------------------


def test_cli_create_list_revoke(capsys, caplog, es, world):
    args = [*connection_args(world), "--index-prefix", world.index_prefix]
    result = run_cli(
        capsys, *args, "apikey", "create", "--name", "cli-page", "--scope", "recommend", "--scope", "events"
    )
    assert result.code == 0, result.err
    token = result.out.strip()  # stdout is the key alone, for `KEY=$(vecrank apikey create ...)`
    key_id, secret = parse_key(token)
    assert f"created API key {key_id} (cli-page; scopes recommend, events)" in result.err and token not in result.err
    result = run_cli(capsys, *args, "apikey", "create", "--name", "cli-json", "--scope", "admin", "--json")
    made = json.loads(result.out)
    assert result.code == 0 and set(made) == {"id", "name", "scopes", "created_at", "revoked", "revoked_at", "key"}
    assert parse_key(made["key"])[0] == made["id"] and made["scopes"] == ["admin"]

    result = run_cli(capsys, *args, "apikey", "list", "--json")
    listed = {k["id"]: k for k in json.loads(result.out)}
    assert result.code == 0 and listed[key_id]["scopes"] == ["recommend", "events"] and not listed[key_id]["revoked"]
    assert secret not in result.out and parse_key(made["key"])[1] not in result.out and "hash" not in result.out
    result = run_cli(capsys, *args, "apikey", "list")
    assert result.code == 0 and result.out.startswith("ID ") and key_id in result.out and secret not in result.out

    result = run_cli(capsys, *args, "apikey", "revoke", key_id, "--yes")
    assert result.code == 0 and f"revoked API key {key_id}" in result.out and "within" in result.out
    assert ApiKeyStore(es, world).verify(token) is None
    result = run_cli(capsys, *args, "apikey", "revoke", key_id, "--yes")
    assert result.code == 0 and "already revoked" in result.out
    result = run_cli(capsys, *args, "apikey", "list", "--json")
    assert {k["id"]: k for k in json.loads(result.out)}[key_id]["revoked"] is True

    result = run_cli(capsys, *args, "apikey", "revoke", "0123456789abcdef", "--yes")
    assert (
        result.code == 1
        and result.err.strip() == "Error: no API key '0123456789abcdef'; `vecrank apikey list` " "shows them"
    )
    result = run_cli(capsys, *args, "apikey", "create", "--name", "x", "--scope", "everything")
    assert result.code == 2 and "'everything' is not one of 'recommend', 'events', 'admin'" in result.err
    result = run_cli(capsys, *args, "apikey", "create", "--name", "x")
    assert result.code == 2 and "Missing option '--scope'" in result.err
    assert secret not in caplog.text and made["key"] not in caplog.text


def test_no_auth_is_refused_beyond_loopback(capsys, tmp_path):
    from vecrank.cli.serve import exposure_warning

    for host in ("0.0.0.0", "10.1.2.3", "::", "example.org"):
        result = run_cli(capsys, "--state-dir", str(tmp_path), "serve", "--no-auth", "--host", host)
        assert result.code == 2 and f"--no-auth is refused on --host {host}" in result.err, result.err
    result = run_cli(capsys, "--state-dir", str(tmp_path), "serve", "--page-key", "vrk_not-a-key")
    assert result.code == 2 and "--page-key" in result.err and "vrk_not-a-key" not in result.err
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST")] == [True] * 6
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "192.168.1.1", "localhost.example.org"))
    assert exposure_warning("127.0.0.1") is None and exposure_warning("0.0.0.0", behind_tls=True) is None
    assert "plain HTTP" in exposure_warning("0.0.0.0")
    assert SCOPES == ("recommend", "events", "admin")


# --- the service ---------------------------------------------------------------------------------------


def test_public_paths_need_no_key(api):
    assert api.call("GET", "/health")[0] == 200
    for path in ("/", "/static/page.js", "/openapi.json", "/docs"):
        head = _raw_get(api.port, path)[:200]
        assert head.startswith("HTTP/1.1 200"), (path, head)


@pytest.mark.parametrize("method,path,body", PROTECTED)
def test_every_other_endpoint_needs_a_key(api, method, path, body):
    headers = _error(api.call(method, path, body), 401, "an API key is required")
    assert headers["www-authenticate"] == 'Bearer realm="vecrank"'
    headers = _error(
        api.call(method, path, body, headers=_bearer("vrk_0123456789abcdef_" + "x" * 43)), 401, "invalid API key"
    )
    assert headers["www-authenticate"] == 'Bearer realm="vecrank", error="invalid_token"'
    for wrong in ({"Authorization": "Bearer garbage"}, {"Authorization": "Basic dTpw"}, {"X-API-Key": "nope"}):
        assert api.call(method, path, body, headers=wrong)[0] == 401


def test_a_malformed_body_without_a_key_is_401_not_400(api):
    _error(api.call("POST", "/events", raw=b"[1, 2"), 401, "an API key is required")


def test_a_wrong_secret_is_refused(api, keys):
    key_id, secret = parse_key(keys["both"])
    flipped = f"vrk_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    _error(api.call("GET", "/recommendations?query=dogs&k=2", headers=_bearer(flipped)), 401, "invalid API key")
    assert api.call("GET", "/recommendations?query=dogs&k=2", headers=_bearer(keys["both"]))[0] == 200


def test_scopes(api, keys, caplog):
    click = {"events": [{"user": "u1", "item": "i3", "type": "click"}]}
    status, headers, body = api.call("GET", "/recommendations?user=u1&k=3", headers=_bearer(keys["recommend"]))
    assert status == 200 and len(body["items"]) == 3, body
    assert (
        api.call("POST", "/recommendations", {"query": "cats", "k": 2}, headers={"X-API-Key": keys["recommend"]})[0]
        == 200
    )
    headers = _error(
        api.call("POST", "/events", click, headers=_bearer(keys["recommend"])),
        403,
        "lacks the 'events' scope that /events needs (it has recommend)",
    )
    assert headers["www-authenticate"] == 'Bearer realm="vecrank", error="insufficient_scope", scope="events"'
    _error(
        api.call("GET", "/recommendations?query=dogs", headers=_bearer(keys["events"])),
        403,
        "lacks the 'recommend' scope",
    )
    status, _, out = api.call("POST", "/events", click, headers=_bearer(keys["events"]))
    assert status == 200 and out["accepted"] + out["duplicates"] == 1, out
    for name in ("both", "admin"):
        assert api.call("GET", "/recommendations?query=bread&k=2", headers=_bearer(keys[name]))[0] == 200
        assert api.call("POST", "/events", click, headers={"X-API-Key": keys[name]})[0] == 200
    # with a key, the usual answers come back: 404, 405, 400
    assert api.call("GET", "/no-such-path", headers=_bearer(keys["admin"]))[0] == 404
    assert api.call("DELETE", "/recommendations", headers=_bearer(keys["recommend"]))[0] == 405
    assert api.call("POST", "/events", raw=b"[1, 2", headers=_bearer(keys["events"]))[0] == 400
    assert not any(parse_key(k)[1] in caplog.text for k in keys.values())


def test_a_revoked_key_is_refused_after_the_cache_time(api, store):
    key, token = store.create("soon-revoked", ["recommend"])
    assert api.call("GET", "/recommendations?query=dogs&k=1", headers=_bearer(token))[0] == 200
    store.revoke(key.key_id)
    time.sleep(KEY_CACHE_S + 0.1)
    _error(api.call("GET", "/recommendations?query=dogs&k=1", headers=_bearer(token)), 401, "invalid API key")


def test_rate_limit_per_key(world, keys):
    from vecrank.serve import RecommendService, ServeConfig, create_app

    svc = RecommendService(
        world, ServeConfig(rate_limit_rps=0.5, rate_limit_burst=3, log_exposures=False, log_features=False)
    )
    try:
        with Server(create_app(svc, threads=2, warm_up=False)) as limited:
            got = [limited.call("GET", "/no-such-path", headers=_bearer(keys["recommend"]))[0] for _ in range(3)]
            assert got == [404] * 3  # past the guard: each took a token
            headers = _error(
                limited.call("GET", "/recommendations?query=dogs", headers=_bearer(keys["recommend"])),
                429,
                "rate limit of API key",
            )
            assert 1 <= int(headers["retry-after"]) <= 2
            assert limited.call("GET", "/no-such-path", headers=_bearer(keys["both"]))[0] == 404  # its own bucket
            assert limited.call("GET", "/health")[0] == 200  # public paths are not counted
    finally:
        svc.close()


def test_unreachable_key_store_is_503(world, keys):
    from vecrank.client import make_client
    from vecrank.serve import RecommendService, ServeConfig, create_app

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = dataclasses.replace(world, es_url=f"https://127.0.0.1:{port}")
    svc = RecommendService(
        down, ServeConfig(log_exposures=False, log_features=False), client=make_client(down).options(max_retries=0)
    )
    try:
        with Server(create_app(svc, threads=2, warm_up=False)) as api:
            headers = _error(
                api.call("GET", "/recommendations?query=dogs", headers=_bearer(keys["both"])), 503, "retry later"
            )
            assert headers["retry-after"] == "5"
    finally:
        svc.close()


def test_openapi_declares_the_keys(api):
    status, _, spec = api.call("GET", "/openapi.json")
    assert status == 200
    assert spec["components"]["securitySchemes"] == {
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
    for method, path, scope in (
        ("get", "/recommendations", "recommend"),
        ("post", "/recommendations", "recommend"),
        ("post", "/events", "events"),
    ):
        op = spec["paths"][path][method]
        assert op["security"] == [{"bearer": [scope]}, {"apiKey": [scope]}]
        assert {"401", "403", "429"} <= set(op["responses"])
    assert "security" not in spec["paths"]["/health"]["get"]


def test_the_page_key_goes_into_the_page(service, keys):
    import html

    from vecrank.serve import create_app
    from vecrank.serve.app import page_html

    with Server(create_app(service, threads=2, warm_up=False, page_key=keys["both"])) as page:
        text = _raw_get(page.port, "/")
    assert f'<meta name="vecrank-api-key" content="{keys["both"]}">' in text and "cache-control: no-store" in text
    assert '<meta name="vecrank-api-key" content="">' in page_html(None)
    crafted = 'vrk_"><script>alert(1)</script>'  # create_app refuses it; the page escapes whatever it gets
    assert f'content="{html.escape(crafted, quote=True)}"' in page_html(crafted) and "<script>alert" not in page_html(
        crafted
    )
    with pytest.raises(ValueError, match="page_key is not an API key") as refused:
        create_app(service, page_key="vrk_short")
    assert "vrk_short" not in str(refused.value)
    # without API keys the page gets none, and needs none
    with Server(create_app(service, threads=2, warm_up=False, auth=False, page_key=keys["both"])) as open_page:
        text = _raw_get(open_page.port, "/")
    assert '<meta name="vecrank-api-key" content="">' in text and keys["both"] not in text


# --- attribution ---------------------------------------------------------------------------------------


def _stored_events(es, world, user: str, item: str, kind: str) -> list[dict]:
    es.indices.refresh(index=world.index("events"))
    return [
        h["_source"]
        for h in es.search(
            index=world.index("events"),
            size=20,
            query={
                "bool": {"filter": [{"term": {"user_id": user}}, {"term": {"item_id": item}}, {"term": {"type": kind}}]}
            },
        )["hits"]["hits"]
    ]


def test_events_are_attributed_only_to_their_own_users_requests(api, keys, es, world):
    auth = _bearer(keys["both"])
    status, _, served = api.call("GET", "/recommendations?user=u1&k=4", headers=auth)
    assert status == 200, served
    rid, first, second = served["request_id"], served["items"][0], served["items"][1]
    # another user citing u1's request: stored, without attribution, and said so
    status, _, out = api.call(
        "POST",
        "/events",
        {"events": [{"user": "u2", "item": first["item_id"], "type": "purchase", "request_id": rid, "position": 1}]},
        headers=auth,
    )
    assert status == 200 and (out["accepted"], out["attributed"]) == (1, 0), out
    assert out["warnings"] == [f"event 0: request {rid!r} was not served to user 'u2'; stored without attribution"]
    [forged] = _stored_events(es, world, "u2", first["item_id"], "purchase")
    assert not {"request_id", "position", "arm", "model_version"} & set(forged)
    # u1 with a position the request did not show the item at: the same
    status, _, out = api.call(
        "POST",
        "/events",
        {"events": [{"user": "u1", "item": second["item_id"], "type": "click", "request_id": rid, "position": 4}]},
        headers=auth,
    )
    assert status == 200 and (out["accepted"], out["attributed"]) == (1, 0), out
    assert "position 4 is not where request" in out["warnings"][0] and "(2)" in out["warnings"][0]
    [moved] = _stored_events(es, world, "u1", second["item_id"], "click")
    assert "request_id" not in moved and "position" not in moved
    # u1, the item where it was shown (and one with no position): attributed
    status, _, out = api.call(
        "POST",
        "/events",
        {
            "events": [
                {"user": "u1", "item": first["item_id"], "type": "click", "request_id": rid, "position": 1},
                {"user": "u1", "item": served["items"][2]["item_id"], "type": "cart", "request_id": rid},
            ]
        },
        headers=auth,
    )
    assert status == 200 and (out["accepted"], out["attributed"], out["warnings"]) == (2, 2, []), out
    [clicked] = _stored_events(es, world, "u1", first["item_id"], "click")
    assert (clicked["request_id"], clicked["position"], clicked["model_version"]) == (rid, 1, "none")
    assert _stored_events(es, world, "u1", served["items"][2]["item_id"], "cart")[0]["position"] == 3
