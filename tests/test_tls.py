"""TLS contexts from certs.d / --cert-dir, proven against a real TLS echo server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from mirror.errors import TLSError
from mirror.http.tls import (
    TLSOptions,
    allows_plain_http,
    certs_d_dir,
    default_certs_roots,
    ssl_context,
)

HOST = "127.0.0.1"


class EchoServer:
    """A TLS line-echo server on 127.0.0.1, run on its own event loop per exchange."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            writer.write(await reader.readline())
            await writer.drain()
        writer.close()

    def exchange(self, client: ssl.SSLContext) -> bytes:
        """Send ``ping`` with ``client``; the echoed line, or ``b""`` if TLS failed after the handshake."""

        async def run() -> bytes:
            server = await asyncio.start_server(self._handle, HOST, 0, ssl=self.ctx)
            port = server.sockets[0].getsockname()[1]
            try:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(HOST, port, ssl=client, server_hostname=HOST), 10
                    )
                except ssl.SSLCertVerificationError:
                    raise
                except (ssl.SSLError, ConnectionError):
                    return b""  # TLS 1.2: a refused client certificate fails the handshake.
                try:
                    writer.write(b"ping\n")
                    await writer.drain()
                    return await asyncio.wait_for(reader.readline(), 10)
                except (ssl.SSLError, ConnectionError):
                    return b""  # TLS 1.3: a refused client certificate shows up after the handshake.
                finally:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            finally:
                server.close()
                await server.wait_closed()

        return asyncio.run(run())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server(ca: trustme.CA) -> EchoServer:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(ctx)
    return EchoServer(ctx)


