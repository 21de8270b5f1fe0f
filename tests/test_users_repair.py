"""Events never half-applied: whatever stopped a batch after its events were stored, a retry, a
rerun or `vecrank users rebuild` brings each user to exactly what the events index implies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from clihelp import connection_args, run_cli

from vecrank.ingest.embed import Embedder
from vecrank.ingest.events import ingest_events
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.rank.store import refresh_profiles

T0 = 1_700_000_000  # epoch seconds
ITEMS = [
    {"id": f"m{n}", "title": f"A film about {w}"}
    for n, w in enumerate("space cooking horror sport music history war love crime school".split())
]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def catalog(es, settings_for, embedder, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    ingest_items(es, settings_for, path, ItemSource(template="{title}"), embedder=embedder)


def _events(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rating(user, n, t, value=4.5):
    return {"user": user, "item": f"m{n % len(ITEMS)}", "type": "rating", "value": value, "timestamp": T0 + t}


def _implied(es, settings, user):
    """What the events index says the user's document holds (computed here, independently)."""
    es.indices.refresh(index=settings.index("events"))
    hits = es.search(
        index=settings.index("events"),
        size=200,
        track_total_hits=True,
        query={"bool": {"filter": [{"term": {"user_id": user}}], "must_not": [{"term": {"type": "impression"}}]}},
        sort=[{"timestamp": "desc"}, {"event_id": "desc"}],
    )["hits"]
    return [h["_source"]["event_id"] for h in hits["hits"]], hits["total"]["value"]


def _stored(es, settings, user):
    doc = es.get(index=settings.index("users"), id=user)["_source"]
    return [e["event_id"] for e in doc["history"]], doc["n_events"], doc


def test_a_batch_stopped_before_its_users_is_repaired_by_the_retry(es, settings_for, catalog, tmp_path):
    first = _events(tmp_path / "a.jsonl", [_rating("u1", n, n * 60) for n in range(4)])
    assert ingest_events(es, settings_for, first, progress=False, refresh_states=refresh_profiles).users_updated == 1
    # The batch that "died" after its bulk: its events are stored, its users never saw them.
    later = _events(tmp_path / "b.jsonl", [_rating("u1", 7, 1000), _rating("u1", 8, 1060), _rating("u3", 2, 1000)])
    stopped = ingest_events(es, settings_for, later, update_users=False, progress=False)
    assert stopped.written == 3 and len(_stored(es, settings_for, "u1")[0]) == 4
    retry = ingest_events(es, settings_for, later, progress=False, refresh_states=refresh_profiles)
    assert (retry.written, retry.duplicates_skipped, retry.users_rebuilt) == (0, 3, 2)
    for user in ("u1", "u3"):
        history, n_events, doc = _stored(es, settings_for, user)
        assert (history, n_events) == _implied(es, settings_for, user)
        assert doc["state"]["liked"][0]["item_id"] == ("m8" if user == "u1" else "m2")  # the state followed
    assert len(_stored(es, settings_for, "u1")[0]) == 6
    # Idempotent: again, nothing changes.
    before = _stored(es, settings_for, "u1")[:2]
    ingest_events(es, settings_for, later, progress=False, refresh_states=refresh_profiles)
    assert _stored(es, settings_for, "u1")[:2] == before


def test_impressions_never_evict_interactions(es, settings_for, catalog, tmp_path):
    ingest_events(
        es,
        settings_for,
        _events(tmp_path / "a.jsonl", [_rating("u1", n, n) for n in range(3)]),
        progress=False,
        refresh_states=refresh_profiles,
    )
    shown = [{"user": "u1", "item": f"m{n % 10}", "type": "impression", "timestamp": T0 + 100 + n} for n in range(250)]
    ingest_events(
        es,
        settings_for,
        _events(tmp_path / "i.jsonl", shown),
        progress=False,
        max_history=200,
        refresh_states=refresh_profiles,
    )
    history, n_events, doc = _stored(es, settings_for, "u1")
    assert n_events == 3 and len(history) == 3 and {e["type"] for e in doc["history"]} == {"rating"}


