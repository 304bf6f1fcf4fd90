"""Writing auth files for ``login``/``logout``, as ``skopeo login/logout`` (c/common ``pkg/auth``) do.

Writes are read-modify-write of a JSON object, keeping every key and entry we do not touch, and atomic:
a ``0600`` temporary file in the same directory, fsync, rename, fsync of the directory. New parent
directories are ``0700``. Credential helpers are only read (by :func:`get_login`), never written.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from mirror.errors import ConfigError, CredentialError
from mirror.http.credentials import (
    DOCKER_HUB,
    HUB_ALIASES,
    CredentialOptions,
    explicit_auth_path,
    load_auth_json,
    resolve_credential,
    runtime_auth_path,
)


def default_auth_path(authfile: str | None, env: Mapping[str, str]) -> Path:
    """Where login writes: ``--authfile`` / ``$REGISTRY_AUTH_FILE``, else the runtime-dir auth.json.

    Like c/image, a ``$XDG_RUNTIME_DIR`` that names a missing directory is an error, not a silent fallback.
    """
    explicit = explicit_auth_path(authfile, env)
    if explicit is not None:
        return explicit
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir and not Path(runtime_dir).is_dir():
        raise ConfigError(
            f"{runtime_dir!r} directory set by $XDG_RUNTIME_DIR does not exist; "
            "create the directory or unset $XDG_RUNTIME_DIR"
        )
    return runtime_auth_path(env)


def normalize_login_key(key: str) -> str:
    """The auth-file key for a login argument (c/common ``normalizeAuthFileKey`` + c/image ``validateKey``).

    A URL means its whole registry (scheme and path dropped); ``host/ns/repo`` keys stay namespaced;
    Docker Hub aliases (``index.docker.io``, ``registry-1.docker.io``, ``https://index.docker.io/v1/``)
    become ``docker.io`` as podman writes it.
    """
    stripped = key.removeprefix("http://").removeprefix("https://")
    if stripped != key:
        stripped = stripped.partition("/")[0]
    stripped = stripped.rstrip("/")
    host, sep, rest = stripped.partition("/")
    # The key text stays out of these messages: "user:pass@host" would put a password in them.
    if not host:
        raise CredentialError("invalid registry key: no registry host")
    if "@" in stripped:
        raise CredentialError("invalid registry key: contains a '@' character (use host[:port][/path])")
    if ":" in rest:
        raise CredentialError("invalid registry key: contains a ':' character after host[:port] (a tag?)")
    if host in HUB_ALIASES:
        host = DOCKER_HUB
    return f"{host}{sep}{rest}"


def _read(path: Path) -> dict[str, Any]:
    return load_auth_json(path) or {}


def _auths(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    auths = data.get("auths")
    if auths is None:
        auths = data["auths"] = {}
    if not isinstance(auths, dict):
        raise ConfigError(f"auth file {path}: 'auths' is not a JSON object")
    return auths


def _make_private_dirs(directory: Path) -> None:
    """``mkdir -p`` where every directory created is ``0700`` (pathlib only applies mode to the last)."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for item in reversed(missing):
        with contextlib.suppress(FileExistsError):
            item.mkdir(mode=0o700)


def _write(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically replace ``path`` with ``data`` as JSON, mode ``0600`` from creation."""
    payload = (json.dumps(data, indent="\t") + "\n").encode()
    try:
        _make_private_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise CredentialError(f"cannot write auth file {path}: {exc.strerror or exc}") from None


def store(path: Path, key: str, username: str, password: str) -> None:
    """Record ``username``/``password`` for ``key`` in ``path`` (replacing that entry only).

    Raises :class:`CredentialError` for an unusable username, or when the file routes ``key`` to a
    credential helper (skopeo would store into the helper; we do not write to helpers).
    """
    key = normalize_login_key(key)
    if not username:
        raise CredentialError("username can't be empty")
    if ":" in username:
        raise CredentialError("username must not contain ':'")
    data = _read(path)
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict) and key in helpers:
        raise CredentialError(
            f"auth file {path} sends {key} to credential helper {helpers[key]!r}; "
            "storing credentials in credential helpers is not supported"
        )
    auth = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    _auths(path, data)[key] = {"auth": auth}
    _write(path, data)


def remove(path: Path, key: str) -> bool:
    """Drop the entry for exactly ``key`` (normalised) from ``path``; ``True`` if one was removed.

    Only ``path`` is edited, and helper-held credentials are left alone.
    """
    key = normalize_login_key(key)
    data = load_auth_json(path)
    if data is None:
        return False
    auths = _auths(path, data)
    if key not in auths:
        return False
    del auths[key]
    _write(path, data)
    return True


def remove_all(path: Path) -> None:
    """``logout --all``: empty ``auths`` in ``path`` (c/image rewrites the file, it does not delete it).

    Other top-level keys, including ``credHelpers``, are kept; a missing file stays missing.
    """
    data = load_auth_json(path)
    if data is None:
        return
    data["auths"] = {}
    _write(path, data)


def get_login(key: str, authfile: str | None, env: Mapping[str, str]) -> str | None:
    """``login --get-login``: the username stored for ``key``, searching what :func:`resolve_credential` does.

    ``None`` when not logged in, or when only a token (no username) is stored. Runs the (async) lookup
    in an event loop of its own, so it is for callers outside one (the CLI); async code awaits
    :func:`resolve_credential` instead.
    """
    key = normalize_login_key(key)
    host, _, repository = key.partition("/")
    lookup = functools.partial(resolve_credential, host, repository or None, CredentialOptions(authfile=authfile), env)
    cred = anyio.run(lookup, backend="asyncio")
    return cred.username or None
