"""Test doubles that make Elasticsearch failures reproducible; everything else goes to the real node."""

from __future__ import annotations

import json
import types
from typing import Any


class FlakyBulkClient:
    """The real client, except that ``bulk`` answers ``status`` for chosen ids the first ``times``.

    Rejected documents are not sent, so a retried document is written once, as after a real
    rejection (an event's ``create`` would otherwise come back as a 409 on the retry).
    """

    def __init__(self, real: Any, fail: dict[str, int], *, status: int = 429):
        self._real = real
        self._status = status
        self.remaining = dict(fail)
        self.rejected = 0

    def options(self, **kwargs: Any) -> FlakyBulkClient:
        return self

    def bulk(self, *, operations: Any, **kwargs: Any) -> Any:
        lines = list(operations)
        sent: list[Any] = []
        answers: list[dict[str, Any] | None] = []
        i = 0
        while i < len(lines):
            op, meta = next(iter(json.loads(lines[i]).items()))
            chunk = lines[i : i + (1 if op == "delete" else 2)]
            i += len(chunk)
            if self.remaining.get(meta["_id"], 0) > 0:
                self.remaining[meta["_id"]] -= 1
                self.rejected += 1
                answers.append(
                    {
                        op: {
                            "_index": meta["_index"],
                            "_id": meta["_id"],
                            "status": self._status,
                            "error": {"type": "es_rejected_execution_exception", "reason": "injected by the test"},
                        }
                    }
                )
            else:
                sent += chunk
                answers.append(None)
        real = iter(self._real.bulk(operations=sent, **kwargs)["items"] if sent else [])
        items = [answer if answer is not None else next(real) for answer in answers]
        return types.SimpleNamespace(body={"took": 1, "errors": True, "items": items})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
