"""Fetch, verify and unpack the Elasticsearch distribution that Elastic publishes on Maven Central.

The version is pinned here and nowhere else. Maven Central serves no checksum files for this
artifact, so we pin the SHA-512 we recorded when we chose the version and check every download
against it. The unpacked copy is cached per user and reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vecrank.localnode.errors import LocalNodeError
from vecrank.localnode.paths import cache_dir

log = logging.getLogger(__name__)

ES_VERSION = "9.5.2"
# sha512 of org.elasticsearch.distribution.integ-test-zip:elasticsearch:9.5.2:zip
PINNED_SHA512 = {
    "9.5.2": "235e25fde8307c6dec328a905930e572aae6d113ba627b12015885ad9c608ad6"
    "7655b721341aa4e656a41a24c67b2519f1e518710aa553e57fcf8613430eb192",
}
GROUP = "org.elasticsearch.distribution.integ-test-zip"
ARTIFACT = "elasticsearch"
_VERIFIED_MARKER = ".vecrank-verified"


@dataclass(frozen=True)
class Distribution:
    version: str
    home: Path

    @property
    def bin(self) -> Path:
        return self.home / "bin"


def wanted_version() -> str:
    return os.environ.get("VECRANK_ES_VERSION", ES_VERSION)


def maven_repo() -> Path:
    return Path(os.environ.get("VECRANK_MAVEN_REPO", Path.home() / ".m2" / "repository"))


def _zip_path(version: str) -> Path:
    group_path = Path(*GROUP.split("."))
    return maven_repo() / group_path / ARTIFACT / version / f"{ARTIFACT}-{version}.zip"


def _sha512(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha512").hexdigest()


def _mvn_fetch(version: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalNodeError(
            "Maven (mvn) is not on PATH; vecrank fetches Elasticsearch with it. "
            "Install Maven, or point VECRANK_ES_URL at an existing cluster."
        )
    artifact = f"{GROUP}:{ARTIFACT}:{version}:zip"
    log.info("Fetching %s from Maven Central", artifact)
    cmd = [mvn, "-q", "-B", "-U", "dependency:get", f"-Dartifact={artifact}", "-Dtransitive=false"]
    if "VECRANK_MAVEN_REPO" in os.environ:
        cmd.append(f"-Dmaven.repo.local={maven_repo()}")
    # Run mvn in an empty folder so a pom.xml in the caller's directory cannot change what it does.
    with tempfile.TemporaryDirectory() as empty:
        proc = subprocess.run(cmd, cwd=empty, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stdout.splitlines() if "ERROR" in line]
        detail = errors[0] if errors else proc.stdout.strip()[-500:]
        raise LocalNodeError(f"mvn could not fetch {artifact}: {detail}")


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack into a temporary sibling and rename, so a half-unpacked copy is never reused."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = tmp / info.filename
                zf.extract(info, tmp)
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    target.chmod(mode)
        (top,) = [p for p in tmp.iterdir() if p.is_dir()]
        (top / _VERIFIED_MARKER).write_text(_sha512(archive) + "\n")
        try:
            top.rename(dest)
        except OSError:
            if not (dest / _VERIFIED_MARKER).is_file():  # not just a concurrent install
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install(version: str | None = None, *, sha512: str | None = None) -> Distribution:
    """Make Elasticsearch ``version`` available under the user's cache and return it.

    Reuses an earlier verified copy. Otherwise fetches the zip with ``mvn`` (into the local
    Maven repository), checks its SHA-512 against the pinned one, and unpacks it.
    """
    version = version or wanted_version()
    if not version.startswith("9."):
        raise LocalNodeError(f"vecrank needs Elasticsearch 9.x; VECRANK_ES_VERSION is {version!r}")
    home = cache_dir() / f"elasticsearch-{version}"
    if (home / _VERIFIED_MARKER).is_file():
        log.debug("Reusing %s", home)
        return Distribution(version, home)

    expected = sha512 or os.environ.get("VECRANK_ES_SHA512") or PINNED_SHA512.get(version)
    archive = _zip_path(version)
    if not archive.is_file():
        _mvn_fetch(version)
    if not archive.is_file():
        raise LocalNodeError(f"mvn reported success but {archive} is missing")
    actual = _sha512(archive)
    if expected is None:
        log.warning(
            "No pinned checksum for Elasticsearch %s; using it unverified (sha512 %s). "
            "Set VECRANK_ES_SHA512 to verify.",
            version,
            actual,
        )
    elif actual != expected.lower():
        archive.unlink()
        raise LocalNodeError(
            f"checksum mismatch for {archive}: expected sha512 {expected[:16]}..., got "
            f"{actual[:16]}...; the file was removed, run install again"
        )
    log.info("Unpacking Elasticsearch %s into %s", version, home)
    _unpack(archive, home)
    return Distribution(version, home)


def installed(version: str | None = None) -> Distribution | None:
    version = version or wanted_version()
    home = cache_dir() / f"elasticsearch-{version}"
    return Distribution(version, home) if (home / _VERIFIED_MARKER).is_file() else None
