"""What ``node.json`` records of the local cluster, and whether its processes are still ours.

The record that :mod:`vecrank.localnode.node` writes when it starts nodes and that readers (the
settings, the CLI's status, the plugin installer) load; it needs nothing of the process
manager, which imports it. Standard library only, like the rest of :mod:`vecrank.localnode`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vecrank.localnode.errors import LocalNodeError
from vecrank.localnode.paths import node_state_file

CLUSTER_NAME = "vecrank-local"
DEFAULT_PORT = 9200
#: The JVM option that marks a process as the node started for one folder.
NODE_MARKER = "-Dvecrank.node.dir="


@dataclass
class NodeState:
    name: str
    dir: str
    http_port: int
    transport_port: int
    pid: int | None = None

    @property
    def log_file(self) -> Path:
        return Path(self.dir) / "logs" / f"{CLUSTER_NAME}.log"

    @property
    def startup_file(self) -> Path:
        return Path(self.dir) / "logs" / "startup.out"


@dataclass
class LocalCluster:
    """What ``node.json`` holds: enough for a client to connect and for ``down`` to stop nodes."""

    url: str
    version: str
    es_home: str
    java_home: str
    tls: bool
    user: str
    password_file: str
    ca_certs: str | None
    heap: str
    nodes: list[NodeState] = field(default_factory=list)
    started_at: str | None = None

    @property
    def password(self) -> str:
        return Path(self.password_file).read_text().strip()

    def running_nodes(self) -> list[NodeState]:
        return [n for n in self.nodes if n.pid is not None and is_our_node(n.pid, n.dir)]

    @classmethod
    def load(cls, base: Path | None = None) -> LocalCluster | None:
        path = node_state_file(base)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LocalNodeError(f"cannot read {path}: {exc}") from exc
        raw["nodes"] = [NodeState(**n) for n in raw.get("nodes", [])]
        return cls(**raw)

    def save(self, base: Path | None = None) -> None:
        path = node_state_file(base)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


# --- process helpers ---------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
    try:  # no /proc (macOS)
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
        return out.stdout
    except OSError:
        return ""


def is_our_node(pid: int, node_dir: str) -> bool:
    """True if ``pid`` is alive and is the Elasticsearch we started for ``node_dir``.

    A recycled pid belongs to some other program, whose command line lacks our marker.
    """
    return f"{NODE_MARKER}{node_dir} " in _cmdline(pid) + " "
