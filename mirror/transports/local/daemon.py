"""skopeo's ``docker-daemon:REF`` transport, through the Docker Engine API.

The daemon is ``--src-daemon-host``/``--dest-daemon-host``, else ``$DOCKER_HOST``, else
``unix:///var/run/docker.sock``. As containers/image: ``unix:///path`` is a socket, ``http://host:port``
plain HTTP, and ``tcp://host:port`` HTTPS, verified against the system CAs plus ``ca.pem`` from
``--src-cert-dir``/``--dest-cert-dir`` (``--cert-dir`` for inspect), which also supplies the client pair
``cert.pem``/``key.pem``; ``--src-tls-verify=false`` skips verification.

- source: ``GET /images/{name}/get`` streams a docker-archive; it is spooled to a temp file (in
  ``--tmpdir``) and read with the docker-archive reader (see ``dockerarchive.py``);
- destination: the image is written as a docker-archive in a temp file, tagged REF, and sent to
  ``POST /images/load`` only when the copy succeeded; the daemon's JSON progress stream is checked
  for errors.

REF is ``name[:tag]`` (``:latest`` added) or, for a source, an image ID ``sha256:<hex>``; as
containers/image, a ``name@digest`` reference is refused. Works with Docker and with podman's
Docker-compatible service.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import anyio
from msgspec import Struct

from mirror.core.reference import ManifestRef, Tag
from mirror.errors import InvalidReference, MirrorError, NotFound, TLSError
from mirror.http.aiohttplib import aiohttp
from mirror.http.tls import daemon_context
from mirror.transports.base import Capabilities, ImageDestination, ImageSource, Location, Untagged
from mirror.transports.local.archive import build_archive
from mirror.transports.local.dockerarchive import ArchiveSource, normalise_tag
from mirror.transports.local.files import work_dir
from mirror.transports.side import LocalOptions, SideOptions

DEFAULT_HOST = "unix:///var/run/docker.sock"
_ID_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
CHUNK = 1 << 20


def parse_ref(rest: str) -> tuple[str, bool]:
    """(name to give the API, is an image ID)."""
    where = f"invalid docker-daemon: reference {rest!r}"
    if _ID_RE.match(rest):
        return rest, True
    if rest.startswith("sha256:"):
        raise InvalidReference(f"{where}: invalid image ID")
    return normalise_tag(rest, where), False


class Daemon(Struct, frozen=True):
    """Where the daemon is and how to reach it."""

    host: str
    cert_dir: str | None = None
    tls_verify: bool = True

    def __str__(self) -> str:
        return self.host


def daemon(options: LocalOptions) -> Daemon:
    host = options.daemon_host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    return Daemon(host, options.daemon_cert_dir, options.daemon_tls_verify)


@asynccontextmanager
async def engine_session(target: Daemon) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """An aiohttp session talking to the daemon, and the base URL to use with it."""
    host = target.host
    url = urlsplit(host)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    if url.scheme == "unix":
        if not url.path:
            raise InvalidReference(f"invalid daemon host {host!r}: no socket path")
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=url.path)
        base = "http://docker"
    elif url.scheme == "http" and url.netloc:
        connector, base = aiohttp.TCPConnector(), f"http://{url.netloc}"
    elif url.scheme == "tcp" and url.netloc:
        context = await anyio.to_thread.run_sync(daemon_context, target.cert_dir, target.tls_verify)
        connector, base = aiohttp.TCPConnector(ssl=context), f"https://{url.netloc}"
    else:
        raise InvalidReference(f"invalid daemon host {host!r}: use unix:///path, tcp://host:port (TLS) "
                               "or http://host:port")
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session, base


def _failure(host: Daemon, exc: Exception) -> MirrorError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", "") or exc.certificate_error.__class__.__name__
        return TLSError(f"docker daemon at {host}: certificate verification failed ({reason}); give its CA as "
                        "ca.pem in --src-cert-dir/--dest-cert-dir (--cert-dir), or --tls-verify=false")
    return MirrorError(f"docker daemon at {host}: {exc.__class__.__name__}: {exc}")


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    body = (await resp.content.read(4096)).decode("utf-8", "replace")
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or body.strip() or resp.reason).splitlines()[0][:300]


async def save(host: Daemon, name: str, target: Path) -> None:
    """``GET /images/{name}/get`` into ``target``."""
    async with engine_session(host) as (session, base):
        try:
            async with session.get(f"{base}/images/{quote(name, safe='')}/get") as resp:
                if resp.status == 404:
                    raise NotFound(f"docker daemon at {host}: image {name} not found")
                if resp.status != 200:
                    raise MirrorError(f"docker daemon at {host}: saving {name}: HTTP {resp.status}: "
                                      f"{await _error_text(resp)}")
                async with await anyio.open_file(target, "wb") as out:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        await out.write(chunk)
        except (aiohttp.ClientError, OSError) as exc:
            raise _failure(host, exc) from None


async def load(host: Daemon, archive: Path) -> None:
    """``POST /images/load`` with ``archive``; raises on an HTTP error or an error in the stream."""
    async def body() -> AsyncIterator[bytes]:
        async with await anyio.open_file(archive, "rb") as f:
            while data := await f.read(CHUNK):
                yield data

    async with engine_session(host) as (session, base):
        try:
            async with session.post(f"{base}/images/load?quiet=1", data=body(),
                                    headers={"Content-Type": "application/x-tar"}) as resp:
                if resp.status != 200:
                    raise MirrorError(f"docker daemon at {host}: load: HTTP {resp.status}: {await _error_text(resp)}")
                text = (await resp.read()).decode("utf-8", "replace")
        except (aiohttp.ClientError, OSError) as exc:
            raise _failure(host, exc) from None
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("error"):
            raise MirrorError(f"docker daemon at {host}: load: {str(item['error']).splitlines()[0][:300]}")


CAPS = Capabilities(converts_manifests=True)  # the daemon loads a docker-archive (ArchiveDestination)


class DockerDaemonTransport(Untagged):
    name = "docker-daemon"
    capabilities = CAPS

    def validate(self, rest: str) -> None:
        parse_ref(rest)

    @asynccontextmanager
    async def source(self, rest: str, side: SideOptions) -> AsyncIterator[tuple[ImageSource, ManifestRef]]:
        name, _ = parse_ref(rest)
        host = daemon(side.local)
        async with work_dir(side.local.tmpdir) as work:
            spool = work / "image.tar"
            await save(host, name, spool)
            src = await ArchiveSource.open(spool, None, Location(self.name, host.host, name))
            yield src, src.manifest.digest

    @asynccontextmanager
    async def destination(self, rest: str, side: SideOptions
                          ) -> AsyncIterator[tuple[ImageDestination, Tag | None]]:
        name, is_id = parse_ref(rest)
        if is_id:
            raise InvalidReference(f"docker-daemon:{rest}: a destination needs a name:tag, not an image ID")
        host = daemon(side.local)
        async with work_dir(side.local.tmpdir) as work:
            archive = work / "image.tar"
            async with build_archive(archive, Location(self.name, host.host, name), [name], work) as dest:
                yield dest, Tag(name)
            await load(host, archive)
