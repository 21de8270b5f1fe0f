"""A TCP proxy on loopback that delays each answer: a slow Elasticsearch for tests and benchmarks.

Used by ``tests/test_serve_bounds.py`` and ``scripts/bench_bad_input.py``::

    proxy = SlowProxy("127.0.0.1", 9200)  # listens on 127.0.0.1:proxy.port
    proxy.delay = 0.05                    # each answer held 50 ms
    ...
    proxy.close()
"""

from __future__ import annotations

import asyncio
import threading


class SlowProxy:
    """A TCP proxy on loopback to the test node that holds each answer ``delay`` seconds before
    passing it on (TLS goes through untouched: it only moves bytes)."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.delay = 0.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        asked = asyncio.Event()

        async def upstream():
            while data := await reader.read(65536):
                asked.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream():
            while data := await up_reader.read(65536):
                if asked.is_set() and self.delay:
                    asked.clear()
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            up_writer.close()

    def close(self):
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
