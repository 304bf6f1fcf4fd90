"""containers-registries.d(5): where a registry image's signatures live (containers/image's
``docker/registries_d.go``).

The directory is ``--registries.d DIR``, else ``~/.config/containers/registries.d`` if it exists, else
``/etc/containers/registries.d`` (one directory, never merged). Every ``*.yaml`` file in it is read;
``default-docker`` and each ``docker`` scope may be defined once across the files. For an image, the
most specific scope that sets a value wins: the image itself (``host/repo:tag`` or ``…@digest``), its
namespaces (``host/repo``, ``host/ns``, ``host``), wildcard domains (``*.example.com``), then
``default-docker``. Keys: ``lookaside`` (read, and write unless ``lookaside-staging`` is set),
``lookaside-staging`` (write), their old names ``sigstore`` / ``sigstore-staging``, and
``use-sigstore-attachments``. With no lookaside configured, containers/image's built-in default is
used: ``/var/lib/containers/sigstore`` for root, ``~/.local/share/containers/sigstore`` otherwise.
A signature's URL is ``<lookaside>/<repository path>@<algorithm>=<hex>/signature-<N>``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from msgspec import Struct
from yarl import URL

from mirror.core.digest import Digest
from mirror.core.reference import Reference
from mirror.errors import ConfigError

SYSTEM_DIR = "/etc/containers/registries.d"
USER_DIR = ".config/containers/registries.d"
ROOT_LOOKASIDE = "/var/lib/containers/sigstore"
USER_LOOKASIDE = ".local/share/containers/sigstore"
MAX_FILE = 1 << 20
_KEYS = {"lookaside": "lookaside", "lookaside-staging": "lookaside_staging", "sigstore": "sigstore",
         "sigstore-staging": "sigstore_staging"}


class Namespace(Struct, frozen=True):
    """One scope's settings (empty string: not set)."""

    lookaside: str = ""
    lookaside_staging: str = ""
    sigstore: str = ""
    sigstore_staging: str = ""
    use_sigstore_attachments: bool | None = None

    def top_level(self, write: bool) -> str:
        if write and (self.lookaside_staging or self.sigstore_staging):
            return self.lookaside_staging or self.sigstore_staging
        return self.lookaside or self.sigstore


class SignatureStorage(Struct, frozen=True):
    """Where one registry image's signatures are read and written."""

    read: URL                 # lookaside base for the repository (file://, http://, https://)
    write: URL                # lookaside(-staging) base for the repository
    attachments: bool = False  # use-sigstore-attachments

    def signature_url(self, base: URL, digest: Digest, index: int) -> URL:
        """``<base>@<alg>=<hex>/signature-<index+1>``."""
        return base.with_path(f"{base.path}@{digest.algorithm}={digest.hex}/signature-{index + 1}", encoded=False)


class RegistriesD(Struct, frozen=True):
    """The merged configuration of one registries.d directory."""

    default: Namespace | None = None
    docker: Mapping[str, Namespace] = MappingProxyType({})
    builtin_lookaside: str = ROOT_LOOKASIDE  # a directory path

    @property
    def per_image(self) -> bool:
        """Whether a scope may name a single image (``repo:tag``, ``repo@digest``): otherwise every
        image of a repository has its repository's storage."""
        return any("@" in name or ":" in name.rsplit("/", 1)[-1] for name in self.docker)

    def storage(self, ref: Reference) -> SignatureStorage:
        scopes = self._scopes(ref)
        read, write = self._top_level(scopes, False), self._top_level(scopes, True)
        attachments = next((ns.use_sigstore_attachments for ns in scopes if ns.use_sigstore_attachments is not None),
                           False)
        return SignatureStorage(_base(read or self._builtin(), ref), _base(write or self._builtin(), ref), attachments)

    def _scopes(self, ref: Reference) -> list[Namespace]:
        names = [str(ref), *namespaces(ref)]
        found = [self.docker[name] for name in names if name in self.docker]
        return found + ([self.default] if self.default is not None else [])

    @staticmethod
    def _top_level(scopes: list[Namespace], write: bool) -> str:
        return next((ns.top_level(write) for ns in scopes if ns.top_level(write)), "")

    def _builtin(self) -> str:
        return str(URL.build(scheme="file", path=self.builtin_lookaside))


