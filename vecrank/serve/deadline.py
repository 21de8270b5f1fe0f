"""The request's deadline and the errors of an unreachable cluster.

Every recommendation and event batch runs within a time budget (``ServeConfig.request_budget_s``,
``events_budget_s``): the service's client is a :class:`BudgetedClient`, which gives each
Elasticsearch call of the request the time the request has left (``request_timeout``, no
transport retries) and refuses a call once none is left, so a slow cluster costs a request about
its budget, then a :class:`BudgetExceeded` (HTTP 503). The recommenders and rankers need no change
for it: the deadline travels with the request's thread (a :mod:`contextvars` variable, copied into
the interleaving pool's threads).
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from vecrank.errors import ElasticsearchUnavailable, VecrankError
from vecrank.ingest.bulk import RETRYABLE_STATUS

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class Unavailable(VecrankError):
    """Elasticsearch cannot answer now; the caller should retry later (HTTP 503)."""


class BudgetExceeded(Unavailable):
    """The request's time budget ran out before Elasticsearch answered (HTTP 503)."""


#: The monotonic instant by which the current request must be done; None outside requests.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("vecrank_deadline", default=None)
MIN_CALL_S = 0.01  # below this, a call could not be answered anyway: refuse it at once
TIMEOUT_STEP = 1.05  # a call's timeout is the time left rounded down to MIN_CALL_S × 1.05^n
_LOG_STEP = math.log(TIMEOUT_STEP)


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Within this block, :class:`BudgetedClient` calls end by ``at`` (``time.monotonic()``); None:
    no deadline."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining_s() -> float | None:
    """Seconds left to the current request's deadline (None without one)."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


class BudgetedClient:
    """An Elasticsearch client that holds each call to the current request's deadline.

    Attribute access goes to ``client.options(request_timeout=<time left>, max_retries=0)``
    inside :func:`deadline`, to ``client`` itself outside one; with no time left it raises
    :class:`BudgetExceeded` instead of sending anything. Transport retries are off under a
    deadline: a retry could only start after the first attempt used the time up.

    The time left is rounded down to a step of a geometric scale from :data:`MIN_CALL_S` (ratio
    :data:`TIMEOUT_STEP`: a call may end up to 5% before the deadline, never after it), so that the
    copies ``options()`` makes can be kept, about 180 for a budget of a minute: making one builds
    the client and its forty namespaces, an eighth of the service's Python time under load when it
    was done per call.
    """

    def __init__(self, client: Elasticsearch):
        self._client = client
        self._copies: dict[int, Elasticsearch] = {}

    def __getattr__(self, name: str) -> Any:
        left = remaining_s()
        if left is None:
            return getattr(self._client, name)
        if left < MIN_CALL_S:
            raise BudgetExceeded("the request's time budget ran out waiting for Elasticsearch")
        return getattr(self._within(int(math.log(left / MIN_CALL_S) / _LOG_STEP)), name)

    def _within(self, step: int) -> Elasticsearch:
        """The client whose calls time out after MIN_CALL_S × TIMEOUT_STEP ** ``step`` (made once)."""
        copy = self._copies.get(step)
        if copy is None:
            timeout = MIN_CALL_S * TIMEOUT_STEP**step
            copy = self._copies[step] = self._client.options(request_timeout=timeout, max_retries=0)
        return copy


def unavailable_cause(exc: BaseException) -> str | None:
    """A short reason when ``exc`` means the cluster is down, busy or not ready; else None."""
    # lazy: elasticsearch's transport (0.7 s to import); only error handling needs it
    import elastic_transport
    from elasticsearch import ApiError

    if isinstance(exc, (Unavailable, ElasticsearchUnavailable)):
        return str(exc)
    if isinstance(exc, (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout)):
        return f"Elasticsearch unreachable ({type(exc).__name__})"
    if isinstance(exc, ApiError) and exc.meta.status in RETRYABLE_STATUS:
        return f"Elasticsearch answered HTTP {exc.meta.status}"
    if isinstance(exc, elastic_transport.TransportError):
        return f"Elasticsearch transport error ({type(exc).__name__})"
    return None
