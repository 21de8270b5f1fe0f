"""vecrank.serve: the HTTP service (``vecrank serve``).

:func:`create_app` builds the FastAPI application over a :class:`RecommendService`, which does
the work without HTTP: recommendations under the running experiment, events attributed to the
arm that served them, health. :class:`ServeConfig` holds the service's settings;
:mod:`vecrank.serve.auth` the API keys (``vecrank apikey``), their cache and the rate limit.

The names load on first use, so that ``vecrank apikey`` (which needs only the key store) does not
import FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vecrank.serve.app import create_app
    from vecrank.serve.deadline import Unavailable
    from vecrank.serve.service import RecommendService, ServeConfig

__all__ = ["RecommendService", "ServeConfig", "Unavailable", "create_app"]
_WHERE = {
    "create_app": "vecrank.serve.app",
    "RecommendService": "vecrank.serve.service",
    "ServeConfig": "vecrank.serve.service",
    "Unavailable": "vecrank.serve.deadline",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vecrank.serve' has no attribute {name!r}")
