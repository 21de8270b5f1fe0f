"""Build the vecrank rescorer plugin and run the local node with it installed.

The unpacked Elasticsearch in the user cache is shared by every state folder, so the plugin never
goes into it. Instead a *plugin home* is made next to it: a copy of the distribution (files
hard-linked where the file system allows, ``config/`` copied) with the plugin installed by
Elasticsearch's own ``bin/elasticsearch-plugin``. Its folder name carries the distribution version
and the zip's SHA-256, so a rebuilt plugin gets a new home and an old one is never modified.

``install`` records the chosen home in ``<state>/es/plugin.json``; ``node.up`` starts from it (and
writes it to ``node.json``'s ``es_home``). ``down --purge`` deletes that record with the rest.

Only the standard library is used, like the rest of :mod:`vecrank.localnode`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vecrank.localnode import distribution, node
from vecrank.localnode.errors import LocalNodeError
from vecrank.localnode.jdk import find_jdk
from vecrank.localnode.paths import cache_dir, state_dir
from vecrank.localnode.pluginhome import HOME_MARKER, home_for_node, record_file, recorded

log = logging.getLogger(__name__)

PLUGIN_NAME = "vecrank-rescorer"
_ZIP_RE = re.compile(rf"^{re.escape(PLUGIN_NAME)}-(?P<version>[^-]+)-es(?P<es>\d+\.\d+\.\d+)\.zip$")


@dataclass(frozen=True)
class PluginZip:
    """A built plugin: where it is, its version and the Elasticsearch version it was built for."""

    path: Path
    version: str
    es_version: str
    sha256: str

    def to_dict(self) -> dict:
        return {"path": str(self.path), "version": self.version, "es_version": self.es_version, "sha256": self.sha256}


@dataclass(frozen=True)
class InstallResult:
    zip: PluginZip
    es_home: Path
    created: bool  # False: that plugin home already existed
    restarted: bool  # the local node was running and now runs with the plugin
    running: bool  # the local node runs with the plugin now

    def to_dict(self) -> dict:
        return {
            "zip": self.zip.to_dict(),
            "es_home": str(self.es_home),
            "created": self.created,
            "restarted": self.restarted,
            "running": self.running,
        }


# --- sources and builds ------------------------------------------------------------------------


def source_dir() -> Path | None:
    """``plugin/`` of the checkout vecrank runs from, or None (an installed wheel has no Java sources)."""
    here = Path(__file__).resolve().parents[2] / "plugin"
    return here if (here / "pom.xml").is_file() else None


def source_version(src: Path | None = None) -> str | None:
    """The plugin version in ``pom.xml`` (the first ``<version>`` after ``<artifactId>vecrank-rescorer``)."""
    src = src or source_dir()
    if src is None:
        return None
    m = re.search(
        r"<artifactId>vecrank-rescorer</artifactId>\s*<version>([^<]+)</version>", (src / "pom.xml").read_text()
    )
    return m.group(1).strip() if m else None


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_zip(path: Path) -> PluginZip:
    """Read a plugin zip's descriptor. Raises LocalNodeError when it is not a vecrank plugin zip."""
    path = Path(path).resolve()
    try:
        with zipfile.ZipFile(path) as zf:
            text = zf.read("plugin-descriptor.properties").decode()
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise LocalNodeError(f"{path} is not an Elasticsearch plugin zip: {exc}") from exc
    props = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    if props.get("name") != PLUGIN_NAME:
        raise LocalNodeError(f"{path} holds plugin {props.get('name')!r}, not {PLUGIN_NAME}")
    return PluginZip(path, props.get("version", "?"), props.get("elasticsearch.version", "?"), _sha256(path))


def _newest_source_mtime(src: Path) -> float:
    files = [src / "pom.xml", *(p for p in (src / "src").rglob("*") if p.is_file())]
    return max(p.stat().st_mtime for p in files)


