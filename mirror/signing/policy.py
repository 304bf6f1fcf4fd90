"""containers-policy.json(5): which images ``copy`` and ``sync`` may read, as skopeo decides it.

The file is ``--policy PATH``, else ``$HOME/.config/containers/policy.json`` if present, else
``/etc/containers/policy.json``; ``--insecure-policy`` skips it. As in containers/image, a missing file
is an error, unknown fields are errors, and the requirements for an image come from the most
specific scope of its transport: the image's own identity, then its namespaces (``registry/repo``,
``registry/ns``, ``registry``, ``*.domain`` for docker; parent directories for ``dir:``/``oci:``),
then the transport's ``""`` scope, then ``default``. Every requirement of the list must accept.

Supported requirements: ``insecureAcceptAnything``, ``reject``, ``signedBy`` (GPG keys) and
``sigstoreSigned`` with public keys (``keyPath``, ``keyPaths``, ``keyData``, ``keyDatas``), each with
every ``signedIdentity`` form. Signatures come from the source: ``dir:``'s files, a registry's
lookaside storage and sigstore attachments (registries.d). Requirements mirror cannot check are
refused (fail closed) rather than ignored: ``sigstoreSigned`` with Fulcio, Rekor or PKI, and
``signedBaseLayer``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from mirror.core.reference import Reference
from mirror.errors import ConfigError

SYSTEM_POLICY = "/etc/containers/policy.json"
MAX_POLICY = 4 << 20
KNOWN_TRANSPORTS = frozenset({"docker", "atomic", "dir", "oci", "oci-archive", "docker-archive", "docker-daemon",
                              "containers-storage", "tarball", "sif", "ostree"})
IDENTITY_FIELDS = {"matchExact": (), "matchRepoDigestOrExact": (), "matchRepository": (),
                   "exactReference": ("dockerReference",), "exactRepository": ("dockerRepository",),
                   "remapIdentity": ("prefix", "signedPrefix")}


class Identity(Struct, frozen=True):
    """A ``signedIdentity``: how a signature's docker-reference must relate to the image."""

    kind: str = "matchRepoDigestOrExact"
    values: tuple[str, ...] = ()  # the fields named in IDENTITY_FIELDS[kind], in that order


class Requirement(Struct, frozen=True):
    kind: str  # insecureAcceptAnything | reject | signedBy | sigstoreSigned | another (refused when evaluated)
    key_paths: tuple[Path, ...] = ()  # public key files (read when evaluated, as c/image): OpenPGP or PEM
    key_data: tuple[bytes, ...] = ()  # keyData (keyDatas: several)
    identity: Identity = field(default_factory=Identity)
    unsupported: str = ""             # why mirror cannot check it (Fulcio, Rekor, PKI): refused when evaluated

    def keys(self) -> list[bytes]:
        keys = list(self.key_data)
        for path in self.key_paths:
            try:
                keys.append(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"signature policy: reading key file {path}: {exc.strerror or exc}") from None
        return keys


Requirements = tuple[Requirement, ...]


class ImagePolicy(Struct, frozen=True):
    """The requirements one source image must meet, and what they are checked against."""

    requirements: Requirements
    reference: Reference | None  # the source's docker reference (None: a local image has none)
    scope: str                   # the scope that matched, for messages


class Policy(Struct, frozen=True):
    source: str
    default: Requirements
    transports: Mapping[str, Mapping[str, Requirements]]

    def requirements(self, transport: str, identity: str, namespaces: list[str]) -> tuple[Requirements, str]:
        scopes = self.transports.get(transport)
        if scopes is not None:
            for scope in ([identity] if identity else []) + namespaces:
                if scope in scopes:
                    return scopes[scope], f"{transport}:{scope}"
            if "" in scopes:
                return scopes[""], f"{transport} (transport default)"
        return self.default, "default"

    def for_docker(self, ref: Reference, transport: str = "docker") -> ImagePolicy:
        requirements, scope = self.requirements(transport, str(ref), docker_namespaces(ref))
        return ImagePolicy(requirements, ref, scope)

    def for_path(self, transport: str, path: str, ref: str = "") -> ImagePolicy:
        resolved = os.path.realpath(path)
        identity = f"{resolved}:{ref}" if ref else resolved
        namespaces = ([resolved] if ref else []) + _parents(resolved)
        requirements, scope = self.requirements(transport, identity, namespaces)
        return ImagePolicy(requirements, None, scope)

    def for_transport(self, transport: str) -> ImagePolicy:
        requirements, scope = self.requirements(transport, "", [])
        return ImagePolicy(requirements, None, scope)


def docker_namespaces(ref: Reference) -> list[str]:
    """``host/a/b`` → ``host/a/b``, ``host/a``, ``host``, then ``*.example.com``-style host wildcards."""
    name = f"{ref.repo.registry}/{ref.repo.path}"
    out = []
    while "/" in name:
        out.append(name)
        name = name.rsplit("/", 1)[0]
    out.append(name)
    host = ref.repo.registry
    if ":" not in host:
        parts = host.split(".")
        out.extend("*." + ".".join(parts[i:]) for i in range(1, len(parts)))
    return out


def _parents(path: str) -> list[str]:
    out = []
    while (parent := posixpath.dirname(path)) not in ("/", path):
        out.append(parent)
        path = parent
    return out


def policy_path(explicit: str | None, env: Mapping[str, str]) -> Path:
    if explicit:
        return Path(explicit)
    home = env.get("HOME")
    if home:
        user = Path(home) / ".config" / "containers" / "policy.json"
        if user.exists():
            return user
    return Path(SYSTEM_POLICY)


