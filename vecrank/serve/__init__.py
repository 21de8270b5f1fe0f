"""vecrank.serve: the HTTP service (``vecrank serve``).

:func:`create_app` builds the FastAPI application over a :class:`RecommendService`, which does
the work without HTTP: recommendations under the running experiment, events attributed to the
arm that served them, health. :class:`ServeConfig` holds the service's settings.
"""

from vecrank.serve.app import create_app
from vecrank.serve.service import RecommendService, ServeConfig, Unavailable

__all__ = ["RecommendService", "ServeConfig", "Unavailable", "create_app"]