def built_zip(es_version: str | None = None, *, src: Path | None = None) -> PluginZip | None:
    """The zip in ``plugin/target/releases`` built for ``es_version`` (default: the node's), if any."""
    es_version = es_version or distribution.wanted_version()
    src = src or source_dir()
    if src is None:
        return None
    releases = src / "target" / "releases"
    found = sorted(p for p in releases.glob(f"{PLUGIN_NAME}-*-es{es_version}.zip") if _ZIP_RE.match(p.name))
    return read_zip(found[-1]) if found else None


def is_stale(built: PluginZip, src: Path | None = None) -> bool:
    """True when a source file or the pom changed after the zip was built."""
    src = src or source_dir()
    return src is not None and _newest_source_mtime(src) > built.path.stat().st_mtime


def build(
    es_version: str | None = None, *, skip_tests: bool = False, jdk: str | None = None, src: Path | None = None
) -> PluginZip:
    """``mvn package`` the plugin for ``es_version`` (default: the local node's) and return the zip.

    Maven runs with a JDK that Elasticsearch 9 accepts (Java 21+, found like the node's), so the
    system Java may be older. Raises LocalNodeError with Maven's first error when the build fails.
    """
    es_version = es_version or distribution.wanted_version()
    if not re.fullmatch(r"9\.\d+\.\d+", es_version):
        raise LocalNodeError(f"the plugin builds for Elasticsearch 9.x versions like 9.5.2, not {es_version!r}")
    src = src or source_dir()
    if src is None:
        raise LocalNodeError(
            "the plugin's sources (plugin/pom.xml) are not here: build from a vecrank checkout, "
            "or install a zip with --zip"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalNodeError("Maven (mvn) is not on PATH; the plugin is built with it")
    java = find_jdk(jdk)
    cmd = [mvn, "-B", "-q", "package", f"-Des.version={es_version}"]
    if skip_tests:
        cmd.append("-DskipTests")
    if "VECRANK_MAVEN_REPO" in os.environ:
        cmd.append(f"-Dmaven.repo.local={distribution.maven_repo()}")
    env = {**os.environ, "JAVA_HOME": str(java.home)}
    log.info("Building %s for Elasticsearch %s with Java %d (%s)", PLUGIN_NAME, es_version, java.major, java.home)
    proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stdout + "\n" + proc.stderr).splitlines()
        errors = [ln for ln in lines if ln.startswith("[ERROR]") and ln.strip() != "[ERROR]"]
        failed = [ln for ln in lines if "Tests run:" in ln and ("Failures: 0" not in ln or "Errors: 0" not in ln)]
        detail = "\n".join((failed + errors)[:12]) or "\n".join(lines[-12:])
        raise LocalNodeError(f"mvn package failed for Elasticsearch {es_version}:\n{detail}")
    built = built_zip(es_version, src=src)
    if built is None:
        raise LocalNodeError(
            f"mvn succeeded but no {PLUGIN_NAME} zip for {es_version} is in {src / 'target' / 'releases'}"
        )
    return built


# --- plugin homes ------------------------------------------------------------------------------


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst``: directories made, files hard-linked (copied across devices), config copied."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        copy = rel.parts[:1] == ("config",)  # node configs are copied from here; never share inodes with them
        for name in files:
            s, d = Path(root) / name, target / name
            if s.is_symlink():
                d.symlink_to(os.readlink(s))
                continue
            if not copy:
                try:
                    os.link(s, d)
                    continue
                except OSError:
                    pass
            shutil.copy2(s, d)
        for name in list(dirs):
            if (Path(root) / name).is_symlink():
                (target / name).symlink_to(os.readlink(Path(root) / name))
                dirs.remove(name)


def plugin_homes_dir() -> Path:
    return cache_dir() / "plugin-homes"


def home_name(dist: distribution.Distribution, plugin_zip: PluginZip) -> str:
    return f"elasticsearch-{dist.version}+{PLUGIN_NAME}-{plugin_zip.version}-{plugin_zip.sha256[:12]}"


