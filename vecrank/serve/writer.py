"""A background writer for what serving records: exposures (impression events) and feature rows.

A request must not wait for these writes, and must not fail when they fail: the service puts the
bulk actions on a bounded buffer and returns; a thread sends them in batches every
``interval`` seconds (or as soon as ``batch_size`` are waiting). While Elasticsearch is down the
actions wait and are retried with capped backoff; past ``max_pending`` the oldest are dropped
and counted, so memory stays bounded through a long outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from vecrank.ingest.bulk import RETRYABLE_STATUS

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)

#: bulk item statuses worth sending the batch again for: no status or "N/A" (not sent) and ingest's
#: retryable ones
_TRANSIENT: frozenset[int | str | None] = RETRYABLE_STATUS | {None, "N/A"}


class BackgroundWriter:
    """Bulk-writes actions off the request path.

    Args:
        client: Elasticsearch client.
        prepare: called before the first write after start and after each failure (creates the
            indices the actions go to); its errors count as a failed attempt.
        interval: seconds between flushes.
        batch_size: actions per bulk request; a full batch is sent without waiting.
        max_pending: actions kept while writes fail; older ones are dropped beyond it.
    """

    def __init__(
        self,
        client: Elasticsearch,
        *,
        prepare: Callable[[], None] | None = None,
        interval: float = 0.25,
        batch_size: int = 1000,
        max_pending: int = 200_000,
        max_backoff: float = 10.0,
    ):
        self.client = client
        self.prepare = prepare
        self.interval, self.batch_size, self.max_pending, self.max_backoff = (
            interval,
            batch_size,
            max_pending,
            max_backoff,
        )
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._stop = False
        self._prepared = False
        self.written = self.failed = self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="vecrank-writer", daemon=True)
        self._thread.start()

    def put(self, actions: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._pending.extend(actions)
            over = len(self._pending) - self.max_pending
            for _ in range(max(0, over)):
                self._pending.popleft()
            if over > 0:
                self.dropped += over
                log.warning("writer buffer full: dropped %d oldest action(s) (%d in all)", over, self.dropped)
            full = len(self._pending) >= self.batch_size
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + self._in_flight

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything put so far is written (or dropped). False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
                self._wake.set()
        return True

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "written": self.written,
            "failed": self.failed,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop:
            self._wake.wait(max(self.interval, backoff))
            self._wake.clear()
            while True:
                with self._lock:
                    n = min(len(self._pending), self.batch_size)
                    batch = [self._pending.popleft() for _ in range(n)]
                    self._in_flight = n
                if not batch:
                    break
                ok = self._send(batch)
                with self._lock:
                    self._in_flight = 0
                    if not ok:  # put them back in front, in order, and wait before trying again
                        self._pending.extendleft(reversed(batch))
                    self._idle.notify_all()
                if not ok:
                    backoff = min(self.max_backoff, max(0.5, backoff * 2))
                    break
                backoff = 0.0
            with self._lock:
                self._idle.notify_all()

    def _send(self, batch: list[dict[str, Any]]) -> bool:
        """True when the batch is done with (written, or rejected for good); False to retry it."""
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import helpers

        try:
            if not self._prepared and self.prepare is not None:
                self.prepare()
            self._prepared = True
            _, errors = helpers.bulk(
                self.client,
                batch,
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=2,
                initial_backoff=0.2,
                max_backoff=2.0,
            )
        except Exception as exc:  # connection refused, timeout, cluster red...
            self._prepared = False
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("background write of %d action(s) failed (%s); retrying", len(batch), self.last_error)
            return False
        assert isinstance(errors, list)  # not stats_only: the failed items themselves
        retry = [e for e in errors if next(iter(e.values())).get("status") in _TRANSIENT]
        if retry:
            self.last_error = str(retry[0])[:300]
            log.warning("background write: %d action(s) failed transiently; retrying the batch", len(retry))
            return False
        final = [e for e in errors if next(iter(e.values())).get("status") != 409]  # 409: already stored
        self.failed += len(final)
        self.written += len(batch) - len(final)
        for error in final[:3]:
            log.warning("background write rejected: %s", str(error)[:300])
        return True
