"""Test doubles that make Elasticsearch failures reproducible; everything else goes to the real node."""

from __future__ import annotations

from typing import Any


class _Body:
    def __init__(self, body: dict[str, Any]):
        self.body = body

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


class FlakyBulkClient:
    """Wraps a real client; ``bulk`` answers ``status`` for chosen ids the first ``times`` they are sent.

    The real request is made first, so a later retry of the same document finds it as written.
    """

    def __init__(self, real: Any, fail: dict[str, int], *, status: int = 429, _state: dict | None = None):
        self._real = real
        self._status = status
        self._remaining = _state if _state is not None else dict(fail)
        self.injected = 0

    def options(self, **kwargs: Any) -> FlakyBulkClient:
        twin = FlakyBulkClient(self._real.options(**kwargs), {}, status=self._status, _state=self._remaining)
        twin.__dict__["_parent"] = self
        return twin

    def _count(self) -> None:
        owner = self.__dict__.get("_parent", self)
        owner.injected += 1

    def bulk(self, *args: Any, **kwargs: Any) -> _Body:
        resp = self._real.bulk(*args, **kwargs).body
        for item in resp["items"]:
            (op, result), = item.items()
            if self._remaining.get(result.get("_id"), 0) > 0:
                self._remaining[result["_id"]] -= 1
                item[op] = {"_id": result["_id"], "status": self._status,
                            "error": {"type": "es_rejected_execution_exception", "reason": "injected by the test"}}
                resp["errors"] = True
                self._count()
        return _Body(resp)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