def test_users_rebuild_restores_a_lost_or_damaged_user(es, settings_for, catalog, tmp_path, capsys):
    ingest_events(
        es,
        settings_for,
        _events(tmp_path / "a.jsonl", [_rating(u, n, n * 10) for u in ("u1", "u2") for n in range(5)]),
        progress=False,
        refresh_states=refresh_profiles,
    )
    expected = {u: _stored(es, settings_for, u)[:2] for u in ("u1", "u2")}
    es.delete(index=settings_for.index("users"), id="u1", refresh=True)
    es.update(index=settings_for.index("users"), id="u2", doc={"history": [], "n_events": 0}, refresh=True)
    args = [*connection_args(settings_for), "--index-prefix", settings_for.index_prefix]
    one = run_cli(capsys, *args, "users", "rebuild", "--user", "u1", "--json")
    assert one.code == 0 and json.loads(one.out) == {"users": 1, "rebuilt": 1}
    assert _stored(es, settings_for, "u1")[:2] == expected["u1"]
    every = run_cli(capsys, *args, "users", "rebuild", "--json")
    assert every.code == 0 and json.loads(every.out) == {"users": 2, "rebuilt": 2}
    assert {u: _stored(es, settings_for, u)[:2] for u in ("u1", "u2")} == expected
    assert "state" in _stored(es, settings_for, "u2")[2]


@pytest.mark.slow
def test_ingest_killed_at_any_point_then_rerun_loses_and_duplicates_nothing(es, settings_for, catalog, tmp_path):
    users = [f"k{n}" for n in range(40)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    events_index = settings_for.index("events")
    for round_, kill_at in enumerate((150, 700, 1300, 1900)):
        rows = [_rating(users[n % 40], n, round_ * 100_000 + n, value=4.0 + (n % 2)) for n in range(2000)]
        path = _events(tmp_path / f"r{round_}.jsonl", rows)
        cmd = [
            sys.executable,
            "-m",
            "vecrank",
            *connection_args(settings_for),
            "--index-prefix",
            settings_for.index_prefix,
            "ingest",
            "events",
            str(path),
            "--batch-size",
            "50",
            "--json",
        ]
        stored_before = es.count(index=events_index)["count"] if es.indices.exists(index=events_index) else 0
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if es.indices.exists(index=events_index):
                es.indices.refresh(index=events_index)
                if es.count(index=events_index)["count"] - stored_before >= kill_at:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the ingest finished before it could be killed; make the file larger"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        summary = json.loads(rerun.stdout)
        assert summary["written"] + summary["duplicates_skipped"] == 2000 and summary["reconciles"]
        assert es.count(index=events_index)["count"] == stored_before + 2000  # none lost, none twice
        for user in users:
            history, n_events, _ = _stored(es, settings_for, user)
            assert (history, n_events) == _implied(es, settings_for, user), (round_, user)


def test_the_services_retry_of_a_stored_batch_reaches_the_users(es, settings_for, catalog, tmp_path):
    from vecrank.serve.service import RecommendService, ServeConfig

    batch = [{"user": "s1", "item": f"m{n}", "type": "click", "timestamp": T0 + n} for n in range(5)]
    # The first attempt: Elasticsearch applied the bulk, the answer never came back (the same
    # events, stored without their users, as ingest's pipeline would have left them).
    ingest_events(es, settings_for, _events(tmp_path / "s.jsonl", batch), update_users=False, progress=False)
    service = RecommendService(settings_for, ServeConfig(log_exposures=False, log_features=False))
    try:
        retry = service.record_events(batch)
    finally:
        service.close()
    assert (retry["accepted"], retry["duplicates"], retry["warnings"]) == (0, 5, [])
    history, n_events, doc = _stored(es, settings_for, "s1")
    assert (history, n_events) == _implied(es, settings_for, "s1") and n_events == 5
    assert doc["state"]["liked"][0]["item_id"] == "m4"


def test_the_service_and_ingest_name_the_same_event_alike(es, settings_for, catalog, tmp_path):
    from test_serve import Server

    from vecrank.serve import create_app
    from vecrank.serve.service import RecommendService, ServeConfig

    ingest_events(
        es,
        settings_for,
        _events(tmp_path / "f.jsonl", [{"user": 7, "item": "m1", "type": "click", "timestamp": T0}]),
        progress=False,
        refresh_states=refresh_profiles,
    )
    service = RecommendService(settings_for, ServeConfig(log_exposures=False, log_features=False))
    try:
        with Server(create_app(service, threads=2, auth=False)) as api:
            status, _, body = api.call(
                "POST", "/events", {"events": [{"user": 7.0, "item": " m1 ", "type": "click", "timestamp": T0}]}
            )
    finally:
        service.close()
    assert status == 200 and (body["accepted"], body["duplicates"]) == (0, 1), body  # the same event id
    assert _stored(es, settings_for, "7")[1] == 1
