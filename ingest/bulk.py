"""Bulk writes that survive a busy or flapping cluster.

``streaming_bulk`` already retries documents rejected with 429. This adds the other transient
failures — 502/503/504 answers and connection errors, which ``streaming_bulk`` reports per
document without retrying — with capped exponential backoff, re-sending only the documents that
failed. Each result comes back paired with the caller's own record of where the document came
from, so failures can name their file and line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# streaming_bulk retries 429s itself; these it reports without retrying.
_RETRIED_HERE = frozenset({502, 503, 504, "N/A"})
Origin = TypeVar("Origin")


@dataclass(frozen=True)
class BulkResult(Generic[Origin]):
    """The final outcome of one action: ``status`` is the HTTP status, or ``"N/A"`` when the
    request itself failed (connection error)."""

    ok: bool
    op: str
    status: Any
    result: dict[str, Any]
    origin: Origin

    @property
    def reason(self) -> str:
        if self.status == "N/A":
            return "connection failed"
        if self.status in RETRYABLE_STATUS:
            return f"rejected by Elasticsearch (HTTP {self.status}) after retries"
        return f"rejected by Elasticsearch (HTTP {self.status})"

    @property
    def detail(self) -> str:
        error = self.result.get("error")
        if isinstance(error, dict):
            text = f"{error.get('type')}: {error.get('reason')}"
            cause = error.get("caused_by")
            if isinstance(cause, dict) and cause.get("reason"):
                text += f" ({cause.get('reason')})"
            return text[:1000]
        return str(error or self.result.get("exception") or "unknown error")[:1000]


def bulk_with_retries(
    client: Elasticsearch,
    items: Sequence[tuple[dict[str, Any], Origin]],
    *,
    chunk_size: int = 500,
    max_retries: int = 5,
    initial_backoff: float = 0.5,
    max_backoff: float = 30.0,
    on_retry: Callable[[int], object] | None = None,
) -> Iterator[BulkResult[Origin]]:
    """Send ``(action, origin)`` pairs; yield one final :class:`BulkResult` per pair.

    Args:
        client: Elasticsearch client.
        items: ``streaming_bulk`` actions (with ``_op_type`` and ``_id``) and what they came from.
        chunk_size: actions per bulk request.
        max_retries: retries per document, for 429 inside ``streaming_bulk`` and for
            502/503/504/connection errors here.
        initial_backoff: first wait in seconds; doubled per attempt, capped at ``max_backoff``.
        on_retry: called with the number of documents about to be retried.
    """
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import helpers

    todo = list(items)
    for attempt in range(max_retries + 1):
        waiting: dict[tuple[str, str], list[tuple[dict[str, Any], Origin]]] = {}
        for action, origin in todo:
            waiting.setdefault((action["_op_type"], str(action["_id"])), []).append((action, origin))
        retry: list[tuple[dict[str, Any], Origin]] = []
        results = helpers.streaming_bulk(
            client,
            [a for a, _ in todo],
            chunk_size=chunk_size,
            max_retries=max_retries,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            raise_on_error=False,
            raise_on_exception=False,
        )
        for ok, info in results:
            op, result = next(iter(info.items()))
            # Results carry only op and id; an id sent twice comes back twice, in order.
            action, origin = waiting[(op, str(result.get("_id")))].pop(0)
            status = result.get("status")
            if not ok and status in _RETRIED_HERE and attempt < max_retries:
                retry.append((action, origin))
            else:
                yield BulkResult(ok, op, status, result, origin)
        if not retry:
            return
        if on_retry is not None:
            on_retry(len(retry))
        delay = min(max_backoff, initial_backoff * 2**attempt)
        log.warning("%d document(s) failed with a retryable error; retrying in %.1fs", len(retry), delay)
        time.sleep(delay)
        todo = retry
