"""A local Elasticsearch for development and tests, without Docker.

Standard library only, so that ``scripts/es-local`` runs it before vecrank is installed.
"""

from vecrank.localnode.distribution import ES_VERSION, Distribution
from vecrank.localnode.errors import LocalNodeError
from vecrank.localnode.node import (
    DEFAULT_HEAP,
    DEFAULT_PORT,
    LocalCluster,
    UpResult,
    down,
    install,
    local_status,
    up,
)

__all__ = [
    "DEFAULT_HEAP",
    "DEFAULT_PORT",
    "ES_VERSION",
    "Distribution",
    "LocalCluster",
    "LocalNodeError",
    "UpResult",
    "down",
    "install",
    "local_status",
    "up",
]
