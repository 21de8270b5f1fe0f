"""Per-user folders: downloads are cached, node data and secrets live in the state folder."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def cache_dir() -> Path:
    """Where unpacked Elasticsearch distributions are kept (``VECRANK_CACHE_DIR``)."""
    value = os.environ.get("VECRANK_CACHE_DIR")
    return Path(value) if value else _xdg("XDG_CACHE_HOME", ".cache") / "vecrank"


def state_dir() -> Path:
    """Where the local node keeps data, logs, certificates and its password (``VECRANK_STATE_DIR``)."""
    value = os.environ.get("VECRANK_STATE_DIR")
    return Path(value) if value else _xdg("XDG_STATE_HOME", ".local/state") / "vecrank"


def node_state_file(base: Path | None = None) -> Path:
    return (base or state_dir()) / "es" / "node.json"
