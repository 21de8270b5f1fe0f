"""The local node's life cycle on a real distribution: two nodes, idempotent up, down, start failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clihelp import run_cli
from conftest import REPO

pytestmark = pytest.mark.slow


def test_two_node_cluster_up_status_down(capsys, tmp_path_factory):
    state = Path(tmp_path_factory.mktemp("two-nodes"))
    base = ["--state-dir", str(state)]
    result = run_cli(capsys, *base, "es", "up", "--nodes", "2", "--port", "9260", "--heap", "256m", "--json")
    try:
        assert result.code == 0, result.err
        up = json.loads(result.out)
        assert up["started"] is True and up["nodes"] == 2 and up["url"] == "https://127.0.0.1:9260"
        password_file = Path(up["password_file"])
        assert password_file.stat().st_mode & 0o777 == 0o600

        result = run_cli(capsys, *base, "es", "status", "--json")
        assert result.code == 0, result.err
        report = json.loads(result.out)
        assert report["cluster"]["nodes"] == 2
        assert report["cluster"]["node_names"] == ["vecrank-1", "vecrank-2"]
        assert report["cluster"]["security"] == "on"
        assert report["local_node"]["state"] == "running"
        assert {r["setting"]: r["source"] for r in report["settings"]}["es_password"].startswith("local node")

        again = run_cli(capsys, *base, "es", "up", "--nodes", "2", "--port", "9260")
        assert again.code == 0 and "already running" in again.out

        logs = run_cli(capsys, *base, "es", "logs", "-n", "5", "--node", "vecrank-2")
        assert logs.code == 0 and logs.out.startswith("==> vecrank-2: ") and "vecrank-1" not in logs.out.splitlines()[0]
    finally:
        down = run_cli(capsys, *base, "es", "down")
    assert down.code == 0 and down.out.strip() == "Stopped vecrank-1, vecrank-2."
    after = run_cli(capsys, *base, "es", "status")
    assert after.code == 1 and "cannot reach https://127.0.0.1:9260" in after.err
    assert run_cli(capsys, *base, "es", "down").out.strip() == "No running local node to stop."


def test_down_leaves_other_nodes_alone(capsys, es_settings, tmp_path):
    """`down` on a state folder that started nothing must not touch the test cluster."""
    assert run_cli(capsys, "--state-dir", str(tmp_path), "es", "down").out.strip() == "No running local node to stop."
    from vecrank.client import make_client

    assert make_client(es_settings).cluster.health()["status"] in {"green", "yellow"}


def test_a_node_that_fails_to_start_shows_why_and_its_log(capsys, tmp_path_factory):
    state = Path(tmp_path_factory.mktemp("bad-node"))
    result = run_cli(
        capsys, "--state-dir", str(state), "es", "up", "--port", "9270", "--setting", "vecrank.no.such.setting=1"
    )
    assert result.code == 1
    first, *rest = result.err.strip().splitlines()
    assert first.startswith("error: node vecrank-1 failed to start: unknown setting [vecrank.no.such.setting]")
    assert "--- last lines of the Elasticsearch log ---" in rest
    assert run_cli(capsys, "--state-dir", str(state), "es", "down").code == 0


def test_scripts_work_without_the_package(tmp_path):
    """scripts/es-local runs from the checkout with a bare python3 (no vecrank, no click)."""
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "VECRANK_STATE_DIR": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "es-local"), "status"],
        capture_output=True,
        text=True,
        env={**env, "PYTHON": "python3" if Path("/usr/bin/python3").exists() else "python3"},
    )
    assert proc.returncode == 1  # nothing set up in this state folder
    assert json.loads(proc.stdout)["state"] == "not set up"
