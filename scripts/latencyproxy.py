"""A TCP proxy that adds a fixed one-way delay, to stand in for a remote registry (no netem here).

Every chunk read from either side is written to the other ``delay`` seconds after it arrived, in
order, so a request/response round trip costs ``2 * delay`` more than on loopback; a new connection
first waits one round trip (``2 * delay``) before anything is forwarded, as a TCP handshake across
the same link would. The pipe is streamed, not a store-and-forward: at most ``MAX_QUEUED`` chunks of
``CHUNK`` bytes wait in each direction of each connection (a full queue stops reading, so TCP's flow
control slows the sender down), so a 1 GiB body passes with bounded memory.

In a program: ``with start_proxy("127.0.0.1", 5000, delay=0.025) as proxy: ... proxy.host ...``
(its own thread and event loop). Standalone: ``python scripts/latencyproxy.py --upstream
127.0.0.1:5000 --delay-ms 25 [--listen-port N]`` prints the listening address and runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

CHUNK = 64 * 1024
MAX_QUEUED = 128  # chunks waiting per direction per connection: at most 8 MiB


@dataclass
class ProxyStats:
    connections: int = 0
    bytes_up: int = 0    # client → upstream
    bytes_down: int = 0  # upstream → client
    peak_queued: int = 0  # the most chunks that ever waited in one direction of one connection
    errors: list[str] = field(default_factory=list)


class LatencyProxy:
    """Listens on 127.0.0.1 (``port``; 0: a free one) and forwards to ``upstream`` with ``delay``."""

    def __init__(self, upstream_host: str, upstream_port: int, delay: float, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.stats = ProxyStats()
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, to use in place of the upstream's ``host:port``."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._requested_port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        try:
            await asyncio.sleep(2 * self.delay)  # the handshake's round trip
            try:
                up_r, up_w = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                self.stats.errors.append(f"connect {self.upstream}: {exc}")
                return
            try:
                await asyncio.gather(self._pipe(client_r, up_w, "up"), self._pipe(up_r, client_w, "down"))
            finally:
                up_w.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        """Copy ``reader`` to ``writer``, each chunk ``delay`` after it was read, then half-close."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_QUEUED)

        async def read() -> None:
            try:
                while True:
                    data = await reader.read(CHUNK)
                    await queue.put((time.monotonic() + self.delay, data))
                    self.stats.peak_queued = max(self.stats.peak_queued, queue.qsize())
                    if not data:
                        return
            except ConnectionError:
                await queue.put((time.monotonic() + self.delay, b""))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                if direction == "up":
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await reading


@contextlib.contextmanager
def start_proxy(upstream_host: str, upstream_port: int, delay: float) -> Iterator[LatencyProxy]:
    """A running :class:`LatencyProxy` on a thread of its own (its own event loop), stopped on exit."""
    loop = asyncio.new_event_loop()
    proxy = LatencyProxy(upstream_host, upstream_port, delay)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(proxy.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("latency proxy did not start")
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay in milliseconds")
    parser.add_argument("--listen-port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if not host or not port.isdigit():
        parser.error("--upstream must be HOST:PORT")

    async def serve() -> None:
        proxy = LatencyProxy(host, int(port), args.delay_ms / 1000, args.listen_port)
        await proxy.start()
        print(f"listening on {proxy.host}, forwarding to {args.upstream} with {args.delay_ms:g} ms each way",
              flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await proxy.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
