"""Fixtures for tests against a real Elasticsearch.

Where the cluster comes from, in order: ``VECRANK_ES_URL`` (with the other ``VECRANK_ES_*``
variables), else Docker through pytest-docker when a Docker engine answers (``docker/``), else a
local node that vecrank starts once per test session (reused if it is already running, stopped
at the end only if this session started it; ``VECRANK_TEST_KEEP_NODE=1`` leaves it running).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
TEST_STATE = Path(os.environ.get("VECRANK_TEST_STATE_DIR", REPO / ".vecrank-test"))
TEST_PORT = int(os.environ.get("VECRANK_TEST_PORT", "9250"))


def _docker_answers() -> bool:
    if os.environ.get("VECRANK_TEST_DOCKER", "auto") == "0" or shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(REPO / "docker" / "docker-compose.yml")


@pytest.fixture(scope="session")
def es_settings(request: pytest.FixtureRequest):
    """Settings for the test cluster; nothing from the developer's config file leaks in."""
    from vecrank.settings import Settings

    env = {k: v for k, v in os.environ.items() if k.startswith("VECRANK_")}
    env.pop("VECRANK_CONFIG", None)
    no_config = REPO / "tests" / "data" / "empty-config.toml"
    if env.get("VECRANK_ES_URL"):
        yield Settings.load(env=env, config_path=no_config)
        return

    if _docker_answers():
        password = secrets.token_urlsafe(16)
        os.environ["ELASTIC_PASSWORD"] = password
        services = request.getfixturevalue("docker_services")
        ip = request.getfixturevalue("docker_ip")
        url = f"http://{ip}:{services.port_for('elasticsearch', 9200)}"
        settings = Settings.load(
            {"es_url": url, "es_user": "elastic", "es_password": password}, env={}, config_path=no_config
        )
        from vecrank.client import make_client

        client = make_client(settings)

        def healthy() -> bool:
            try:
                return client.cluster.health(wait_for_status="yellow", timeout="1s")["status"] != "red"
            except Exception:
                return False

        services.wait_until_responsive(check=healthy, timeout=180.0, pause=2.0)
        yield settings
        return

    from vecrank import localnode

    result = localnode.up(port=TEST_PORT, base=TEST_STATE)
    try:
        yield Settings.load(env={}, config_path=no_config, state_dir=TEST_STATE)
    finally:
        if result.started and os.environ.get("VECRANK_TEST_KEEP_NODE") != "1":
            localnode.down(base=TEST_STATE)


@pytest.fixture(scope="session")
def es(es_settings):
    from vecrank.client import make_client

    client = make_client(es_settings)
    yield client
    client.close()


@pytest.fixture
def index_prefix(es, es_settings):
    """A unique index prefix for one test; every index and alias under it is deleted afterwards."""
    prefix = f"vrt-{uuid.uuid4().hex[:10]}"
    yield prefix
    names = list(es.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        es.indices.delete(index=",".join(names))


@pytest.fixture
def settings_for(es_settings, index_prefix):
    """The test cluster's settings with this test's index prefix."""
    import dataclasses

    return dataclasses.replace(es_settings, index_prefix=index_prefix)


@pytest.fixture(scope="session")
def plugin_es(es, es_settings):
    """The test cluster with the vecrank rescorer plugin loaded.

    On the local test node the plugin is built from ``plugin/`` when the zip is missing or older
    than the sources (Maven runs the Java unit tests then) and installed, which restarts the node
    once; an up-to-date install changes nothing. Another cluster must have the plugin already, or
    the test is skipped.
    """
    from vecrank.localnode import LocalCluster
    from vecrank.rank.rescore import plugin_installed

    local = LocalCluster.load(TEST_STATE)
    if local is None or local.url != es_settings.es_url:
        if not plugin_installed(es):
            pytest.skip("the cluster under test lacks the vecrank-rescorer plugin and was not started by vecrank")
        return es
    from vecrank.localnode import plugin

    plugin.install(base=TEST_STATE)
    es.cluster.health(wait_for_status="yellow", timeout="60s")
    assert plugin_installed(es), "the plugin was installed but the node did not load it"
    return es
