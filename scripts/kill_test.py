#!/usr/bin/env python3
"""Kill test: SIGKILL ``vecrank ingest events`` and ``vecrank serve`` mid-batch, retry, check nothing is lost.

In a throw-away index prefix on a running node (``vecrank es up`` first) with a small catalog:

* ``ingest`` — for each of ``--points`` rounds, a new file of ``--events`` ratings from ``--users``
  users; ``vecrank ingest events`` is started and killed (SIGKILL) once a random share of the
  file's events is stored, then run again to the end;
* ``service`` — for each round, ``vecrank serve --no-auth`` on loopback is sent the round's events
  in batches of ``--batch`` on ``POST /events`` and killed at a random moment while a batch is in
  flight; it is started again and every batch is posted again (what a client that never got its
  answer does).

After each round: every event is once in the events index (none lost, none twice), and every
user's stored history and count are what the events index implies (the newest 200 interactions,
their number), computed here from the events themselves. Prints one line per round and a
summary (``--json``); exits 1 on any mismatch.

Usage:
    .venv/bin/python scripts/kill_test.py [--mode ingest,service] [--points 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

T0 = 1_700_000_000  # epoch seconds of the first event
ITEMS = 20


def _cli(settings, *args: str) -> list[str]:
    """The CLI on the same cluster (it resolves the connection as this process did) and prefix."""
    return [sys.executable, "-m", "vecrank", "--index-prefix", settings.index_prefix, *args]


def _env(settings) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def _rows(round_: int, events: int, users: int) -> list[dict]:
    rng = random.Random(round_)
    return [
        {
            "user": f"k{n % users}",
            "item": f"m{rng.randrange(ITEMS)}",
            "type": "rating",
            "value": rng.choice([2.0, 3.5, 4.0, 5.0]),
            "timestamp": T0 + round_ * 200_000 + n,
        }
        for n in range(events)
    ]


def _count(client, index: str) -> int:
    if not client.indices.exists(index=index):
        return 0
    client.indices.refresh(index=index)
    return client.count(index=index)["count"]


def _mismatches(client, settings, users: int) -> list[str]:
    """Users whose stored history or count differ from what the events index implies."""
    events, out = settings.index("events"), []
    client.indices.refresh(index=events)
    for n in range(users):
        user = f"k{n}"
        hits = client.search(
            index=events,
            size=200,
            track_total_hits=True,
            query={"bool": {"filter": [{"term": {"user_id": user}}], "must_not": [{"term": {"type": "impression"}}]}},
            sort=[{"timestamp": "desc"}, {"event_id": "desc"}],
        )["hits"]
        implied = ([h["_source"]["event_id"] for h in hits["hits"]], hits["total"]["value"])
        doc = client.options(ignore_status=404).get(index=settings.index("users"), id=user)
        source = doc.body.get("_source") or {}
        stored = ([e["event_id"] for e in source.get("history") or []], source.get("n_events"))
        if implied[1] and stored != implied:
            out.append(
                f"{user}: stored {len(stored[0])} entries / n_events {stored[1]}, implied {len(implied[0])} / "
                f"{implied[1]}"
            )
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, batch: list[dict], timeout: float = 30.0) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/events",
        data=json.dumps({"events": batch}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def _start_service(settings, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        _cli(settings, "serve", "--no-auth", "--port", str(port), "--no-exposures", "--no-feature-log"),
        env=_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("vecrank serve did not start within 120 s")


def ingest_round(client, settings, round_: int, args, tmp: Path) -> dict:
    rows = _rows(round_, args.events, args.users)
    path = tmp / f"events-{round_}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = _cli(settings, "ingest", "events", str(path), "--batch-size", "50", "--json")
    events = settings.index("events")
    before = _count(client, events)
    kill_at = random.Random(1000 + round_).randint(1, args.events - 1)
    proc = subprocess.Popen(cmd, env=_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and _count(client, events) - before < kill_at:
        time.sleep(0.02)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored_at_kill = _count(client, events) - before
    rerun = subprocess.run(cmd, env=_env(settings), capture_output=True, text=True, timeout=600)
    return {
        "mode": "ingest",
        "round": round_,
        "killed": killed,
        "stored_at_kill": stored_at_kill,
        "rerun_rc": rerun.returncode,
        "events": _count(client, events) - before,
    }


def service_round(client, settings, round_: int, args) -> dict:
    rows = _rows(round_, args.events, args.users)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    events = settings.index("events")
    before = _count(client, events)
    port = _free_port()
    proc = _start_service(settings, port)
    rng = random.Random(2000 + round_)
    victim = rng.randrange(len(batches))
    for n, batch in enumerate(batches):
        if n < victim:
            _post(port, batch)
            continue
        sender = threading.Thread(target=lambda b=batch: _try_post(port, b), daemon=True)
        sender.start()
        time.sleep(rng.uniform(0.0, 0.15))  # somewhere inside the batch: parsing, bulk, users
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sender.join(timeout=30)
        break
    stored_at_kill = _count(client, events) - before
    proc = _start_service(settings, port)
    try:
        statuses = [_post(port, batch) for batch in batches]  # the client posts again what it sent
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "mode": "service",
        "round": round_,
        "killed_in_batch": victim,
        "stored_at_kill": stored_at_kill,
        "retry_ok": all(s == 200 for s in statuses),
        "events": _count(client, events) - before,
    }


def _try_post(port: int, batch: list[dict]) -> None:
    try:
        _post(port, batch, timeout=10)
    except OSError:
        pass  # the service died under it: the client never got its answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="ingest,service", help="ingest, service or both (comma-separated)")
    parser.add_argument("--points", type=int, default=20, help="kill points (rounds) per mode")
    parser.add_argument("--events", type=int, default=1000, help="events per round")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--batch", type=int, default=50, help="events per POST /events (service mode)")
    parser.add_argument("--keep", action="store_true", help="keep the throw-away indices")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from vecrank.client import make_client
    from vecrank.settings import Settings

    settings = replace(Settings.load(), index_prefix=f"killtest-{uuid.uuid4().hex[:8]}")
    client = make_client(settings)
    results, failures = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        catalog = tmp / "items.jsonl"
        catalog.write_text(
            "".join(json.dumps({"id": f"m{n}", "title": f"film number {n}"}) + "\n" for n in range(ITEMS))
        )
        subprocess.run(
            _cli(settings, "ingest", "items", str(catalog), "--template", "{title}"),
            env=_env(settings),
            check=True,
            capture_output=True,
        )
        try:
            for mode in [m.strip() for m in args.mode.split(",") if m.strip()]:
                for round_ in range(args.points):
                    r = (
                        ingest_round(client, settings, round_, args, tmp)
                        if mode == "ingest"
                        else service_round(client, settings, 100 + round_, args)
                    )
                    bad = _mismatches(client, settings, args.users)
                    r["lost_or_duplicated"] = r["events"] - args.events
                    r["users_wrong"] = len(bad)
                    results.append(r)
                    if r["lost_or_duplicated"] or bad:
                        failures.append({**r, "examples": bad[:3]})
                    if not args.json:
                        print(json.dumps(r), file=sys.stderr, flush=True)
        finally:
            if not args.keep:
                for name in client.indices.get(index=f"{settings.index_prefix}-*", expand_wildcards="all"):
                    client.indices.delete(index=name)
    summary = {"rounds": len(results), "failures": len(failures), "results": results, "failed": failures}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{len(results)} kill rounds: {len(failures)} with a lost, duplicated or unmerged event")
        for f in failures[:5]:
            print(f"  {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
