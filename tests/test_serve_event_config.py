"""The site's event types and plausibility bounds, declared once with the same options for
`vecrank ingest events` and `vecrank serve`: POST /events accepts the declared types (and its
OpenAPI spec lists them), and both paths refuse the same implausible rows."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from clihelp import connection_args, run_cli
from test_serve import Server

T0 = 1_600_000_000  # 2020-09-13
SITE_TYPES = ["--event-type", "view=1", "--event-type", "like=2", "--event-type", "dislike=1"]
SITE_TYPES += ["--event-type", "rating=1", "--negative", "dislike"]
SITE_BOUNDS = ["--rating-range", "1", "5", "--min-timestamp", "2019-01-01", "--max-future", "0"]


@pytest.fixture(scope="module")
def world(es, es_settings, tmp_path_factory):
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.items import ItemSource, ingest_items

    settings = dataclasses.replace(es_settings, index_prefix=f"vrc-{uuid.uuid4().hex[:10]}")
    tmp = tmp_path_factory.mktemp("event-config")
    rows = [{"id": f"i{n}", "title": f"Item {n}"} for n in range(4)]
    (tmp / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ingest_items(es, settings, tmp / "items.jsonl", ItemSource(template="{title}"), embedder=Embedder()).written
    yield settings
    names = list(es.indices.get(index=f"{settings.index_prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


def _serve_config(monkeypatch, capsys, settings, *options):
    """The ServeConfig `vecrank serve OPTIONS` builds (create_app and uvicorn are caught)."""
    import uvicorn

    import vecrank.serve.app
    from vecrank.cli import main

    seen = {}
    monkeypatch.setattr(vecrank.serve.app, "create_app", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    code = main([*connection_args(settings), "--index-prefix", settings.index_prefix, "serve", "--no-auth", *options])
    assert code == 0
    return seen["config"]


def test_serve_takes_the_site_types_and_bounds_with_ingests_options(world, monkeypatch, capsys):
    from vecrank.ingest.events import EventBounds, EventTypes
    from vecrank.serve import ServeConfig

    config = _serve_config(monkeypatch, capsys, world, *SITE_TYPES, *SITE_BOUNDS)
    assert config.event_types == EventTypes(
        weights={"view": 1, "like": 2, "dislike": 1, "rating": 1}, negative=frozenset({"dislike"})
    )
    assert config.event_bounds == EventBounds(
        min_timestamp_ms=1_546_300_800_000, max_future_s=0, rating_range=(1.0, 5.0)
    )
    assert ServeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # what workers get
    assert _serve_config(monkeypatch, capsys, world) == ServeConfig(model_id="vecrank")  # the defaults
    monkeypatch.undo()
    result = run_cli(capsys, "serve", "--no-auth", "--rating-range", "5", "1")
    assert result.code == 2 and "--rating-range" in result.err and "smaller first" in result.err
    result = run_cli(capsys, "serve", "--no-auth", "--min-timestamp", "last tuesday")
    assert result.code == 2 and "--min-timestamp" in result.err


def test_post_events_accepts_the_declared_types_and_the_spec_lists_them(world, es):
    from vecrank.cli._common import event_types_from
    from vecrank.serve import RecommendService, ServeConfig, create_app

    types = event_types_from({"view": "1", "like": "2", "dislike": "1"}, ("dislike",))
    service = RecommendService(world, ServeConfig(event_types=types, log_exposures=False, log_features=False))
    try:
        with Server(create_app(service, threads=2, auth=False, warm_up=False)) as api:
            _, _, spec = api.call("GET", "/openapi.json")
            type_schema = spec["components"]["schemas"]["EventIn"]["properties"]["type"]
            assert type_schema["enum"] == ["dislike", "like", "view"]
            events = [
                {"user": "u1", "item": "i1", "type": "like", "timestamp": T0},
                {"user": "u1", "item": "i2", "type": "dislike", "timestamp": T0 + 1},
                {"user": "u1", "item": "i3", "type": "click", "timestamp": T0 + 2},  # not this site's
            ]
            status, _, body = api.call("POST", "/events", {"events": events})
            assert status == 200 and body["accepted"] == 2, body
            assert [(r["index"], r["field"], r["reason"]) for r in body["rejected"]] == [
                (2, "type", "unknown event type")
            ]
            es.indices.refresh(index=world.index("events"))
            stored = es.search(index=world.index("events"), query={"term": {"user_id": "u1"}}, size=10)["hits"]
            assert sorted(h["_source"]["type"] for h in stored["hits"]) == ["dislike", "like"]
    finally:
        service.close()
    # The built-in service still refuses them and lists its own types.
    spec = create_app(object(), auth=False).openapi()
    assert "like" not in spec["components"]["schemas"]["EventIn"]["properties"]["type"]["enum"]


def test_ingest_events_takes_the_same_options(world, es, capsys, tmp_path):
    rows = [
        {"user": "w1", "item": "i1", "type": "like", "timestamp": T0},
        {"user": "w1", "item": "i2", "type": "rating", "value": 4, "timestamp": T0},
        {"user": "w1", "item": "i3", "type": "rating", "value": 0.5, "timestamp": T0},  # below 1
        {"user": "w1", "item": "i0", "type": "view", "timestamp": "2018-06-01"},  # before 2019
        {"user": "w1", "item": "i1", "type": "view", "timestamp": 4_000_000_000},  # 2096
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dead = tmp_path / "dead.jsonl"
    args = [*connection_args(world), "--index-prefix", world.index_prefix, "ingest", "events", str(path)]
    result = run_cli(capsys, *args, *SITE_TYPES, *SITE_BOUNDS, "--dead-letter", str(dead), "--json")
    assert result.code == 1, result.err  # some rows failed
    summary = json.loads(result.out)
    assert (summary["written"], summary["failed"]) == (2, 3), summary
    assert summary["reasons"] == {"implausible rating": 1, "implausible timestamp": 2}
    # Without the options the same file meets the built-in types and bounds instead.
    again = run_cli(capsys, *args, "--dead-letter", str(tmp_path / "dead2.jsonl"), "--json")
    reasons = json.loads(again.out)["reasons"]
    assert reasons.get("unknown event type") == 3 and "implausible rating" not in reasons, reasons