@pytest.fixture(scope="module")
def mtls_server(ca: trustme.CA) -> EchoServer:
    """Requires a client certificate issued by ``ca``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    return EchoServer(ctx)


@pytest.fixture
def cert_dir(tmp_path: Path, ca: trustme.CA) -> Path:
    d = tmp_path / "certs"
    d.mkdir()
    ca.cert_pem.write_to_path(str(d / "ca.crt"))
    return d


def add_client_pair(directory: Path, ca: trustme.CA, name: str = "client") -> None:
    leaf = ca.issue_cert(f"{name}.example.org")
    leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.cert"))
    leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))


# --- Directory discovery ------------------------------------------------------------------------


def test_default_certs_roots_use_home_from_env(tmp_path: Path) -> None:
    assert default_certs_roots({"HOME": str(tmp_path)}) == (
        tmp_path / ".config" / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    )


def test_certs_d_dir_first_existing_wins(tmp_path: Path) -> None:
    roots = [tmp_path / "user", tmp_path / "etc-containers", tmp_path / "etc-docker"]
    assert certs_d_dir("reg.example:5000", roots) is None
    (roots[2] / "reg.example:5000").mkdir(parents=True)
    assert certs_d_dir("reg.example:5000", roots) == roots[2] / "reg.example:5000"
    (roots[1] / "reg.example:5000").mkdir(parents=True)
    assert certs_d_dir("reg.example:5000", roots) == roots[1] / "reg.example:5000"
    (roots[0] / "reg.example").mkdir(parents=True)  # The port is part of the name.
    assert certs_d_dir("reg.example:5000", roots) == roots[1] / "reg.example:5000"
    (roots[0] / "reg.example:5000").write_text("a file, not a directory")
    assert certs_d_dir("reg.example:5000", roots) == roots[1] / "reg.example:5000"


@pytest.mark.parametrize("host", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_hub_cert_dir_is_docker_io(tmp_path: Path, host: str) -> None:
    (tmp_path / "docker.io").mkdir()
    assert certs_d_dir(host, [tmp_path]) == tmp_path / "docker.io"


@pytest.mark.parametrize("host", ["", "..", "a/b"])
def test_certs_d_dir_rejects_path_like_hosts(tmp_path: Path, host: str) -> None:
    with pytest.raises(TLSError):
        certs_d_dir(host, [tmp_path])


def test_allows_plain_http() -> None:
    assert allows_plain_http(TLSOptions(verify=False))
    assert not allows_plain_http(TLSOptions())


# --- Verification against a live server ---------------------------------------------------------


def test_default_context_refuses_unknown_ca(server: EchoServer, tmp_path: Path) -> None:
    ctx = ssl_context(HOST, TLSOptions(), [tmp_path])
    with pytest.raises(ssl.SSLCertVerificationError):
        server.exchange(ctx)


def test_cert_dir_ca_verifies_server(server: EchoServer, cert_dir: Path, tmp_path: Path) -> None:
    ctx = ssl_context(HOST, TLSOptions(cert_dir=str(cert_dir)), [tmp_path / "unused"])
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert server.exchange(ctx) == b"ping\n"


def test_certs_d_ca_verifies_server(server: EchoServer, ca: trustme.CA, tmp_path: Path) -> None:
    host_dir = tmp_path / "root2" / HOST
    host_dir.mkdir(parents=True)
    ca.cert_pem.write_to_path(str(host_dir / "my-ca.crt"))
    roots = [tmp_path / "root1", tmp_path / "root2"]
    assert server.exchange(ssl_context(HOST, TLSOptions(), roots)) == b"ping\n"
    # Another host's directory does not apply.
    with pytest.raises(ssl.SSLCertVerificationError):
        server.exchange(ssl_context("localhost", TLSOptions(), roots))


def test_cert_dir_is_used_without_host_subdir(server: EchoServer, ca: trustme.CA, tmp_path: Path) -> None:
    nested = tmp_path / "explicit" / HOST
    nested.mkdir(parents=True)
    ca.cert_pem.write_to_path(str(nested / "ca.crt"))
    ctx = ssl_context(HOST, TLSOptions(cert_dir=str(tmp_path / "explicit")), [])
    with pytest.raises(ssl.SSLCertVerificationError):
        server.exchange(ctx)


def test_only_first_certs_d_dir_is_used(server: EchoServer, ca: trustme.CA, tmp_path: Path) -> None:
    (tmp_path / "root1" / HOST).mkdir(parents=True)  # Exists but holds no CA.
    (tmp_path / "root2" / HOST).mkdir(parents=True)
    ca.cert_pem.write_to_path(str(tmp_path / "root2" / HOST / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        server.exchange(ssl_context(HOST, TLSOptions(), [tmp_path / "root1", tmp_path / "root2"]))


def test_verify_false_accepts_anything(server: EchoServer, tmp_path: Path) -> None:
    ctx = ssl_context(HOST, TLSOptions(verify=False), [tmp_path])
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert server.exchange(ctx) == b"ping\n"


def test_client_certificate_pair_is_presented(
    mtls_server: EchoServer, cert_dir: Path, ca: trustme.CA
) -> None:
    without = ssl_context(HOST, TLSOptions(cert_dir=str(cert_dir)), [])
    assert mtls_server.exchange(without) == b""
    add_client_pair(cert_dir, ca)
    with_pair = ssl_context(HOST, TLSOptions(cert_dir=str(cert_dir)), [])
    assert mtls_server.exchange(with_pair) == b"ping\n"


def test_client_pair_with_verify_false(mtls_server: EchoServer, tmp_path: Path, ca: trustme.CA) -> None:
    add_client_pair(tmp_path, ca)
    ctx = ssl_context(HOST, TLSOptions(verify=False, cert_dir=str(tmp_path)), [])
    assert mtls_server.exchange(ctx) == b"ping\n"


def test_client_pair_from_certs_d(mtls_server: EchoServer, ca: trustme.CA, tmp_path: Path) -> None:
    host_dir = tmp_path / HOST
    host_dir.mkdir()
    ca.cert_pem.write_to_path(str(host_dir / "ca.crt"))
    add_client_pair(host_dir, ca, "a-first")
    add_client_pair(host_dir, ca, "b-second")
    assert mtls_server.exchange(ssl_context(HOST, TLSOptions(), [tmp_path])) == b"ping\n"


# --- Bad directories ----------------------------------------------------------------------------


@pytest.fixture
def bad_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "bad"
    d.mkdir()
    yield d


def test_unpaired_cert_names_the_file(bad_dir: Path, ca: trustme.CA) -> None:
    add_client_pair(bad_dir, ca)
    (bad_dir / "client.key").unlink()
    with pytest.raises(TLSError, match=r"missing key client\.key for client certificate .*client\.cert"):
        ssl_context(HOST, TLSOptions(cert_dir=str(bad_dir)), [])


def test_unpaired_key_names_the_file(bad_dir: Path, ca: trustme.CA) -> None:
    add_client_pair(bad_dir, ca)
    (bad_dir / "client.cert").unlink()
    with pytest.raises(TLSError, match=r"missing client certificate client\.cert for key .*client\.key"):
        ssl_context(HOST, TLSOptions(cert_dir=str(bad_dir)), [])


@pytest.mark.parametrize("content", [b"not a certificate", b"", b"\xff\xfe binary"])
def test_bad_ca_pem_names_the_file(bad_dir: Path, content: bytes) -> None:
    (bad_dir / "broken.crt").write_bytes(content)
    with pytest.raises(TLSError) as info:
        ssl_context(HOST, TLSOptions(cert_dir=str(bad_dir)), [])
    assert str(bad_dir / "broken.crt") in str(info.value)


def test_bad_ca_in_certs_d_is_an_error_too(tmp_path: Path) -> None:
    (tmp_path / HOST).mkdir()
    (tmp_path / HOST / "ca.crt").write_text("garbage")
    with pytest.raises(TLSError, match=r"ca\.crt"):
        ssl_context(HOST, TLSOptions(), [tmp_path])


def test_bad_client_key_names_the_files(bad_dir: Path, ca: trustme.CA) -> None:
    add_client_pair(bad_dir, ca, "a")
    add_client_pair(bad_dir, ca, "b")
    (bad_dir / "b.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TLSError, match=r"b\.cert with key .*b\.key"):
        ssl_context(HOST, TLSOptions(cert_dir=str(bad_dir)), [])


def test_mismatched_client_pair(bad_dir: Path, ca: trustme.CA) -> None:
    add_client_pair(bad_dir, ca, "one")
    add_client_pair(bad_dir, ca, "two")
    (bad_dir / "two.key").write_bytes((bad_dir / "one.key").read_bytes())  # two.cert no longer matches.
    with pytest.raises(TLSError, match="mismatched"):
        ssl_context(HOST, TLSOptions(cert_dir=str(bad_dir)), [])


def test_missing_explicit_cert_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match="does not exist"):
        ssl_context(HOST, TLSOptions(cert_dir=str(tmp_path / "nope")), [])


def test_other_files_are_ignored(bad_dir: Path, ca: trustme.CA) -> None:
    (bad_dir / "README").write_text("hello")
    (bad_dir / "ca.pem").write_text("ignored: only .crt files are CAs")
    ca.cert_pem.write_to_path(str(bad_dir / "ca.crt"))
    ssl_context(HOST, TLSOptions(cert_dir=str(bad_dir)), [])
