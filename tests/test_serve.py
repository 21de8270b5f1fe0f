"""The HTTP API against a real node: contract, validation, attribution to experiment arms,
interleaving, and a small simulated experiment end to end (scripts/simulate_experiment.py).

One small synthetic world per module: 64 items in four topics, 40 users who rated items of their
topic (the latest four of each user held out), and two registered versions of a ranker: ``sim@1``
ranks the candidates *least* similar to the user's profile first, ``sim@2`` the most similar.
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib.util
import json
import random
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from vecrank.rank.experiments import HOLDOUT, INTERLEAVED, Arm, Experiment, ExperimentStore

T0 = 1_600_000_000_000
DAY = 86_400_000
REPO = Path(__file__).resolve().parents[1]
SUBJECTS = {
    "space": [
        "astronauts",
        "rocket launch",
        "distant planets",
        "the space station",
        "black holes",
        "a mission to Mars",
        "alien contact",
        "a lunar base",
    ],
    "cooking": [
        "baking bread",
        "pasta recipes",
        "a pastry contest",
        "grilled vegetables",
        "ramen broth",
        "street food",
        "a chef's kitchen",
        "chocolate desserts",
    ],
    "horror": [
        "a haunted house",
        "a masked killer",
        "zombie outbreak",
        "a cursed doll",
        "a demon possession",
        "vampires",
        "a ghost ship",
        "werewolves",
    ],
    "sport": [
        "a football final",
        "marathon runners",
        "a boxing champion",
        "tennis rivals",
        "a cycling race",
        "basketball",
        "an Olympic swimmer",
        "a rugby team",
    ],
}


# --- the world ------------------------------------------------------------------------------------------


def _booster(spec, *, prefer_similar: bool):
    """A ranker that only reads cos_profile: up (prefer_similar) or down."""
    from vecrank.rank.train import TrainConfig, TrainingTable, train_ranker

    rng = np.random.default_rng(0)
    col = spec.names.index("cos_profile")
    table = TrainingTable(feature_names=spec.names)
    for g in range(60):
        m = np.zeros((20, len(spec.names)), dtype=np.float32)
        m[:, col] = rng.uniform(0.0, 1.0, 20)
        rank = np.argsort(np.argsort(m[:, col] if prefer_similar else -m[:, col]))  # 0 = least preferred
        table.add(f"g{g}", "u", 0, [f"i{j}" for j in range(20)], (rank // 4).astype(float).tolist(), m)
    booster, _ = train_ranker(table, None, TrainConfig(num_boost_round=60, learning_rate=0.3))
    return booster


@pytest.fixture(scope="module")
def world(es, es_settings, tmp_path_factory):
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.rank import features as feats
    from vecrank.rank.evaluate import ReplayConfig
    from vecrank.rank.model import RankerModel, Registry
    from vecrank.rank.offline import PoolConfig
    from vecrank.rank.store import refresh_profiles

    prefix = f"vrs-{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(es_settings, index_prefix=prefix)
    tmp = tmp_path_factory.mktemp("serve-world")
    rng = random.Random(3)
    items = [
        {"id": f"{topic}-{i}", "title": f"A film about {subjects[i % 8]}, part {i}", "topic": topic, "year": 1990 + i}
        for topic, subjects in SUBJECTS.items()
        for i in range(16)
    ]
    (tmp / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    assert (
        ingest_items(
            es,
            settings,
            tmp / "items.jsonl",
            ItemSource(template="{title}", field_types={"year": "integer"}),
            embedder=Embedder(),
        ).written
        == 64
    )
    train, heldout = [], {}
    for n in range(40):
        user, topic = f"u{n}", list(SUBJECTS)[n % 4]
        picks = rng.sample(range(16), 12)
        for j, i in enumerate(picks[:8]):
            train.append(
                {"user": user, "item": f"{topic}-{i}", "type": "rating", "value": 5.0, "timestamp": T0 + j * DAY}
            )
        heldout[user] = {f"{topic}-{i}": ("rating", 5.0) for i in picks[8:]}
    (tmp / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in train))
    assert ingest_events(
        es, settings, tmp / "train.jsonl", progress=False, refresh_states=refresh_profiles
    ).written == len(train)
    spec = feats.FeatureSpec()
    # The pool the service gathers for these models: the 64 nearest items to the text profile.
    config = ReplayConfig(pool=PoolConfig(text=64, cf=0, cooc=0, seq=0, popular=0, trending=0), spec=spec)
    registry = Registry(es, settings)
    for prefer in (False, True):  # sim@1 the worse, sim@2 the better
        registry.register(
            RankerModel.from_booster(
                "sim", spec, _booster(spec, prefer_similar=prefer), training={"config": config.to_dict()}
            )
        )
    registry.set_status("sim", 2, "active")
    yield settings, heldout
    names = list(es.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


class Server:
    """uvicorn in a thread, on a free loopback port; ``headers`` go with every call (an API key)."""

    def __init__(self, app, headers=None):
        import uvicorn

        self.headers = dict(headers or {})

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body=None, *, raw: bytes | None = None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {**self.headers, **(headers or {})}
        if payload is not None:
            hdrs = {"Content-Type": "application/json", **hdrs}
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data) if data else None


@pytest.fixture(scope="module")
def service(world):
    from vecrank.serve import RecommendService, ServeConfig

    settings, _ = world
    svc = RecommendService(settings, ServeConfig(model_id="sim", max_k=50, experiment_refresh_s=60, model_refresh_s=60))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def api(service):
    from vecrank.serve import create_app

    # Not about API keys (tests/test_auth.py is), and scripts/simulate_experiment.py sends none.
    with Server(create_app(service, threads=8, auth=False)) as server:
        yield server


def _topic_of(user: str) -> str:
    return list(SUBJECTS)[int(user[1:]) % 4]


def _assert_error(status, headers, body, code, fragment):
    assert status == code, (status, body)
    assert body["error"]["status"] == code and fragment in body["error"]["message"], body
    assert body["request_id"] == headers["x-request-id"]


# --- contract ---------------------------------------------------------------------------------------------


def test_health_and_openapi(api):
    status, headers, body = api.call("GET", "/health")
    assert status == 200, body
    assert body["status"] == "ok" and body["elasticsearch"]["status"] in ("green", "yellow")
    assert body["default_model"] == "sim@2" and body["experiment"] is None
    assert body["request_id"] == headers["x-request-id"]
    status, _, spec = api.call("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {m for m in spec["paths"]["/recommendations"]} == {"get", "post"}
    assert "post" in spec["paths"]["/events"] and "get" in spec["paths"]["/health"]
    assert {"RecommendRequest", "RecommendResponse", "EventsRequest"} <= set(spec["components"]["schemas"])


def test_recommendations_outside_experiments(api, service, world, es):
    settings, _ = world
    status, headers, body = api.call("GET", "/recommendations?user=u1&k=5")
    assert status == 200, body
    assert body["request_id"] == headers["x-request-id"] and len(body["request_id"]) == 32
    assert (body["experiment"], body["arm"], headers["x-vecrank-arm"]) == (None, None, "none")
    assert body["model_version"] == headers["x-vecrank-model"] == "sim@2" and body["path"] == "profile"
    assert body["ranked_by"] == "sim@2" and all(isinstance(it["score"], float) for it in body["items"])
    assert [it["position"] for it in body["items"]] == [1, 2, 3, 4, 5]
    # sim@2 ranks the user's own topic first
    assert [it["fields"]["topic"] for it in body["items"][:3]] == [_topic_of("u1")] * 3
    assert "embedding" not in body["items"][0]["fields"]
    status, headers, post = api.call(
        "POST", "/recommendations", {"user": "u1", "k": 3, "filters": {"topic": "space"}, "context_items": []}
    )
    assert status == 200 and post["request_id"] != body["request_id"]
    assert [it["fields"]["topic"] for it in post["items"]] == ["space"] * 3
    status, _, ranged = api.call("GET", "/recommendations?user=u1&k=4&filter=year>=2000&filter=topic=horror")
    assert status == 200 and all(
        it["fields"]["year"] >= 2000 and it["fields"]["topic"] == "horror" for it in ranged["items"]
    )
    status, _, cold = api.call("POST", "/recommendations", {"query": "rockets and astronauts", "k": 3})
    assert status == 200 and cold["path"] == "query" and cold["arm"] is None
    # The model was trained for the profile path: the query path is retrieval's order and says so.
    assert cold["ranked_by"] is None and cold["items"] and not any("score" in it for it in cold["items"])
    # every response's exposures were recorded with its request id, position and model version
    assert service.writer.flush(10)
    es.indices.refresh(index=settings.index("events"))
    hits = es.search(index=settings.index("events"), query={"term": {"request_id": body["request_id"]}}, size=10)[
        "hits"
    ]["hits"]
    got = sorted(
        (
            h["_source"]["position"],
            h["_source"]["item_id"],
            h["_source"]["type"],
            h["_source"]["model_version"],
            "arm" in h["_source"],
        )
        for h in hits
    )
    assert got == [(it["position"], it["item_id"], "impression", "sim@2", False) for it in body["items"]]
    es.indices.refresh(index=settings.index("feature-log"))
    logged = es.search(
        index=settings.index("feature-log"), query={"term": {"request_id": body["request_id"]}}, size=10
    )["hits"]["total"]["value"]
    assert logged == 5
    assert (
        es.count(index=settings.index("feature-log"), query={"term": {"request_id": cold["request_id"]}})["count"] == 0
    )


def test_a_repeated_search_text_is_embedded_once(api, service):
    """The service keeps query embeddings in a bounded LRU: the second identical search reads the
    cache, and returns the same items as the first."""
    embedder = service.embedder
    before = (embedder.hits, embedder.misses)
    _, _, first = api.call("POST", "/recommendations", {"query": "haunted house at midnight", "k": 4})
    _, _, second = api.call("POST", "/recommendations", {"query": "haunted house at midnight", "k": 4})
    assert (embedder.hits - before[0], embedder.misses - before[1]) == (1, 1)
    assert [it["item_id"] for it in first["items"]] == [it["item_id"] for it in second["items"]]
    cached = embedder.encode(["haunted house at midnight"])
    assert not cached.flags.writeable and cached.shape[0] == 1
    small = type(embedder)(service.client, service.settings, cache_size=2)
    small._embedder = embedder._embedder
    for text in ("a", "b", "a", "c"):  # c evicts b, the least recently used
        small.encode([text])
    assert [text for text, _ in small._cache] == ["a", "c"] and (small.hits, small.misses) == (1, 3)
    # A vector is cached with the option that changes it: unnormalized is another entry.
    raw = small.encode(["c"], normalize_embeddings=False)
    np.testing.assert_allclose(raw[0], embedder._embedder.encode(["c"], normalize_embeddings=False)[0], rtol=1e-6)
    assert small.misses == 4


@pytest.mark.parametrize(
    "method,path,body,code,fragment",
    [
        ("GET", "/recommendations?user=u1&k=0", None, 422, "k must be an integer between 1 and 50"),
        ("GET", "/recommendations?user=u1&k=100000", None, 422, "k must be an integer between 1 and 50"),
        ("GET", "/recommendations?user=u1&k=ten", None, 422, "k: Input should be a valid integer"),
        ("GET", "/recommendations?user=u1&filter=colour=red", None, 422, "unknown filter field 'colour'"),
        ("GET", "/recommendations?user=u1&filter=garbage", None, 422, "is not FIELD=VALUE"),
        ("GET", "/recommendations?user=u1&sort=asc", None, 422, "unknown parameter(s) sort"),
        ("POST", "/recommendations", {"user": "u1", "k": 51}, 422, "k must be an integer between 1 and 50"),
        ("POST", "/recommendations", {"user": "u1", "k": "10"}, 422, "k: Input should be a valid integer"),
        ("POST", "/recommendations", {"user": "u1", "k": 2.5}, 422, "k: Input should be a valid integer"),
        ("POST", "/recommendations", {"user": ["u1"]}, 422, "user"),
        ("POST", "/recommendations", {"user": "u1", "colour": "red"}, 422, "unknown field 'colour'"),
        ("POST", "/recommendations", {"user": "u1", "filters": {"nope": "x"}}, 422, "unknown filter field 'nope'"),
        ("POST", "/recommendations", {"user": "u1", "filters": {"year": {"between": 1}}}, 422, "filters.year"),
        ("POST", "/recommendations", {"user": "u1", "filters": {"text": "x"}}, 422, "cannot be filtered exactly"),
        ("POST", "/recommendations", {"user": "u1", "context_items": ["x"] * 51}, 422, "context_items"),
        ("POST", "/recommendations", None, 422, "a JSON body is required"),
        ("POST", "/events", {"events": []}, 422, "events"),
        ("POST", "/events", {"events": [{"user": "u1"}]}, 422, "events.0.item: Field required"),
        (
            "POST",
            "/events",
            {"events": [{"user": "u1", "item": "space-1", "type": "teleport"}]},
            422,
            "unknown event type",
        ),
        ("POST", "/events", {"events": [{"user": "u1", "item": "no-such-item", "type": "click"}]}, 422, "unknown item"),
        ("POST", "/events", {"events": [{"user": "u1", "item": "space-1", "type": "rating"}]}, 422, "missing value"),
        (
            "POST",
            "/events",
            {"events": [{"user": "u1", "item": "space-1", "type": "click", "timestamp": "yesterday"}]},
            422,
            "bad timestamp",
        ),
        (
            "POST",
            "/events",
            {"events": [{"user": "u1", "item": "space-1", "type": "click"}] * 1001},
            413,
            "at most 1000 events",
        ),
        ("DELETE", "/recommendations", None, 405, "Method Not Allowed"),
        ("GET", "/no-such-path", None, 404, "Not Found"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(api, method, path, body, code, fragment):
    _assert_error(*api.call(method, path, body), code, fragment)


def test_malformed_and_oversized_bodies(api):
    _assert_error(*api.call("POST", "/recommendations", raw=b'{"user": "u1", "k": '), 400, "malformed JSON body")
    _assert_error(*api.call("POST", "/events", raw=b"[1, 2"), 400, "malformed JSON body")
    big = json.dumps({"user": "u1", "query": "x" * 1_200_000}).encode()
    _assert_error(*api.call("POST", "/recommendations", raw=big), 413, "request body over")
    _assert_error(*api.call("POST", "/recommendations", {"user": "u1", "query": "x" * 1001}), 422, "query")


def test_bodies_are_parsed_by_orjson_which_refuses_what_json_does_not_allow(api):
    # The standard library's json.loads reads NaN and accepts this body; orjson, which parses
    # bodies here (faster, so a stall of the event loop is shorter), refuses it as JSON must.
    nan_value = b'{"events": [{"user": "u1", "item": "space-1", "type": "rating", "value": NaN}]}'
    assert json.loads(nan_value)["events"][0]["value"] != 0  # parseable by json: NaN
    _assert_error(*api.call("POST", "/events", raw=nan_value), 400, "malformed JSON body")


# --- experiments through the API ---------------------------------------------------------------------------


def _events_of(es, settings, request_id, kind):
    es.indices.refresh(index=settings.index("events"))
    return [
        h["_source"]
        for h in es.search(
            index=settings.index("events"),
            size=50,
            query={"bool": {"filter": [{"term": {"request_id": request_id}}, {"term": {"type": kind}}]}},
        )["hits"]["hits"]
    ]


def test_two_identical_events_without_timestamps_in_one_batch_stay_two(api, world, es):
    settings, _ = world
    click = {"user": "u-twice", "item": "space-1", "type": "click"}
    status, _, out = api.call("POST", "/events", {"events": [click, click]})
    assert status == 200 and (out["accepted"], out["duplicates"]) == (2, 0), out
    es.indices.refresh(index=settings.index("events"))
    hits = es.search(index=settings.index("events"), query={"term": {"user_id": "u-twice"}})["hits"]["hits"]
    stamps = sorted(int(h["_source"]["timestamp"]) for h in hits)
    assert len(stamps) == 2 and stamps[1] - stamps[0] == 1, stamps


def test_ab_arms_and_event_attribution(api, service, world, es):
    from vecrank.rank.experiments import report

    settings, _ = world
    store = ExperimentStore(es, settings)
    exp = store.create(
        Experiment(
            "api-ab",
            arms=(Arm("control", model="sim@1"), Arm("treatment", model="sim@2")),
            holdout=0.2,
            salt="api-ab-salt",
        )
    )
    store.start("api-ab")
    service.refresh()
    try:
        served = {}
        for n in range(20):
            user = f"u{n}"
            status, headers, body = api.call("GET", f"/recommendations?user={user}&k=4")
            assert status == 200, body
            assert body["experiment"] == "api-ab" and body["arm"] == exp.assign(user) == headers["x-vecrank-arm"]
            expected = {"control": "sim@1", "treatment": "sim@2", HOLDOUT: "sim@2"}[body["arm"]]
            assert body["model_version"] == expected == headers["x-vecrank-model"]
            served[user] = body
        assert {b["arm"] for b in served.values()} == {"control", "treatment", HOLDOUT}
        user, body = next((u, b) for u, b in served.items() if b["arm"] == "control")
        clicked = body["items"][2]
        click = {
            "user": user,
            "item": clicked["item_id"],
            "type": "click",
            "request_id": body["request_id"],
            "timestamp": int(time.time() * 1000),
        }
        status, _, out = api.call("POST", "/events", {"events": [click]})
        assert status == 200 and (out["accepted"], out["attributed"], out["duplicates"]) == (1, 1, 0), out
        stored = _events_of(es, settings, body["request_id"], "click")
        assert [(e["arm"], e["model_version"], e["position"]) for e in stored] == [("api-ab/control", "sim@1", 3)]
        again = api.call("POST", "/events", {"events": [click]})[2]
        assert (again["accepted"], again["duplicates"]) == (0, 1)
        stray = api.call(
            "POST",
            "/events",
            {"events": [{"user": user, "item": "space-2", "type": "click", "request_id": "not-a-served-request"}]},
        )[2]
        assert (stray["accepted"], stray["attributed"]) == (1, 0)
        # a request this process no longer remembers is found among the stored impressions
        assert service.writer.flush(10)
        es.indices.refresh(index=settings.index("events"))
        other_user, other = next((u, b) for u, b in served.items() if b["arm"] == "treatment")
        service._requests.pop(other["request_id"])
        out = api.call(
            "POST",
            "/events",
            {
                "events": [
                    {
                        "user": other_user,
                        "item": other["items"][0]["item_id"],
                        "type": "purchase",
                        "request_id": other["request_id"],
                    }
                ]
            },
        )[2]
        assert out["attributed"] == 1
        assert _events_of(es, settings, other["request_id"], "purchase")[0]["arm"] == "api-ab/treatment"
        rep = report(es, settings, "api-ab", n_boot=200)
        arms = {a: s for a, s in rep.arms.items()}
        assert sum(s.users for s in arms.values()) == 20
        assert arms["control"].users == sum(1 for b in served.values() if b["arm"] == "control")
        assert arms["control"].exposures == 4 * arms["control"].requests and arms["control"].clicks == 1
        assert arms["treatment"].converted_users == 1
    finally:
        store.stop("api-ab")
        service.refresh()
    assert api.call("GET", "/recommendations?user=u0&k=2")[2]["arm"] is None


def test_interleaving_serves_merged_lists_with_teams(api, service, world, es):
    settings, _ = world
    store = ExperimentStore(es, settings)
    exp = store.create(
        Experiment(
            "api-tdi",
            arms=(Arm("control", model="sim@1"), Arm("treatment", model="sim@2")),
            type="interleaving",
            salt="api-tdi-salt",
        )
    )
    store.start("api-tdi")
    service.refresh()
    try:
        status, headers, body = api.call("GET", "/recommendations?user=u5&k=6")
        assert status == 200 and exp.assign("u5") == INTERLEAVED
        assert body["arm"] == INTERLEAVED and body["model_version"] == "sim@1+sim@2"
        teams = [it["team"] for it in body["items"]]
        assert len(body["items"]) == 6 and abs(teams.count("control") - teams.count("treatment")) <= 1
        assert all(
            it["model_version"] == {"control": "sim@1", "treatment": "sim@2"}[it["team"]] for it in body["items"]
        )
        pick = next(it for it in body["items"] if it["team"] == "treatment")
        out = api.call(
            "POST",
            "/events",
            {"events": [{"user": "u5", "item": pick["item_id"], "type": "click", "request_id": body["request_id"]}]},
        )[2]
        assert out["attributed"] == 1
        stored = _events_of(es, settings, body["request_id"], "click")
        assert (stored[0]["arm"], stored[0]["model_version"], stored[0]["position"]) == (
            "api-tdi/treatment",
            "sim@2",
            pick["position"],
        )
        assert service.writer.flush(10)
        shown = _events_of(es, settings, body["request_id"], "impression")
        assert sorted(e["arm"] for e in shown) == sorted(f"api-tdi/{t}" for t in teams)
    finally:
        store.stop("api-tdi")
        service.refresh()


def _simulation_module():
    spec = importlib.util.spec_from_file_location("simulate_experiment", REPO / "scripts" / "simulate_experiment.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulate_experiment"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_small_simulated_experiment_end_to_end(api, service, world, es, tmp_path):
    """The model better offline wins the A/B test and the interleaving test on simulated users."""
    sim = _simulation_module()
    settings, heldout = world
    offline = sim.offline(es, settings, heldout, ["sim@1", "sim@2"], k=5, n_boot=500)
    assert offline["best"] == "sim@2", offline
    assert offline["vs_first"]["sim@2"]["ci95"][0] > 0
    before = sim.snapshot_users(es, settings, sorted(heldout))
    api_client = sim.ApiClient(api.url)
    arms = [{"name": "control", "model": "sim@1"}, {"name": "treatment", "model": "sim@2"}]
    service.config = dataclasses.replace(service.config, experiment_refresh_s=0.2)
    try:
        ab = sim.run_experiment(
            es,
            settings,
            api_client,
            heldout,
            experiment_id="sim-ab",
            arms=arms,
            sessions=2,
            k=5,
            concurrency=2,
            reps=300,
            n_boot=500,
            out_dir=tmp_path,
        )
        tdi = sim.run_experiment(
            es,
            settings,
            api_client,
            heldout,
            experiment_id="sim-tdi",
            arms=arms,
            type_="interleaving",
            sessions=3,
            k=5,
            concurrency=2,
            reps=300,
            n_boot=500,
        )
    finally:
        service.config = dataclasses.replace(service.config, experiment_refresh_s=60)
        service.refresh()
    assert ab["replay"]["requests"] == 80 and not ab["replay"]["errors"]
    ctr = ab["report"]["comparisons"]["treatment"]["ctr"]
    assert ctr["treatment"] > ctr["control"] and ctr["p_value"] < 0.05, ctr
    assert ab["report"]["arms"]["control"]["users"] + ab["report"]["arms"]["treatment"]["users"] == 40
    assert not ab["report"]["srm"]["mismatch"]
    assert ab["users_needed_80pct"]["ctr_clustered"] is not None and len(ab["plots"]) == 4
    assert ab["report"]["comparisons"]["treatment"]["ctr_independent"]["p_value"] < 0.05
    assert json.loads((tmp_path / "sim-ab.json").read_text())["users_needed_80pct"] == ab["users_needed_80pct"]
    assert tdi["report"]["interleaving"]["winner"] == "treatment"
    # The team-draft coin is seeded by each request's random id: 3 sessions leave room for that.
    assert tdi["users_needed_80pct"]["preference"] is not None and tdi["report"]["interleaving"]["p_value"] < 0.05, (
        tdi["report"]["interleaving"],
        tdi["users_needed_80pct"],
    )
    # the users' histories were put back: the simulated clicks do not leak into the next test
    assert sim.snapshot_users(es, settings, sorted(heldout)) == before