def load_policy(explicit: str | None, env: Mapping[str, str] | None = None) -> Policy:
    path = policy_path(explicit, os.environ if env is None else env)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY + 1)
    except OSError as exc:
        raise ConfigError(f"loading the signature policy {path}: {exc.strerror or exc} "
                          "(give one with --policy, or skip it with --insecure-policy)") from None
    if len(data) > MAX_POLICY:
        raise ConfigError(f"signature policy {path} is larger than {MAX_POLICY} bytes")
    return parse_policy(data, str(path), path.parent)


def parse_policy(data: bytes, source: str, base: Path) -> Policy:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ConfigError(f"signature policy {source}: not valid JSON") from None
    where = f"signature policy {source}"
    _fields(doc, where, required={"default"}, allowed={"default", "transports"})
    transports: dict[str, dict[str, Requirements]] = {}
    raw_transports = doc.get("transports") or {}
    if not isinstance(raw_transports, dict):
        raise ConfigError(f"{where}: transports must be an object")
    for name, scopes in raw_transports.items():
        if name not in KNOWN_TRANSPORTS:
            raise ConfigError(f"{where}: unknown transport {name!r}")
        if not isinstance(scopes, dict):
            raise ConfigError(f"{where}: transports.{name} must be an object of scopes")
        transports[name] = {scope: _requirements(reqs, f"{where}: transports.{name}[{scope!r}]", base)
                            for scope, reqs in scopes.items()}
    return Policy(source, _requirements(doc["default"], f"{where}: default", base), transports)


def _fields(value: Any, where: str, required: set[str], allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object")
    missing, unknown = required - set(value), set(value) - allowed
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    return value


def _requirements(value: Any, where: str, base: Path) -> Requirements:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of requirements")
    return tuple(_requirement(item, f"{where}[{i}]", base) for i, item in enumerate(value))


def _requirement(value: Any, where: str, base: Path) -> Requirement:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("insecureAcceptAnything", "reject"):
        _fields(value, where, {"type"}, {"type"})
        return Requirement(kind)
    if kind == "signedBy":
        _fields(value, where, {"type", "keyType"}, {"type", "keyType", "keyPath", "keyPaths", "keyData",
                                                    "signedIdentity"})
        if value["keyType"] != "GPGKeys":
            raise ConfigError(f"{where}: keyType {value['keyType']!r} is not supported (GPGKeys is)")
        paths, data = _keys(value, where, base, ("keyPath", "keyPaths", "keyData"))
        return Requirement(kind, paths, data, _identity(value.get("signedIdentity"), where))
    if kind == "sigstoreSigned":
        return _sigstore_signed(value, where, base)
    if kind == "signedBaseLayer":
        return Requirement(kind, unsupported="signedBaseLayer")  # valid policy, refused when evaluated
    raise ConfigError(f"{where}: unknown requirement type {kind!r}")


SIGSTORE_KEYS = ("keyPath", "keyPaths", "keyData", "keyDatas")
SIGSTORE_UNCHECKED = ("fulcio", "pki", "rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData",
                      "rekorPublicKeyDatas")


def _sigstore_signed(value: dict[str, Any], where: str, base: Path) -> Requirement:
    """Public keys are checked offline; Fulcio, Rekor and PKI roots are parsed and refused when evaluated."""
    _fields(value, where, {"type"}, {"type", "signedIdentity", *SIGSTORE_KEYS, *SIGSTORE_UNCHECKED})
    identity = _identity(value.get("signedIdentity"), where)
    unchecked = [k for k in SIGSTORE_UNCHECKED if k in value]
    if unchecked:
        if not any(k in value for k in (*SIGSTORE_KEYS, "fulcio", "pki")):
            raise ConfigError(f"{where}: one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki is required")
        return Requirement("sigstoreSigned", identity=identity,
                           unsupported=f"sigstoreSigned with {unchecked[0]} (Fulcio, Rekor and PKI are not supported)")
    paths, data = _keys(value, where, base, SIGSTORE_KEYS)
    return Requirement("sigstoreSigned", paths, data, identity)


def _keys(value: dict[str, Any], where: str, base: Path,
          names: tuple[str, ...]) -> tuple[tuple[Path, ...], tuple[bytes, ...]]:
    """(key files, key data); a relative key path is taken from the policy file's directory."""
    given = [k for k in names if k in value]
    if len(given) != 1:
        raise ConfigError(f"{where}: exactly one of {', '.join(names)} is required")
    if given[0] in ("keyData", "keyDatas"):
        items = [value["keyData"]] if given[0] == "keyData" else value["keyDatas"]
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: keyDatas must be a non-empty list")
        try:
            return (), tuple(base64.b64decode(str(item), validate=True) for item in items)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: {given[0]} is not valid base64") from None
    paths = [value["keyPath"]] if given[0] == "keyPath" else value["keyPaths"]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"{where}: {given[0]} must name key files")
    return tuple(base / p for p in paths), ()


def _identity(value: Any, where: str) -> Identity:
    if value is None:
        return Identity()
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in IDENTITY_FIELDS:
        raise ConfigError(f"{where}: unknown signedIdentity type {kind!r}")
    names = IDENTITY_FIELDS[kind]
    _fields(value, f"{where}.signedIdentity", {"type", *names}, {"type", *names})
    values = tuple(value[n] for n in names)
    if not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{where}.signedIdentity: {', '.join(names)} must be non-empty strings")
    return Identity(kind, values)
