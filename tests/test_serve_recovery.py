"""The service outlives its Elasticsearch: 503 with Retry-After while the node is down, and the
same process serves again once the node is back. Runs its own node (port and state folder of its
own) so the shared test node is never stopped."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_serve import Server

PORT = int(os.environ.get("VECRANK_TEST_RECOVERY_PORT", "9276"))
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_service_recovers_after_the_node_restarts(tmp_path, es_settings):
    if es_settings.es_url != f"https://127.0.0.1:{int(os.environ.get('VECRANK_TEST_PORT', '9250'))}":
        pytest.skip("needs the local node setup (starts and stops a node of its own)")
    from vecrank import localnode
    from vecrank.client import make_client
    from vecrank.ingest.embed import Embedder
    from vecrank.ingest.events import ingest_events
    from vecrank.ingest.items import ItemSource, ingest_items
    from vecrank.rank.store import refresh_profiles
    from vecrank.serve import RecommendService, ServeConfig, create_app
    from vecrank.settings import Settings

    base = tmp_path / "state"
    localnode.up(port=PORT, base=base, heap="256m")
    try:
        settings = Settings.load(
            {"index_prefix": "recovery"}, env={}, config_path=REPO / "tests/data/empty-config.toml", state_dir=base
        )
        client = make_client(settings)
        items = [
            {"id": f"i{n}", "title": f"A story about {w}"}
            for n, w in enumerate(["dogs", "cats", "rockets", "bread", "ghosts", "tennis", "storms", "pirates"])
        ]
        (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
        ingest_items(client, settings, tmp_path / "items.jsonl", ItemSource(template="{title}"), embedder=Embedder())
        (tmp_path / "events.jsonl").write_text(
            json.dumps({"user": "u1", "item": "i0", "type": "rating", "value": 5, "timestamp": 1_600_000_000}) + "\n"
        )
        ingest_events(client, settings, tmp_path / "events.jsonl", progress=False, refresh_states=refresh_profiles)

        service = RecommendService(settings, ServeConfig(experiment_refresh_s=0.5, model_refresh_s=0.5))
        with Server(create_app(service, threads=4, auth=False)) as api:  # about outages, not API keys
            status, _, body = api.call("GET", "/recommendations?user=u1&k=3")
            assert status == 200 and body["path"] == "profile" and len(body["items"]) == 3, body
            assert api.call("GET", "/health")[0] == 200

            localnode.down(base=base)
            status, headers, body = api.call("GET", "/recommendations?user=u1&k=3")
            assert status == 503, body
            assert headers["retry-after"] == "5" and "retry later" in body["error"]["message"]
            assert body["request_id"] == headers["x-request-id"]
            status, headers, health = api.call("GET", "/health")
            assert status == 503 and health["elasticsearch"]["status"] == "unreachable"
            assert headers["retry-after"] == "5"
            status, _, body = api.call("POST", "/events", {"events": [{"user": "u1", "item": "i1", "type": "click"}]})
            assert status == 503, body
            assert api.thread.is_alive()

            localnode.up(port=PORT, base=base, heap="256m")
            deadline, status = time.monotonic() + 120, None
            while time.monotonic() < deadline:
                status, _, body = api.call("GET", "/recommendations?user=u1&k=3")
                if status == 200:
                    break
                assert status == 503, body  # nothing else while it comes back
                time.sleep(1)
            assert status == 200 and len(body["items"]) == 3
            assert api.call("GET", "/health")[0] == 200
            status, _, out = api.call(
                "POST",
                "/events",
                {"events": [{"user": "u1", "item": "i1", "type": "click", "request_id": body["request_id"]}]},
            )
            assert status == 200 and out["attributed"] == 1
            assert service.writer.flush(30)  # exposures written after the restart
            client.indices.refresh(index=settings.index("events"))
            shown = client.count(index=settings.index("events"), query={"term": {"request_id": body["request_id"]}})
            assert shown["count"] == 4  # three impressions and the click
        service.close()
    finally:
        localnode.down(base=base, purge=True)
