"""Which Elasticsearch home the local node starts: the plugin home ``vecrank plugin install``
recorded in ``<state>/es/plugin.json``, when it fits the distribution, else the plain one.

:mod:`vecrank.localnode.node` reads this when it starts; :mod:`vecrank.localnode.plugin` writes
the record and restarts the node, so it imports the node, never the other way round.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vecrank.localnode import distribution
from vecrank.localnode.errors import LocalNodeError
from vecrank.localnode.paths import state_dir

log = logging.getLogger(__name__)

#: The file a finished plugin home holds (an interrupted install leaves none).
HOME_MARKER = ".vecrank-plugin-home"
RECORD_NAME = "plugin.json"


def record_file(base: Path | None) -> Path:
    return (base or state_dir()) / "es" / RECORD_NAME


def recorded(base: Path | None = None) -> dict | None:
    """What ``install`` recorded for this state folder, or None."""
    try:
        return json.loads(record_file(base).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LocalNodeError(f"cannot read {record_file(base)}: {exc}") from exc


def home_for_node(dist: distribution.Distribution, base: Path | None = None) -> distribution.Distribution:
    """The Elasticsearch home ``node.up`` starts: the recorded plugin home when it fits, else ``dist``."""
    record = recorded(base)
    if record is None:
        return dist
    home = Path(record["es_home"])
    if record.get("es_version") != dist.version:
        log.warning(
            "The vecrank plugin was installed for Elasticsearch %s, the node starts %s without it; "
            "run `vecrank plugin install`",
            record.get("es_version"),
            dist.version,
        )
        return dist
    if not (home / HOME_MARKER).is_file():
        log.warning(
            "The plugin home %s is gone (cache cleared?); starting without the plugin. "
            "Run `vecrank plugin install` again",
            home,
        )
        return dist
    return distribution.Distribution(dist.version, home)
