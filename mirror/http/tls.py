"""TLS settings per registry host, as c/image builds them (``docker/docker_client.go`` dockerCertDir,
``pkg/tlsclientconfig``; containers-certs.d(5)).

The certificate directory is ``--cert-dir`` itself when given, else ``<root>/<host[:port]>`` under the first
certs.d root where it exists (``~/.config/containers/certs.d``, ``/etc/containers/certs.d``,
``/etc/docker/certs.d``). In it, ``*.crt`` are extra CAs on top of the system ones and ``X.cert`` + ``X.key``
are client certificate pairs. Building a context reads files: the caller caches one per host.
"""

from __future__ import annotations

import os
import pwd
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from msgspec import Struct

from mirror.errors import TLSError

_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class TLSOptions(Struct, frozen=True):
    """skopeo's ``--tls-verify`` and ``--cert-dir`` for one side of a copy."""

    verify: bool = True
    cert_dir: str | None = None


def default_certs_roots(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The certs.d roots in c/image's order; ``$HOME`` comes from ``env``."""
    home = env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return (
        Path(home) / ".config" / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    )


def _dir_name(host: str) -> str:
    if not host or "/" in host or "\\" in host or host in (".", ".."):
        raise TLSError(f"invalid registry host {host!r} for a certificate directory")
    return "docker.io" if host in _HUB_ALIASES else host


def certs_d_dir(host: str, roots: Sequence[Path]) -> Path | None:
    """The first existing ``<root>/<host[:port]>`` directory (Docker Hub's is ``docker.io``), or ``None``.

    Only that one directory is used; unreadable candidates are skipped as c/image does.
    """
    name = _dir_name(host)
    for root in roots:
        candidate = root / name
        try:
            if candidate.is_dir():
                return candidate
        except PermissionError:
            continue
    return None


def allows_plain_http(opts: TLSOptions) -> bool:
    """``--tls-verify=false`` also permits falling back to plain HTTP, as in skopeo."""
    return not opts.verify


def _cert_dir(host: str, opts: TLSOptions, roots: Sequence[Path]) -> Path | None:
    if opts.cert_dir is None:
        return certs_d_dir(host, roots)
    directory = Path(opts.cert_dir)
    if not directory.is_dir():
        # c/image silently ignores a missing --cert-dir; a typo then surfaces as a confusing verify failure.
        raise TLSError(f"certificate directory {directory} does not exist or is not a directory")
    return directory


def _load_ca(ctx: ssl.SSLContext, path: Path) -> None:
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError:  # Removed since the listing: the same race c/image tolerates.
        return
    except OSError as exc:
        raise TLSError(f"cannot read CA certificate {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TLSError(f"CA certificate {path} is not PEM text") from None
    try:
        ctx.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError):
        raise TLSError(f"CA certificate {path} holds no valid PEM certificate") from None


def _load_pair(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        # An empty password makes an encrypted key fail instead of prompting on the terminal.
        ctx.load_cert_chain(certfile=cert, keyfile=key, password="")
    except FileNotFoundError:
        raise TLSError(f"client certificate {cert} or key {key} disappeared") from None
    except (ssl.SSLError, OSError):
        raise TLSError(
            f"cannot load client certificate {cert} with key {key} (bad PEM, mismatched or encrypted key)"
        ) from None


def _load_cert_dir(ctx: ssl.SSLContext, directory: Path, explicit: bool) -> None:
    try:
        names = sorted(os.listdir(directory))
    except PermissionError:
        if explicit:
            raise TLSError(f"cannot read certificate directory {directory}: permission denied") from None
        return  # c/image skips an unreadable certs.d directory.
    except OSError as exc:
        raise TLSError(f"cannot read certificate directory {directory}: {exc.strerror or exc}") from None
    present = set(names)
    pairs: list[tuple[Path, Path]] = []
    for name in names:
        if name.endswith(".crt"):
            _load_ca(ctx, directory / name)
        elif name.endswith(".cert"):
            key_name = name.removesuffix(".cert") + ".key"
            if key_name not in present:
                raise TLSError(
                    f"missing key {key_name} for client certificate {directory / name} "
                    "(CA certificates should use the extension .crt)"
                )
            pairs.append((directory / name, directory / key_name))
        elif name.endswith(".key"):
            cert_name = name.removesuffix(".key") + ".cert"
            if cert_name not in present:
                raise TLSError(f"missing client certificate {cert_name} for key {directory / name}")
    for index, (cert, key) in enumerate(pairs):
        # An SSLContext holds one client chain per key type: the first pair (by name) is used, the rest
        # are still validated so a broken file is reported rather than ignored.
        target = ctx if index == 0 else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load_pair(target, cert, key)


def context_key(host: str, opts: TLSOptions, roots: Sequence[Path]) -> tuple[bool, Path | None]:
    """What makes two hosts' contexts identical: verification and the cert directory used."""
    return opts.verify, _cert_dir(host, opts, roots)


def _client_context(verify: bool) -> ssl.SSLContext:
    """A client context trusting the system CAs; without verification, one that checks nothing and so
    loads no CA (``create_default_context`` is this ``SSLContext`` plus the system CAs)."""
    if verify:
        return ssl.create_default_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ssl_context(host: str, opts: TLSOptions, roots: Sequence[Path]) -> ssl.SSLContext:
    """A client context for ``host`` (``host[:port]``): system CAs plus the cert directory's files.

    ``verify=False`` disables certificate and host name checks; client certificates still load.
    Loading the system CAs costs tens of milliseconds: callers cache by :func:`context_key`; without
    verification they would go unused, and are not loaded.
    """
    ctx = _client_context(opts.verify)
    directory = _cert_dir(host, opts, roots)
    if directory is not None:
        _load_cert_dir(ctx, directory, explicit=opts.cert_dir is not None)
    return ctx


def daemon_context(cert_dir: str | None, verify: bool) -> ssl.SSLContext:
    """A client context for a Docker daemon on ``tcp://`` (containers/image's rule): system CAs, and from
    ``cert_dir`` Docker's file names ``ca.pem`` (CA) and ``cert.pem``/``key.pem`` (client pair)."""
    ctx = _client_context(verify)
    if cert_dir is None:
        return ctx
    directory = Path(cert_dir)
    if not directory.is_dir():
        raise TLSError(f"certificate directory {directory} does not exist or is not a directory")
    if (directory / "ca.pem").exists():
        _load_ca(ctx, directory / "ca.pem")
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() != key.exists():
        raise TLSError(f"{directory}: cert.pem and key.pem must be present together")
    if cert.exists():
        _load_pair(ctx, cert, key)
    return ctx