def namespaces(ref: Reference) -> list[str]:
    """containers/image's docker namespaces: ``host/a/b``, ``host/a``, ``host``, then ``*.domain``
    wildcards of the host without its port."""
    name = f"{ref.repo.registry}/{ref.repo.path}"
    out = []
    while True:
        out.append(name)
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    host = name.split(":", 1)[0]
    while "." in host:
        host = host.split(".", 1)[1]
        out.append("*." + host)
    return out


def _base(top_level: str, ref: Reference) -> URL:
    try:
        url = URL(top_level)
    except ValueError:
        raise ConfigError(f"invalid signature storage URL {top_level!r}") from None
    path = ref.repo.path
    if posixpath.normpath(path) != path:
        raise ConfigError(f"unexpected path elements in {ref.repo} for signature storage")
    return url.with_path(url.path.rstrip("/") + "/" + path)


def registries_dir(explicit: str | None, env: Mapping[str, str]) -> Path:
    if explicit:
        return Path(explicit)
    home = env.get("HOME")
    if home and (Path(home) / USER_DIR).exists():
        return Path(home) / USER_DIR
    return Path(SYSTEM_DIR)


def builtin_lookaside(env: Mapping[str, str]) -> str:
    if os.geteuid() == 0:
        return ROOT_LOOKASIDE
    return str(Path(env.get("HOME") or os.path.expanduser("~")) / USER_LOOKASIDE)


def load(explicit: str | None, env: Mapping[str, str]) -> RegistriesD:
    """Read and merge the directory's ``*.yaml`` files (a missing directory: no configuration)."""
    directory = registries_dir(explicit, env)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".yaml"))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        raise ConfigError(f"reading registries.d directory {directory}: {exc.strerror or exc}") from None
    default: Namespace | None = None
    default_from = ""
    docker: dict[str, Namespace] = {}
    docker_from: dict[str, str] = {}
    for name in names:
        path = directory / name
        doc = _read(path)
        if doc.get("default-docker") is not None:
            if default is not None:
                raise ConfigError(f'signature storage configuration: "default-docker" defined both in '
                                  f"{default_from} and {path}")
            default, default_from = _namespace(doc["default-docker"], f"{path}: default-docker"), str(path)
        for scope, value in _mapping(doc.get("docker"), f"{path}: docker").items():
            if scope in docker:
                raise ConfigError(f'signature storage configuration: "docker" namespace {scope!r} defined both in '
                                  f"{docker_from[scope]} and {path}")
            docker[str(scope)], docker_from[scope] = _namespace(value, f"{path}: docker.{scope}"), str(path)
    return RegistriesD(default, MappingProxyType(docker), builtin_lookaside(env))


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except FileNotFoundError:  # removed since the listing: as containers/image, skip it
        return {}
    except OSError as exc:
        raise ConfigError(f"reading {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise ConfigError(f"{path} is larger than {MAX_FILE} bytes")
    import yaml  # only when a registries.d file exists: not at every start-up

    try:
        doc = yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"parsing {path}: {' '.join(str(exc).split())}") from None
    return _mapping(doc, str(path))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}: expected a mapping")
    return value


def _namespace(value: Any, where: str) -> Namespace:
    """Unknown keys are ignored, as containers/image ignores them."""
    doc = _mapping(value, where)
    fields: dict[str, Any] = {}
    for key, attr in _KEYS.items():
        text = doc.get(key)
        if text is not None and not isinstance(text, str):
            raise ConfigError(f"{where}.{key}: expected a URL string")
        fields[attr] = text or ""
    attachments = doc.get("use-sigstore-attachments")
    if attachments is not None and not isinstance(attachments, bool):
        raise ConfigError(f"{where}.use-sigstore-attachments: expected true or false")
    return Namespace(**fields, use_sigstore_attachments=attachments)