def check_versions(dist: distribution.Distribution, plugin_zip: PluginZip) -> None:
    if plugin_zip.es_version != dist.version:
        raise LocalNodeError(
            f"{plugin_zip.path.name} was built for Elasticsearch {plugin_zip.es_version}, but the local node runs "
            f"{dist.version}; a plugin loads only into the exact version it was built for. Rebuild it with "
            f"`vecrank plugin build --es-version {dist.version}` (mvn package -Des.version={dist.version})"
        )


def ensure_home(dist: distribution.Distribution, plugin_zip: PluginZip, *, jdk: str | None = None) -> tuple[Path, bool]:
    """The plugin home for this distribution and zip, made if missing. Returns (path, created)."""
    check_versions(dist, plugin_zip)
    homes = plugin_homes_dir()
    target = homes / home_name(dist, plugin_zip)
    if (target / HOME_MARKER).is_file():
        return target, False
    homes.mkdir(parents=True, exist_ok=True)
    java = find_jdk(jdk)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=homes))
    try:
        home = tmp / "es"
        _link_tree(dist.home, home)
        env = {**os.environ, "ES_JAVA_HOME": str(java.home), "ES_PATH_CONF": str(home / "config")}
        env.pop("ES_JAVA_OPTS", None)
        log.info("Installing %s into a copy of Elasticsearch %s at %s", plugin_zip.path.name, dist.version, target)
        proc = subprocess.run(
            [str(home / "bin" / "elasticsearch-plugin"), "install", "--batch", plugin_zip.path.as_uri()],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            out = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            errors = [ln for ln in out if "ERROR" in ln or "Exception" in ln] or out[-3:]
            raise LocalNodeError(f"elasticsearch-plugin install failed: {' | '.join(errors[:3]) or 'no output'}")
        (home / HOME_MARKER).write_text(
            json.dumps({"es_version": dist.version, **plugin_zip.to_dict()}, indent=2) + "\n"
        )
        try:
            home.rename(target)
        except OSError:
            if not (target / HOME_MARKER).is_file():  # not just a concurrent install of the same zip
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, True


def _extra_settings(cluster: node.LocalCluster) -> dict[str, object]:
    """The ``--setting`` values the running node was started with (read back from its elasticsearch.yml)."""
    first = cluster.nodes[0]
    current: dict[str, object] = {}
    try:
        lines = (Path(first.dir) / "config" / "elasticsearch.yml").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        if line.startswith("#") or ": " not in line:
            continue
        key, _, value = line.partition(": ")
        try:
            current[key] = json.loads(value)
        except ValueError:
            current[key] = value
    standard = {}
    for line in node._node_yaml(first, cluster.nodes, cluster.tls, {}).splitlines():
        if not line.startswith("#") and ": " in line:
            key, _, value = line.partition(": ")
            standard[key] = json.loads(value)
    return {k: v for k, v in current.items() if standard.get(k, object()) != v}


def install(
    zip_path: Path | None = None,
    *,
    base: Path | None = None,
    restart: bool = True,
    jdk: str | None = None,
    build_if_needed: bool = True,
) -> InstallResult:
    """Install the plugin for the local node of ``base`` (restarting it when it runs).

    Args:
        zip_path: A plugin zip; default the build in ``plugin/target/releases`` for the node's
            Elasticsearch version, (re)built first when missing or older than the sources.
        base: The state folder (default ``VECRANK_STATE_DIR``).
        restart: Restart a running node so that it loads the plugin.
        jdk: The JDK for Maven and the plugin tool (default: found like the node's).
        build_if_needed: Build when there is no up-to-date zip (else that is an error).
    """
    base = base or state_dir()
    dist = distribution.install()
    plugin_zip: PluginZip | None
    if zip_path is not None:
        plugin_zip = read_zip(Path(zip_path))
    else:
        plugin_zip = built_zip(dist.version)
        if plugin_zip is None or is_stale(plugin_zip):
            if not build_if_needed:
                why = "none is built" if plugin_zip is None else f"{plugin_zip.path.name} is older than the sources"
                raise LocalNodeError(
                    f"no up-to-date plugin zip for Elasticsearch {dist.version} ({why}); " "run `vecrank plugin build`"
                )
            plugin_zip = build(dist.version, jdk=jdk)
    home, created = ensure_home(dist, plugin_zip, jdk=jdk)

    record_path = record_file(base)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "es_home": str(home),
        "es_version": dist.version,
        "zip": str(plugin_zip.path),
        "sha256": plugin_zip.sha256,
        "plugin_version": plugin_zip.version,
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    previous = recorded(base)
    if previous is None or previous.get("es_home") != str(home):
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(record_path)

    cluster = node.LocalCluster.load(base)
    running = bool(cluster and cluster.running_nodes())
    if not running:
        return InstallResult(plugin_zip, home, created, restarted=False, running=False)
    assert cluster is not None  # running: it has nodes
    if cluster.es_home == str(home):
        log.info("The local node already runs with this plugin build")
        return InstallResult(plugin_zip, home, created, restarted=False, running=True)
    if not restart:
        log.warning("The local node runs without the plugin until it restarts (`vecrank es down` then `up`)")
        return InstallResult(plugin_zip, home, created, restarted=False, running=False)
    log.info("Restarting the local node (%d node(s)) with the plugin", len(cluster.nodes))
    _restart(cluster, base)
    return InstallResult(plugin_zip, home, created, restarted=True, running=True)


def remove(*, base: Path | None = None, restart: bool = True) -> bool:
    """Forget the plugin home for ``base``; a running node restarts on the plain distribution.

    Returns True if one was recorded.
    """
    base = base or state_dir()
    path = record_file(base)
    if not path.is_file():
        return False
    path.unlink()
    cluster = node.LocalCluster.load(base)
    if restart and cluster and cluster.running_nodes():
        _restart(cluster, base)
    return True


def _restart(cluster: node.LocalCluster, base: Path) -> None:
    """Stops the local cluster of ``base`` and starts it again as it ran (nodes, port, heap, JDK,
    TLS, settings), on whatever distribution or plugin home ``base`` now records."""
    extra = _extra_settings(cluster)
    node.down(base=base)
    node.up(
        nodes=len(cluster.nodes),
        port=cluster.nodes[0].http_port,
        heap=cluster.heap,
        jdk=cluster.java_home,
        tls=cluster.tls,
        extra_settings=extra,
        base=base,
    )


def local_status(base: Path | None = None) -> dict:
    """Sources, the build for the node's version, and what the local node of ``base`` runs."""
    es_version = distribution.wanted_version()
    src = source_dir()
    built = built_zip(es_version, src=src)
    record = recorded(base)
    cluster = node.LocalCluster.load(base)
    running = bool(cluster and cluster.running_nodes())
    info: dict = {
        "plugin": PLUGIN_NAME,
        "source": str(src) if src else None,
        "source_version": source_version(src),
        "es_version": es_version,
        "built": None
        if built is None
        else {
            **built.to_dict(),
            "stale": is_stale(built, src),
            "installed": bool(record and record.get("sha256") == built.sha256),
        },
        "installed": record,
        "local_node": None
        if cluster is None
        else {
            "running": running,
            "es_home": cluster.es_home,
            "with_plugin": bool(record and cluster.es_home == record.get("es_home")),
        },
    }
    return info


__all__ = [
    "PLUGIN_NAME",
    "InstallResult",
    "PluginZip",
    "build",
    "built_zip",
    "ensure_home",
    "home_for_node",
    "install",
    "local_status",
    "read_zip",
    "recorded",
    "remove",
    "source_dir",
]
