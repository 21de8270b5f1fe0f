"""The background writer: batches reach Elasticsearch, an outage keeps a bounded buffer."""

from __future__ import annotations

import socket

from vecrank.serve.writer import BackgroundWriter


def _action(index: str, n: int) -> dict:
    return {"_op_type": "create", "_index": index, "_id": f"doc-{n}", "_source": {"n": n}}


def test_writes_in_batches_and_counts_duplicates_as_written(es, settings_for):
    index = settings_for.index("writer")
    writer = BackgroundWriter(es, prepare=lambda: es.indices.create(index=index), interval=0.05, batch_size=7)
    try:
        writer.put(_action(index, n) for n in range(20))
        assert writer.flush(30)
        # a duplicate (409: already stored), a document the mapping refuses (400), a good one
        writer.put(
            [
                _action(index, 3),
                {"_op_type": "index", "_index": index, "_id": "x", "_source": {"n": "nan?"}},
                {"_op_type": "index", "_index": index, "_id": "y", "_source": {"n": 99}},
            ]
        )
        assert writer.flush(30)
    finally:
        writer.close()
    es.indices.refresh(index=index)
    assert es.count(index=index)["count"] == 21
    assert (writer.written, writer.failed, writer.dropped, writer.pending) == (22, 1, 0, 0)


def test_an_outage_keeps_the_newest_actions_and_never_blocks(es_settings):
    from dataclasses import replace

    from vecrank.client import make_client

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(replace(es_settings, es_url=f"https://127.0.0.1:{port}")).options(max_retries=0)
    writer = BackgroundWriter(client, interval=0.02, max_pending=10, max_backoff=0.1)
    try:
        writer.put(_action("nowhere", n) for n in range(15))
        assert writer.dropped == 5 and writer.pending <= 10
        assert not writer.flush(timeout=0.5)  # it cannot finish, and says so instead of hanging
        assert writer.last_error and "Connection" in writer.last_error
        assert writer.written == 0 and writer.pending == 10
    finally:
        writer._stop = True
        writer._wake.set()
