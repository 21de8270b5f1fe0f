"""The local node's checks and configuration, without starting Elasticsearch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from vecrank.localnode import node
from vecrank.localnode.errors import LocalNodeError
from vecrank.localnode.jdk import find_jdk


def fake_jdk(root: Path, version: str, modules: str | None) -> Path:
    home = root / f"jdk-{version}"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text("#!/bin/sh\nexit 0\n")
    java.chmod(0o755)
    release = f'JAVA_VERSION="{version}"\n' + (f'MODULES="{modules}"\n' if modules is not None else "")
    (home / "release").write_text(release)
    return home


FULL = "java.base jdk.jdi jdk.attach jdk.net jdk.management.agent jdk.incubator.vector"


def test_explicit_old_jdk_is_refused(tmp_path):
    home = fake_jdk(tmp_path, "17.0.15", FULL)
    with pytest.raises(LocalNodeError, match=r"is Java 17; Elasticsearch 9 needs Java 21"):
        find_jdk(str(home))


def test_slim_runtime_without_jdk_jdi_is_refused_with_the_reason(tmp_path):
    home = fake_jdk(tmp_path, "25.0.2", "java.base jdk.attach jdk.net jdk.management.agent")
    with pytest.raises(LocalNodeError, match="lacks module jdk.jdi"):
        find_jdk(str(home))


def test_explicit_path_that_is_not_a_jdk(tmp_path):
    with pytest.raises(LocalNodeError, match="is not a JDK"):
        find_jdk(str(tmp_path))


def test_auto_search_skips_unusable_and_takes_a_good_one(tmp_path, monkeypatch):
    old = fake_jdk(tmp_path, "17.0.1", FULL)
    good = fake_jdk(tmp_path, "21.0.4", FULL)
    monkeypatch.delenv("VECRANK_JAVA_HOME", raising=False)
    monkeypatch.delenv("VECRANK_JDK", raising=False)
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.setenv("ES_JAVA_HOME", str(good))
    jdk = find_jdk()
    assert jdk.home == good and jdk.major == 21 and jdk.source == "ES_JAVA_HOME"


def test_vecrank_java_home_is_explicit(tmp_path, monkeypatch):
    monkeypatch.setenv("VECRANK_JAVA_HOME", str(fake_jdk(tmp_path, "11.0.2", FULL)))
    with pytest.raises(LocalNodeError, match="VECRANK_JAVA_HOME JDK at .* is Java 11"):
        find_jdk()


def test_port_in_use_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LocalNodeError, match=f"port {port} on 127.0.0.1 is already in use"):
            node.check_port_free(port)


def test_memory_check():
    node.check_memory(1, node.parse_size("512m"), available=2 << 30)
    with pytest.raises(LocalNodeError, match=r"too little memory: 2 node\(s\) with heap 4096 MiB need about 12800 MiB"):
        node.check_memory(2, node.parse_size("4g"), available=8 << 30)


def test_disk_watermark_check(tmp_path):
    node.check_disk(tmp_path, total=100 << 30, free=50 << 30)
    with pytest.raises(LocalNodeError, match=r"95% full .* over Elasticsearch's 90% high watermark"):
        node.check_disk(tmp_path, total=100 << 30, free=5 << 30)


@pytest.mark.parametrize("text,expected", [("512m", 512 << 20), ("2g", 2 << 30), ("1024K", 1 << 20), ("4096", 4096)])
def test_parse_size(text, expected):
    assert node.parse_size(text) == expected


def test_parse_size_rejects_nonsense():
    with pytest.raises(LocalNodeError, match="not like 512m"):
        node.parse_size("lots")


def test_node_yaml_single_and_two_nodes():
    one = node.NodeState("vecrank-1", "/s/node-1", 9200, 9300)
    two = node.NodeState("vecrank-2", "/s/node-2", 9201, 9301)
    single = node._node_yaml(one, [one], tls=True, extra={})
    assert 'discovery.type: "single-node"' in single
    assert "xpack.security.enabled: true" in single
    assert 'xpack.security.http.ssl.certificate: "certs/node.crt"' in single
    assert 'network.host: "127.0.0.1"' in single
    pair = node._node_yaml(two, [one, two], tls=False, extra={"indices.query.bool.max_clause_count": 2048})
    assert 'discovery.seed_hosts: ["127.0.0.1:9300", "127.0.0.1:9301"]' in pair
    assert 'cluster.initial_master_nodes: ["vecrank-1", "vecrank-2"]' in pair
    assert "xpack.security.http.ssl.enabled: false" in pair and "http.ssl.key" not in pair
    assert "indices.query.bool.max_clause_count: 2048" in pair


def test_failure_reason_is_the_exception_message(tmp_path):
    spec = node.NodeState("vecrank-1", str(tmp_path), 9200, 9300)
    (tmp_path / "logs").mkdir()
    spec.startup_file.write_text(
        "[INFO ] starting\n"
        "java.lang.IllegalArgumentException: unknown setting [foo.bar] please check that any required plugins "
        "are installed\n\tat org.elasticsearch...\n"
    )
    assert node._failure_reason(spec).startswith("unknown setting [foo.bar]")


def test_a_pid_without_our_marker_is_not_ours(tmp_path):
    assert not node.is_our_node(os.getpid(), str(tmp_path))


def test_down_without_state_stops_nothing(tmp_path):
    assert node.down(base=tmp_path) == []
