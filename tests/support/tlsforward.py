"""HTTPS on 127.0.0.1 in front of a unix socket, requiring a client certificate: a Docker daemon on
``tcp://`` with TLS (``dockerd --tlsverify``), made from podman's unix-socket API service."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def write_client_dir(ca: trustme.CA, directory: Path) -> Path:
    """Docker's cert directory layout: ca.pem, cert.pem, key.pem (a client certificate from ``ca``)."""
    directory.mkdir(parents=True, exist_ok=True)
    client = ca.issue_cert("mirror-test-client")
    (directory / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (directory / "cert.pem").write_bytes(client.cert_chain_pems[0].bytes())
    (directory / "key.pem").write_bytes(client.private_key_pem.bytes())
    return directory


@contextmanager
def tls_forwarder(ca: trustme.CA, unix_path: str) -> Iterator[str]:
    """Yields ``tcp://127.0.0.1:PORT``; connections must present a client certificate signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    loop = asyncio.new_event_loop()
    started = threading.Event()
    address: list[str] = []
    stop: asyncio.Event | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(unix_path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        address.append(f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        started.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("TLS forwarder did not start")
    try:
        yield address[0]
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
