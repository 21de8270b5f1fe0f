"""The search page `vecrank serve` serves at ``/``, and the API's ``reasons``, against a real node.

The browser tests drive Debian's ``chromium`` through ``chromium-driver`` (selenium, headless,
host names other than 127.0.0.1 resolving nowhere): type a query, see ranked results with the
arm/model line, ask for a user's recommendations and see their reasons, click one, and find the
click event in Elasticsearch with the request id. Without the browser they fail, saying what to
install; ``VECRANK_TEST_NO_BROWSER=1`` skips them (and only them).

The service requires API keys: the page carries one of its own (``create_app(page_key=...)``,
``vecrank serve --page-key``, scopes recommend and events) in its meta tag.

One small world per module, like tests/test_serve.py's: 32 items in four topics, 12 users who
rated six items of their topic, and ``page@1``, a ranker that reads only ``cos_profile`` (the
most similar items first), active.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid

import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from test_serve import SUBJECTS, T0, Server

from vecrank.rank.reasons import TEXTS

DAY = 86_400_000
WAIT_S = 60


# --- the world ------------------------------------------------------------------------------------------


def _booster(spec):
    """A ranker that only reads cos_profile, higher first, trained on the values this world's users
    see (0.35 to 0.75), as a model trained on its own traffic is: contributions are relative to
    the training average, so the best of a user's candidates contribute positively."""
    from vecrank.rank.train import TrainConfig, TrainingTable, train_ranker

    rng = np.random.default_rng(0)
    col = spec.names.index("cos_profile")
    table = TrainingTable(feature_names=spec.names)
    for g in range(60):
        m = np.zeros((20, len(spec.names)), dtype=np.float32)
        m[:, col] = rng.uniform(0.35, 0.75, 20)
        rank = np.argsort(np.argsort(m[:, col]))  # 0 = least similar, least preferred
        table.add(f"g{g}", "u", 0, [f"i{j}" for j in range(20)], (rank // 4).astype(float).tolist(), m)
    booster, _ = train_ranker(table, None, TrainConfig(num_boost_round=40, learning_rate=0.3))
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

    prefix = f"vrp-{uuid.uuid4().hex[:10]}"
    settings = dataclasses.replace(es_settings, index_prefix=prefix)
    tmp = tmp_path_factory.mktemp("page-world")
    items = [
        {"id": f"{topic}-{i}", "title": f"A film about {subjects[i]}, part {i}", "topic": topic, "year": 1990 + i}
        for topic, subjects in SUBJECTS.items()
        for i in range(8)
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
        == 32
    )
    events, liked = [], {}
    for n in range(12):
        user, topic = f"u{n}", list(SUBJECTS)[n % 4]
        picks = [(n + j) % 8 for j in range(6)]
        liked[user] = {f"{topic}-{i}" for i in picks}
        events += [
            {"user": user, "item": f"{topic}-{i}", "type": "rating", "value": 5.0, "timestamp": T0 + j * DAY}
            for j, i in enumerate(picks)
        ]
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert ingest_events(
        es, settings, tmp / "events.jsonl", progress=False, refresh_states=refresh_profiles
    ).written == len(events)
    spec = feats.FeatureSpec()
    config = ReplayConfig(pool=PoolConfig(text=32, cf=0, cooc=0, seq=0, popular=0, trending=0), spec=spec)
    registry = Registry(es, settings)
    registry.register(RankerModel.from_booster("page", spec, _booster(spec), training={"config": config.to_dict()}))
    registry.set_status("page", 1, "active")
    titles = {r["id"]: r["title"] for r in items}
    yield settings, liked, titles
    names = list(es.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


class Recorder:
    """ASGI wrapper noting each API request's path and ``Authorization`` header."""

    def __init__(self, app):
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append((scope["path"], dict(scope.get("headers") or []).get(b"authorization")))
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def page_keys(world, es):
    """Two API keys with the scopes the page needs (recommend, events): the one `--page-key` puts in
    the page, and one a reader sets in localStorage."""
    from vecrank.serve.auth import ApiKeyStore

    store = ApiKeyStore(es, world[0])
    return tuple(store.create(name, ["recommend", "events"])[1] for name in ("page", "reader"))


@pytest.fixture(scope="module")
def api(world, page_keys):
    from vecrank.serve import RecommendService, ServeConfig, create_app

    settings, _, _ = world
    service = RecommendService(
        settings, ServeConfig(model_id="page", max_k=50, experiment_refresh_s=60, model_refresh_s=60)
    )
    recorder = Recorder(create_app(service, threads=4, page_key=page_keys[0]))
    with Server(recorder, headers={"Authorization": f"Bearer {page_keys[0]}"}) as server:
        server.recorder = recorder
        yield server
    service.close()


def _topic(item_id: str) -> str:
    return item_id.split("-")[0]


# --- the API: reasons, and the page's files -------------------------------------------------------------


def test_reasons_only_where_asked_and_the_model_ranked(api, world):
    _, liked, titles = world
    status, _, plain = api.call("GET", "/recommendations?user=u1&k=6")
    assert status == 200, plain
    assert plain["ranked_by"] == "page@1" and all("reasons" not in it for it in plain["items"])
    status, _, body = api.call("GET", "/recommendations?user=u1&k=6&reasons=true")
    assert status == 200, body
    assert body["ranked_by"] == "page@1" and body["path"] == "profile" and "reasons" in body["timings_ms"]
    # asking for reasons does not change the ranking
    assert [it["item_id"] for it in body["items"]] == [it["item_id"] for it in plain["items"]]
    cited_titles = {titles[i] for i in liked["u1"]}
    own_topic = [it for it in body["items"] if _topic(it["item_id"]) == "cooking"]  # u1's topic
    assert own_topic and own_topic == body["items"][: len(own_topic)]
    for it in body["items"]:
        assert isinstance(it["reasons"], list) and len(it["reasons"]) <= 2
        assert all(set(r) == {"code", "text"} and r["code"] in TEXTS for r in it["reasons"])
    for it in own_topic:  # the model reads cos_profile alone: the user's likes are the reason
        assert [r["code"] for r in it["reasons"]] == ["liked"], it
        text = it["reasons"][0]["text"]
        assert text.startswith("because you liked ") and text.removeprefix("because you liked ") in cited_titles
    status, _, post = api.call("POST", "/recommendations", {"user": "u1", "k": 6, "reasons": True})
    assert status == 200 and [it.get("reasons") for it in post["items"]] == [it["reasons"] for it in body["items"]]


def test_no_reasons_where_the_model_did_not_rank(api):
    for path in (
        "/recommendations?user=u1&query=rocket%20launch&k=4&reasons=true",
        "/recommendations?query=rocket%20launch&k=4&reasons=true",
    ):
        status, _, body = api.call("GET", path)
        assert status == 200, body
        assert body["ranked_by"] is None and body["items"], body
        assert all("reasons" not in it and "score" not in it for it in body["items"])


def test_reasons_parameter_is_validated_and_documented(api):
    status, _, body = api.call("GET", "/recommendations?user=u1&reasons=maybe")
    assert status == 422 and body["error"]["message"].startswith("query.reasons:"), body
    status, _, body = api.call("POST", "/recommendations", {"user": "u1", "reasons": "yes"})
    assert status == 422 and body["error"]["message"].startswith("reasons:"), body
    status, _, body = api.call("GET", "/recommendations?user=u1&reason=true")
    assert (
        status == 422
        and "unknown parameter(s) reason;" in body["error"]["message"]
        and "reasons" in body["error"]["message"]
    ), body
    status, _, spec = api.call("GET", "/openapi.json")
    schemas = spec["components"]["schemas"]
    assert "reasons" in schemas["RecommendRequest"]["properties"] and "ItemReason" in schemas
    assert "reasons" in schemas["RecommendedItem"]["properties"]
    assert "reasons" in {p["name"] for p in spec["paths"]["/recommendations"]["get"]["parameters"]}
    assert "/" not in spec["paths"]


def test_the_page_and_its_files_are_served(api, page_keys):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.request("GET", "/")
    resp = conn.getresponse()
    html = resp.read().decode()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/html")
    assert f'<meta name="vecrank-api-key" content="{page_keys[0]}">' in html  # --page-key, as it is served
    assert resp.getheader("cache-control") == "no-store"
    assert "script-src 'self'" in resp.getheader("content-security-policy")
    assert 'src="static/page.js"' in html and 'href="static/page.css"' in html
    for path, kind in (("/static/page.js", "javascript"), ("/static/page.css", "text/css")):
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and kind in resp.getheader("content-type") and resp.read()
    conn.close()
    status, _, body = api.call("GET", "/static/missing.js")
    assert status == 404 and body["error"]["status"] == 404


# --- the page in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if os.environ.get("VECRANK_TEST_NO_BROWSER") == "1":
        pytest.skip("VECRANK_TEST_NO_BROWSER=1: the search page's browser tests are skipped")
    chromium = os.environ.get("VECRANK_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("VECRANK_TEST_CHROMEDRIVER") or shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            f"the search page test needs Debian's chromium and chromium-driver (chromium: {chromium or 'missing'}, "
            f"chromedriver: {driver or 'missing'}): apt-get install -y chromium chromium-driver "
            "(scripts/test.sh does it when run as root), or set VECRANK_TEST_NO_BROWSER=1 to skip these tests",
            pytrace=False,
        )
    tmp = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--window-size=1200,1000",
        f"--user-data-dir={tmp / 'profile'}",
        # nothing but loopback: any other host name resolves nowhere
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    try:
        drv = webdriver.Chrome(
            options=options, service=ChromeService(executable_path=driver, log_output=str(tmp / "chromedriver.log"))
        )
    except Exception as exc:
        log = (
            (tmp / "chromedriver.log").read_text(errors="replace")[-2000:]
            if (tmp / "chromedriver.log").exists()
            else ""
        )
        pytest.fail(f"chromium ({chromium}) did not start under {driver}: {exc}\n{log}", pytrace=False)
    drv.set_page_load_timeout(WAIT_S)
    yield drv
    drv.quit()


def _text(drv, element_id: str) -> str:
    return drv.find_element(By.ID, element_id).text


def _search(drv, *, user: str | None = None, query: str | None = None, previous: str = "") -> str:
    """Fill the form, submit, wait for a new answer; returns its request id."""
    for element_id, value in (("user", user), ("query", query)):
        if value is not None:
            box = drv.find_element(By.ID, element_id)
            box.clear()
            box.send_keys(value)
    drv.find_element(By.ID, "query").send_keys(Keys.ENTER)
    return _answer(drv, previous)


def _answer(drv, previous: str = "") -> str:
    def ready(d):
        rid = d.find_element(By.ID, "meta-request").text
        busy = d.find_element(By.ID, "results").get_attribute("aria-busy")
        return rid if rid and rid != previous and busy is None else False

    try:
        return WebDriverWait(drv, WAIT_S, poll_frequency=0.1).until(ready)
    except TimeoutException:
        raise AssertionError(f"no new results; the page says {_text(drv, 'status')!r}") from None


def _results(drv) -> list:
    return drv.find_elements(By.CSS_SELECTOR, "#results > li.result")


def test_search_reasons_and_a_recorded_click(browser, api, world, es):
    settings, liked, titles = world
    browser.get(f"{api.url}/")
    assert browser.title == "vecrank search"

    # a user and a query: ranked by retrieval (the model is trained for the profile path only)
    rid = _search(browser, user="u1", query="astronauts on a rocket launch")
    shown = _results(browser)
    assert len(shown) == 10 and _text(browser, "status") == "10 results"
    assert (
        _text(browser, "meta-arm"),
        _text(browser, "meta-model"),
        _text(browser, "meta-ranked"),
        _text(browser, "meta-path"),
    ) == ("none", "page@1", "retrieval order", "profile+query")
    assert len(rid) == 32 and browser.find_element(By.ID, "meta").is_displayed()
    top = shown[0]
    assert _topic(top.get_attribute("data-item-id")) == "space"
    assert top.find_element(By.CSS_SELECTOR, ".title").text == titles[top.get_attribute("data-item-id")]
    assert "topic: space" in top.find_element(By.CSS_SELECTOR, ".fields").text
    assert not browser.find_elements(By.CSS_SELECTOR, ".reason")

    # the user alone: the model ranks, and says why
    rid = _search(browser, query="", previous=rid)
    assert (_text(browser, "meta-model"), _text(browser, "meta-ranked"), _text(browser, "meta-path")) == (
        "page@1",
        "page@1",
        "profile",
    )
    shown = _results(browser)
    assert len(shown) == 10 and "score " in shown[0].find_element(By.CSS_SELECTOR, ".score").text
    first = shown[0]
    item_id = first.get_attribute("data-item-id")
    assert _topic(item_id) == "cooking" and item_id not in liked["u1"]  # u1's topic, unseen
    reason = first.find_element(By.CSS_SELECTOR, ".reason")
    assert reason.get_attribute("data-code") == "liked"
    assert reason.text.removeprefix("because you liked ") in {titles[i] for i in liked["u1"]}, reason.text
    assert browser.current_url.endswith("/?user=u1")

    # a click: posted with the request id and position, then marked
    first.find_element(By.CSS_SELECTOR, "button.pick").click()
    WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(lambda d: "clicked" in first.get_attribute("class"))
    assert first.find_element(By.CSS_SELECTOR, ".note").text == "clicked"
    assert first.find_element(By.CSS_SELECTOR, "button.pick").get_attribute("aria-pressed") == "true"
    events = settings.index("events")
    es.indices.refresh(index=events)
    hits = es.search(
        index=events, query={"bool": {"filter": [{"term": {"request_id": rid}}, {"term": {"type": "click"}}]}}
    )["hits"]["hits"]
    assert len(hits) == 1, hits
    click = hits[0]["_source"]
    assert (click["user_id"], click["item_id"], click["position"], click["model_version"]) == (
        "u1",
        item_id,
        1,
        "page@1",
    )
    posted = sum(path == "/events" for path, _ in api.recorder.seen)
    first.find_element(By.CSS_SELECTOR, "button.pick").click()  # a second click on it posts nothing more
    assert browser.execute_script("return 1") == 1 and sum(path == "/events" for path, _ in api.recorder.seen) == posted


def test_no_user_no_click_event_and_the_key_setting(browser, api, world, es, page_keys):
    settings, _, _ = world
    page_key, reader_key = page_keys
    seen = api.recorder.seen
    # no user: results, but a click cannot be recorded, and the page says so
    browser.get(f"{api.url}/?q=haunted%20house")
    rid = _answer(browser)
    assert _topic(_results(browser)[0].get_attribute("data-item-id")) == "horror"
    first = _results(browser)[0]
    first.find_element(By.CSS_SELECTOR, "button.pick").click()
    WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(
        lambda d: first.find_element(By.CSS_SELECTOR, ".note").text == "pick a user to record clicks"
    )
    assert "clicked" not in first.get_attribute("class")
    assert {auth for path, auth in seen if path in ("/recommendations", "/events")} == {
        f"Bearer {page_key}".encode()
    }  # the page's own key, from its meta tag
    es.indices.refresh(index=settings.index("events"))
    assert es.count(index=settings.index("events"), query={"term": {"request_id": rid}})["count"] == 0

    # a key in the page setting wins over the page's: every API call carries it
    browser.execute_script(f"window.localStorage.setItem('vecrank.apiKey', '{reader_key}')")
    try:
        del seen[:]
        browser.get(f"{api.url}/?user=u2")
        _answer(browser)
        first = _results(browser)[0]
        first.find_element(By.CSS_SELECTOR, "button.pick").click()
        WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(lambda d: "clicked" in first.get_attribute("class"))
        calls = [(path, auth) for path, auth in seen if path in ("/recommendations", "/events")]
        assert [p for p, _ in calls] == ["/recommendations", "/events"], seen
        assert {auth for _, auth in calls} == {f"Bearer {reader_key}".encode()}
        assert all(auth is None for path, auth in seen if path.startswith("/static/") or path == "/")
    finally:
        browser.execute_script("window.localStorage.removeItem('vecrank.apiKey')")
