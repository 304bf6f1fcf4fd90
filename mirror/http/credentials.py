"""Registry credentials, found the way skopeo (containers/image) finds them.

Order (containers-auth.json(5); c/image ``pkg/docker/config``):

1. ``--creds`` / ``--username``+``--password`` / ``--registry-token`` / ``--no-creds`` override everything.
2. ``--authfile`` (default ``$REGISTRY_AUTH_FILE``) means only that file is read.
3. Otherwise ``${XDG_RUNTIME_DIR}/containers/auth.json`` (``/run/containers/<uid>/auth.json`` when unset),
   ``${XDG_CONFIG_HOME:-$HOME/.config}/containers/auth.json``, ``$DOCKER_CONFIG/config.json`` (else
   ``$HOME/.docker/config.json``) and ``$HOME/.dockercfg`` (legacy: no ``auths`` wrapper).

Inside a file: a ``credHelpers`` entry for the host decides alone; else ``auths`` keys from most to least
specific (``host/ns/repo`` .. ``host``); else keys normalised (URL scheme and path dropped, Docker Hub aliases
unified). The first file that yields credentials wins. ``credsStore`` is ignored, as c/image does.

Every environment lookup goes through the ``env`` mapping (tests pass a fake one). Lookups are async and
never block the event loop: auth files are read in a worker thread, credential helpers run as awaited
child processes (``credhelper.py``). Secrets never appear in a repr or an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pwd
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from msgspec import Struct

from mirror.errors import ConfigError, CredentialError
from mirror.http.credhelper import DEFAULT_HELPER_TIMEOUT, TOKEN_USER, run_helper

DOCKER_HUB = "docker.io"
"""The canonical name of Docker Hub, as references and podman/skopeo auth files spell it."""

HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class Credential(Struct, frozen=True):
    """What to authenticate with. All fields empty = anonymous.

    ``identity_token`` is an OAuth2 refresh token (``identitytoken`` / helper ``<token>``);
    ``registry_token`` is a bearer token sent as-is (``--registry-token``) and wins over the others.
    """

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @property
    def is_anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def __repr__(self) -> str:
        parts = [f"username={self.username!r}"] if self.username else []
        for name in ("password", "identity_token", "registry_token"):
            if getattr(self, name):
                parts.append(f"{name}=<redacted>")
        return f"Credential({', '.join(parts) or '<anonymous>'})"

    __str__ = __repr__


ANONYMOUS = Credential()


class CredentialOptions(Struct, frozen=True):
    """skopeo's per-image credential flags; ``None`` = flag absent (``""`` is present but empty).

    Validated on construction like skopeo does: conflicts raise :class:`ConfigError`, an unusable
    ``--creds`` value raises :class:`CredentialError`.
    """

    creds: str | None = None
    username: str | None = None
    password: str | None = None
    registry_token: str | None = None
    no_creds: bool = False
    authfile: str | None = None

    def __post_init__(self) -> None:
        # Same checks, order and wording as skopeo cmd/skopeo/utils.go newSystemContext.
        if self.creds is not None and self.no_creds:
            raise ConfigError("creds and no-creds cannot be specified at the same time")
        if self.username is not None and self.no_creds:
            raise ConfigError("username and no-creds cannot be specified at the same time")
        if self.creds is not None and self.username is not None:
            raise ConfigError("creds and username cannot be specified at the same time")
        if (self.username is None) != (self.password is None):
            if self.username is not None:
                raise ConfigError("password must be specified when username is specified")
            raise ConfigError("username must be specified when password is specified")
        # Not checked by skopeo (which would still send the token); refusing is less surprising.
        if self.registry_token is not None and self.no_creds:
            raise ConfigError("registry-token and no-creds cannot be specified at the same time")
        if self.creds is not None:
            parse_creds(self.creds)

    def __repr__(self) -> str:
        shown = {
            "creds": None if self.creds is None else self.creds.partition(":")[0] + ":<redacted>",
            "username": self.username,
            "password": None if self.password is None else "<redacted>",
            "registry_token": None if self.registry_token is None else "<redacted>",
            "authfile": self.authfile,
        }
        parts = [f"{k}={v!r}" for k, v in shown.items() if v is not None]
        if self.no_creds:
            parts.append("no_creds=True")
        return f"CredentialOptions({', '.join(parts)})"

    __str__ = __repr__

    def flag_credential(self) -> Credential | None:
        """The credential the flags impose, or ``None`` when the auth files decide."""
        if self.no_creds:
            return ANONYMOUS
        token = self.registry_token or ""
        if self.creds is not None:
            username, password = parse_creds(self.creds)
        elif self.username is not None:  # Present, even if empty, overrides the files as in skopeo.
            username, password = self.username, self.password or ""
        else:
            return Credential(registry_token=token) if token else None
        return Credential(username=username, password=password, registry_token=token)


def parse_creds(text: str) -> tuple[str, str]:
    """Split ``USER:PASSWORD`` on the first colon.

    skopeo takes a colon-less ``USER`` as an empty password; we refuse it (an empty password after a colon,
    ``USER:``, is still accepted).
    """
    if text == "":
        raise CredentialError("credentials can't be empty")
    username, sep, password = text.partition(":")
    if not username:
        raise CredentialError("username can't be empty")
    if not sep:
        raise CredentialError("password missing in --creds; use USER:PASSWORD")
    return username, password


class AuthFile(Struct, frozen=True):
    """One file in the search list; ``legacy`` = ``.dockercfg`` format (the ``auths`` map at top level)."""

    path: Path
    legacy: bool = False


def home_dir(env: Mapping[str, str]) -> Path:
    """``$HOME`` from ``env``, else the password database entry (like Go's ``homedir.Get``)."""
    home = env.get("HOME")
    return Path(home) if home else Path(pwd.getpwuid(os.getuid()).pw_dir)


def runtime_auth_path(env: Mapping[str, str]) -> Path:
    """``${XDG_RUNTIME_DIR}/containers/auth.json``, else ``/run/containers/<uid>/auth.json``."""
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "containers" / "auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def explicit_auth_path(authfile: str | None, env: Mapping[str, str]) -> Path | None:
    """``--authfile``, else ``$REGISTRY_AUTH_FILE`` (skopeo's flag default); empty counts as unset."""
    chosen = authfile or env.get("REGISTRY_AUTH_FILE")
    return Path(chosen) if chosen else None


def auth_file_paths(authfile: str | None, env: Mapping[str, str]) -> tuple[AuthFile, ...]:
    """The files searched, in order (c/image ``getAuthFilePaths``, Linux flavour)."""
    explicit = explicit_auth_path(authfile, env)
    if explicit is not None:
        return (AuthFile(explicit),)
    home = home_dir(env)
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    docker_config = env.get("DOCKER_CONFIG")
    docker = Path(docker_config) / "config.json" if docker_config else home / ".docker" / "config.json"
    return (
        AuthFile(runtime_auth_path(env)),
        AuthFile(config_home / "containers" / "auth.json"),
        AuthFile(docker),
        AuthFile(home / ".dockercfg", legacy=True),
    )


def load_auth_json(path: Path) -> dict[str, Any] | None:
    """Parse an auth file as a JSON object; ``None`` when it does not exist."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read auth file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"auth file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except ValueError:
        raise ConfigError(f"auth file {path} is not valid JSON: bad text encoding") from None
    except RecursionError:
        raise ConfigError(f"auth file {path} is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"auth file {path} is not a JSON object")
    return data


def canonical_host(host: str) -> str:
    """Docker Hub's API and index host names mean ``docker.io`` for credential keys and certs.d."""
    return DOCKER_HUB if host in HUB_ALIASES else host


def normalize_auth_key(key: str, legacy: bool = False) -> str:
    """c/image ``normalizeAuthFileKey``: a URL means its host; Hub aliases become ``index.docker.io``.

    A path is dropped only from URLs (and in legacy files): ``quay.io/ns`` stays a namespace key.
    """
    stripped = key.removeprefix("http://").removeprefix("https://")
    if legacy or stripped != key:
        stripped = stripped.partition("/")[0]
    return "index.docker.io" if stripped in HUB_ALIASES else stripped


def lookup_keys(host: str, repository: str | None) -> tuple[str, ...]:
    """``host/ns/repo``, ``host/ns``, ``host``: most specific first."""
    keys = [host]
    path = (repository or "").strip("/")
    for component in path.split("/") if path else ():
        keys.append(f"{keys[-1]}/{component}")
    return tuple(reversed(keys))


async def run_credential_helper(
    helper: str, server: str, env: Mapping[str, str], helper_timeout: float = DEFAULT_HELPER_TIMEOUT
) -> Credential:
    """``docker-credential-<helper> get`` for ``server`` (see :func:`credhelper.run_helper`).

    ``Username == "<token>"`` means the secret is an identity (refresh) token; a "credentials not found"
    answer means anonymous.
    """
    answer = await run_helper(helper, server, env, helper_timeout)
    if answer is None:
        return ANONYMOUS
    username, secret = answer
    if username == TOKEN_USER:
        return Credential(identity_token=secret)
    return Credential(username=username, password=secret)


class HelperCall(Struct, frozen=True):
    """An auth file's verdict that a credential helper decides: ``docker-credential-<helper>`` for ``server``."""

    helper: str
    server: str


def _decode_entry(path: Path, key: str, entry: object) -> Credential:
    """An ``auths`` entry; ``{}`` (a Docker credential-helper marker) and a colon-less auth are anonymous."""
    if not isinstance(entry, dict):
        raise ConfigError(f"auth file {path}: entry {key!r} is not a JSON object")
    auth = entry.get("auth") or ""
    token = entry.get("identitytoken") or ""
    if not isinstance(auth, str) or not isinstance(token, str):
        raise ConfigError(f"auth file {path}: entry {key!r} has a non-string auth or identitytoken")
    username = password = ""
    if auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ConfigError(f"auth file {path}: entry {key!r} has an invalid base64 auth field") from None
        user, sep, secret = decoded.partition(":")
        if sep:  # Without a colon Docker skips the entry, and so do we.
            username, password = user, secret.strip("\x00")
    return Credential(username=username, password=password, identity_token=token)


def _mapping(path: Path, data: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = data.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"auth file {path}: {field!r} is not a JSON object")
    return value


def lookup_in_file(source: AuthFile, host: str, repository: str | None) -> Credential | HelperCall:
    """Credentials for ``host``/``repository`` in one file (anonymous when it has none), or the helper
    call that decides. Blocking (reads the file): run it in a worker thread."""
    data = load_auth_json(source.path)
    if data is None:
        return ANONYMOUS
    registry = canonical_host(host)
    if source.legacy:
        auths: Mapping[str, Any] = data
        helpers: Mapping[str, Any] = {}
    else:
        auths = _mapping(source.path, data, "auths")
        helpers = _mapping(source.path, data, "credHelpers")

    # A credHelpers entry decides for the whole file (c/image findCredentialsInFile). Exact key first, then
    # normalised keys (an extension: Docker writes Hub's as https://index.docker.io/v1/).
    wanted = normalize_auth_key(registry)
    helper_key = registry if registry in helpers else None
    if helper_key is None:
        helper_key = next((k for k in helpers if normalize_auth_key(k) == wanted), None)
    if helper_key is not None:
        name = helpers[helper_key]
        if not isinstance(name, str):
            raise ConfigError(f"auth file {source.path}: credHelpers entry {helper_key!r} is not a string")
        return HelperCall(name, helper_key)

    for key in (registry,) if source.legacy else lookup_keys(registry, repository):
        if key in auths:
            cred = _decode_entry(source.path, key, auths[key])
            if not cred.is_anonymous:
                return cred
    for key, entry in auths.items():  # File order, so the result is deterministic.
        if normalize_auth_key(key, source.legacy) == wanted:
            cred = _decode_entry(source.path, key, entry)
            if not cred.is_anonymous:
                return cred
    return ANONYMOUS


async def resolve_credential(
    host: str,
    repository: str | None,
    opts: CredentialOptions,
    env: Mapping[str, str],
    *,
    helper_timeout: float = DEFAULT_HELPER_TIMEOUT,
) -> Credential:
    """The credential for ``repository`` (path inside the registry, e.g. ``library/busybox``) on ``host``.

    ``host`` is ``host[:port]`` as in the reference; Hub aliases are treated as ``docker.io``.
    Returns :data:`ANONYMOUS` when nothing matches. Never blocks the event loop.
    """
    imposed = opts.flag_credential()
    if imposed is not None:
        return imposed
    # Every file is read in one worker-thread hop; only a credential helper is run from here.
    for found in await anyio.to_thread.run_sync(_lookup_files, opts.authfile, env, host, repository):
        cred = await run_credential_helper(found.helper, found.server, env, helper_timeout) \
            if isinstance(found, HelperCall) else found
        if not cred.is_anonymous:
            return cred
    return ANONYMOUS


def _lookup_files(authfile: str | None, env: Mapping[str, str], host: str,
                  repository: str | None) -> list[Credential | HelperCall]:
    """What each auth file says, in search order, up to the first file that names a credential."""
    out: list[Credential | HelperCall] = []
    for source in auth_file_paths(authfile, env):
        found = lookup_in_file(source, host, repository)
        out.append(found)
        if isinstance(found, Credential) and not found.is_anonymous:
            break
    return out
