"""Load and validate a skopeo ``sync`` YAML file (``--src yaml``) plus mirror's extensions.

The file is composed into YAML nodes and read the way skopeo's ``yaml.v3`` decoding does:

* string fields take the scalar's source text, so an unquoted ``1.10`` in a tag list is the tag
  ``"1.10"`` and an unquoted ``12345`` password is ``"12345"`` (PyYAML would turn them into numbers);
* booleans are ``true``/``false`` (plain; also ``True``/``TRUE``...) or the YAML 1.1 words that
  yaml.v3 accepts for a bool field: ``y yes on n no off`` in any quoting (``"yes"`` is true);
* ``null`` means absent: a null tag list is "all tags", null entries inside a tag list are dropped;
* duplicate keys are errors at every level (yaml.v3 refuses them too); merge keys ``<<`` work.

Stricter than skopeo, on purpose: unknown keys, invalid repository names, tags, digests, regexes
and constraints, an empty file and extra YAML documents are ConfigErrors naming the file, the YAML
path and the line — skopeo ignores unknown keys and logs-and-skips bad entries at copy time.
Messages never contain a credential value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from msgspec import Struct, field
from yaml.nodes import MappingNode, Node, ScalarNode

from mirror.config import retentionload
from mirror.config.filters import compile_regex, parse_platform
from mirror.config.retention import Retention
from mirror.config.schema import Catalog, Credentials, RateLimit, RegistryConfig, RepoSpec, SyncConfig
from mirror.config.semver import Constraint
from mirror.config.yamlnodes import (
    NULL_TAG,
    NodeReader,
    compose,
    is_null,
    node_kind,
    yaml_problem,
)
from mirror.core.digest import Digest
from mirror.core.reference import TAG_RE, parse_repo
from mirror.core.referrers import valid_artifact_type
from mirror.core.size import CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, SizeError, parse_size
from mirror.errors import ConfigError, InvalidReference

SKOPEO_KEYS = ("images", "images-by-tag-regex", "images-by-semver", "credentials", "tls-verify", "cert-dir")
EXTENSION_KEYS = (
    "exclude-tags", "images-exclude-tags", "platforms", "destinations", "rate-limit", "chunk-size",
    "catalog", "assume-immutable-tags", "prune", "digest-tags", "referrers", "referrers-artifact-types",
    "keep-latest", "newer-than", "images-keep-latest", "images-newer-than",
)
REGISTRY_KEYS = SKOPEO_KEYS + EXTENSION_KEYS
CREDENTIAL_KEYS = ("username", "password", "identitytoken")
RATE_LIMIT_KEYS = ("requests-per-second", "burst", "max-connections")
CATALOG_KEYS = ("prefixes", "exclude", "tags")

_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9._/-]*")
T = TypeVar("T")
A = TypeVar("A")


def load_sync_config(path: str | Path) -> SyncConfig:
    """Read and validate a sync YAML file; ConfigError (one line) for every problem."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    return parse_sync_config(text, source)


def parse_sync_config(text: str, source: str) -> SyncConfig:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    try:
        root = compose(loader, source)
        ctx = NodeReader(source, loader)
        if root is None:
            raise ConfigError(f"{source}: empty file (expected a mapping of source registries to settings)")
        if not isinstance(root, MappingNode):
            ctx.fail("(top level)", root, f"expected a mapping of source registries to settings, got {node_kind(root)}")
        registries = tuple(_registry(ctx, key, knode, vnode) for key, knode, vnode in ctx.mapping("", root))
        return SyncConfig(registries, source)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{source}: {yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply (or a recursive alias)") from None
    finally:
        loader.dispose()


class _Repo(Struct):
    path: str
    tags: list[str] = field(default_factory=list)
    all_tags: bool = False
    regex: str | None = None
    semver: str | None = None
    exclude: list[str] = field(default_factory=list)
    destination: str | None = None
    retention: Retention | None = None
    names: dict[str, str] = field(default_factory=dict)  # YAML section -> YAML repo key


class _Registry(Struct):
    ctx: NodeReader
    key: str
    namespace: str
    repos: dict[str, _Repo] = field(default_factory=dict)

    def resolve(self, path: str, node: Node, name: str) -> str:
        """Repository path relative to the YAML key (hub names get ``library/``), validated."""
        try:
            full = parse_repo(f"{self.key}/{name}")
        except InvalidReference as exc:
            hint = "; tags go in the list, not in the name" if ":" in name or "@" in name else ""
            reason = "must be lowercase" if "lowercase" in exc.message else "not a valid repository name"
            self.ctx.fail(path, node, f"invalid repository {name[:80]!r}: {reason}{hint}")
        if self.namespace:
            return full.path[len(self.namespace) + 1 :]
        return full.path

    def repo(self, section: str, path: str, node: Node, name: str) -> _Repo:
        rel = self.resolve(path, node, name)
        repo = self.repos.setdefault(rel, _Repo(rel))
        if section in repo.names:
            self.ctx.fail(path, node, f"same repository as {repo.names[section]!r} in {section}")
        repo.names[section] = name
        return repo

    def existing(self, path: str, node: Node, name: str) -> _Repo:
        rel = self.resolve(path, node, name)
        if rel not in self.repos:
            self.ctx.fail(path, node, "repository not listed under images, images-by-tag-regex or images-by-semver")
        return self.repos[rel]


def _registry_namespace(ctx: NodeReader, key: str, knode: Node) -> str:
    if not key:
        ctx.fail("(top level)", knode, "empty registry name")
    if "://" in key:
        ctx.fail(key, knode, "a registry name takes no scheme (write quay.io, not https://quay.io)")
    host, _, namespace = key.partition("/")
    try:
        probe = parse_repo(f"{key}/x")
    except InvalidReference:
        ctx.fail(key, knode, "not a registry host[:port] (optionally followed by /namespace)")
    if probe.registry != host and host != "index.docker.io":
        ctx.fail(key, knode, f"{host!r} is not a registry host (no '.' or ':', not localhost); "
                 f"skopeo would read it as docker.io/{key} - write that if it is meant")
    return namespace


def _registry(ctx: NodeReader, key: str, knode: Node, node: Node) -> RegistryConfig:
    if not isinstance(node, MappingNode) and not is_null(node):
        ctx.fail(key, node, f"expected a mapping of registry settings, got {node_kind(node)}")
    entries = {k: v for k, _, v in ctx.mapping(key, node, REGISTRY_KEYS)}
    reg = _Registry(ctx, key, _registry_namespace(ctx, key, knode))
    _images(reg, entries)
    excludes = _regex_list(ctx, f"{key}.exclude-tags", entries.get("exclude-tags"))
    _extensions(reg, entries, excludes)
    _repo_retention(reg, entries)
    cert_dir = ctx.string(f"{key}.cert-dir", entries["cert-dir"]) if "cert-dir" in entries else None
    catalog = _catalog(ctx, key, reg.namespace, entries.get("catalog"))
    repos = tuple(
        RepoSpec(r.path, tuple(dict.fromkeys(r.tags)), r.all_tags, r.regex, r.semver,
                 tuple(dict.fromkeys(excludes + r.exclude)), r.destination, r.retention)
        for r in reg.repos.values()
    )
    return RegistryConfig(
        name=key, repos=repos,
        credentials=_credentials(ctx, f"{key}.credentials", entries.get("credentials")),
        tls_verify=_opt(entries, "tls-verify", lambda n: ctx.boolean(f"{key}.tls-verify", n)),
        cert_dir=cert_dir, cert_dir_set=cert_dir is not None,
        rate_limit=_rate_limit(ctx, f"{key}.rate-limit", entries.get("rate-limit")),
        chunk_size=_chunk_size(ctx, f"{key}.chunk-size", entries.get("chunk-size")),
        catalog=catalog,
        platforms=_platforms(ctx, f"{key}.platforms", entries.get("platforms")),
        assume_immutable_tags=bool(_opt(entries, "assume-immutable-tags",
                                        lambda n: ctx.boolean(f"{key}.assume-immutable-tags", n))),
        prune=bool(_opt(entries, "prune", lambda n: ctx.boolean(f"{key}.prune", n))),
        digest_tags=bool(_opt(entries, "digest-tags", lambda n: ctx.boolean(f"{key}.digest-tags", n))),
        exclude_tags=tuple(dict.fromkeys(excludes)),
        referrers=bool(_opt(entries, "referrers", lambda n: ctx.boolean(f"{key}.referrers", n))),
        referrers_artifact_types=_artifact_types(ctx, f"{key}.referrers-artifact-types",
                                                 entries.get("referrers-artifact-types")),
        retention=retentionload.keep_latest(ctx, f"{key}.keep-latest", entries.get("keep-latest")).refined(
            retentionload.newer_than(ctx, f"{key}.newer-than", entries.get("newer-than"))),
    )


def _opt(entries: dict[str, Node], key: str, fn: Callable[[Node], T]) -> T | None:
    return fn(entries[key]) if key in entries else None


def _images(reg: _Registry, entries: dict[str, Node]) -> None:
    """``images``, ``images-by-tag-regex`` and ``images-by-semver``, merged per repository."""
    ctx = reg.ctx
    for section in SKOPEO_KEYS[:3]:
        for name, knode, vnode in ctx.mapping(f"{reg.key}.{section}", entries.get(section, _null())):
            path = f"{reg.key}.{section}.{name}"
            repo = reg.repo(section, path, knode, name)
            if section == "images":
                refs = ctx.strings(path, vnode, "a list of tags or digests ([] for all tags)")
                repo.all_tags |= not refs
                repo.tags.extend(_ref(ctx, where, node, ref) for where, ref, node in refs)
            elif section == "images-by-tag-regex":
                repo.regex = ctx.string(path, vnode) or ""
                ctx.guard(path, vnode, compile_regex, repo.regex)
            else:
                repo.semver = ctx.string(path, vnode) or ""
                ctx.guard(path, vnode, Constraint.parse, repo.semver)


def _null() -> Node:
    return ScalarNode(NULL_TAG, "")


def _ref(ctx: NodeReader, where: str, node: Node, ref: str) -> str:
    if ":" in ref:
        return str(ctx.guard(where, node, Digest.parse, ref))
    if not TAG_RE.match(ref):
        ctx.fail(where, node, f"invalid tag {ref[:80]!r} (at most 128 of A-Z a-z 0-9 _ . -, not starting with . or -)")
    return ref


def _regex_list(ctx: NodeReader, path: str, node: Node | None) -> list[str]:
    if node is None:
        return []
    out = []
    for where, pattern, item in ctx.strings(path, node, "a list of regular expressions"):
        ctx.guard(where, item, compile_regex, pattern)
        out.append(pattern)
    return out


def _extensions(reg: _Registry, entries: dict[str, Node], excludes: list[str]) -> None:
    ctx, key = reg.ctx, reg.key
    section = f"{key}.images-exclude-tags"
    for name, knode, vnode in ctx.mapping(section, entries.get("images-exclude-tags", _null())):
        repo = reg.existing(f"{section}.{name}", knode, name)
        repo.exclude.extend(_regex_list(ctx, f"{section}.{name}", vnode))
    section = f"{key}.destinations"
    taken: dict[str, str] = {}
    for name, knode, vnode in ctx.mapping(section, entries.get("destinations", _null())):
        where = f"{section}.{name}"
        repo = reg.existing(where, knode, name)
        dest = ctx.string(where, vnode)
        if dest is None:
            continue
        try:
            parse_repo(f"localhost/{dest}")
        except InvalidReference:
            ctx.fail(where, vnode, f"invalid destination repository path {dest[:80]!r}")
        if dest in taken:
            ctx.fail(where, vnode, f"destination {dest!r} is already used by {taken[dest]!r}")
        taken[dest] = name
        repo.destination = dest


def _repo_retention(reg: _Registry, entries: dict[str, Node]) -> None:
    """``images-keep-latest`` and ``images-newer-than``: one repository's rule, refining the registry's."""
    ctx = reg.ctx
    for section, read in (("images-keep-latest", retentionload.keep_latest),
                          ("images-newer-than", retentionload.newer_than)):
        for name, knode, vnode in ctx.mapping(f"{reg.key}.{section}", entries.get(section, _null())):
            repo = reg.existing(f"{reg.key}.{section}.{name}", knode, name)
            repo.retention = (repo.retention or Retention()).refined(read(ctx, f"{reg.key}.{section}.{name}", vnode))


def _credentials(ctx: NodeReader, path: str, node: Node | None) -> Credentials | None:
    if node is None:
        return None
    entries = ctx.mapping(path, node, CREDENTIAL_KEYS, secret=True)
    got = {k: ctx.string(f"{path}.{k}", v, secret=True) or "" for k, _, v in entries}
    creds = Credentials(got.get("username", ""), got.get("password", ""), got.get("identitytoken", ""))
    return creds if creds != Credentials() else None


def _rate_limit(ctx: NodeReader, path: str, node: Node | None) -> RateLimit | None:
    if node is None or is_null(node):
        return None
    values: dict[str, int | float | None] = {}
    for name, _, vnode in ctx.mapping(path, node, RATE_LIMIT_KEYS):
        where = f"{path}.{name}"
        value = values[name] = ctx.number(where, vnode, float if name == "requests-per-second" else int)
        if value is None:
            continue
        if name == "requests-per-second" and not (value > 0 and math.isfinite(value)):
            ctx.fail(where, vnode, "must be a number greater than 0")
        if name != "requests-per-second" and value < 1:
            ctx.fail(where, vnode, "must be an integer of at least 1")
    rps, burst, conns = (values.get(k) for k in RATE_LIMIT_KEYS)
    return RateLimit(None if rps is None else float(rps), None if burst is None else int(burst),
                     None if conns is None else int(conns))


def _chunk_size(ctx: NodeReader, path: str, node: Node | None) -> int | None:
    if node is None or is_null(node):
        return None
    if not isinstance(node, ScalarNode):
        ctx.fail(path, node, f"expected a size like 16MiB, got {node_kind(node)}")
    value = ctx.construct(path, node)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return parse_size(value if isinstance(value, int | str) else str(node.value), "chunk-size",
                          minimum=CHUNK_SIZE_MIN, maximum=CHUNK_SIZE_MAX)
    except SizeError as exc:
        ctx.fail(path, node, exc.problem)


def _platforms(ctx: NodeReader, path: str, node: Node | None) -> tuple[str, ...]:
    if node is None or is_null(node):
        return ()
    items = ctx.strings(path, node, "a list of platforms like linux/amd64")
    if not items:
        ctx.fail(path, node, "empty list (omit the key to copy every platform)")
    out: dict[str, None] = {}
    for where, text, item in items:
        try:
            out[str(parse_platform(text))] = None
        except ValueError as exc:
            ctx.fail(where, item, str(exc))
    return tuple(out)


def _artifact_types(ctx: NodeReader, path: str, node: Node | None) -> tuple[str, ...]:
    if node is None or is_null(node):
        return ()
    items = ctx.strings(path, node, "a list of artifact types like application/spdx+json")
    if not items:
        ctx.fail(path, node, "empty list (omit the key to copy referrers of every artifact type)")
    for where, text, item in items:
        if not valid_artifact_type(text):
            ctx.fail(where, item, f"{text!r} is not a media type (type/subtype)")
    return tuple(dict.fromkeys(text for _, text, _ in items))


def _catalog(ctx: NodeReader, key: str, namespace: str, node: Node | None) -> Catalog | None:
    path = f"{key}.catalog"
    if node is None or is_null(node):
        return None
    if isinstance(node, ScalarNode):
        enabled = ctx.boolean(path, node)
        catalog = Catalog() if enabled else None
    else:
        values = {k: v for k, _, v in ctx.mapping(path, node, CATALOG_KEYS)}
        prefixes = []
        for where, prefix, item in ctx.strings(f"{path}.prefixes", values.get("prefixes", _null()), "a list"):
            if not _PREFIX_RE.fullmatch(prefix):
                ctx.fail(where, item, f"invalid repository prefix {prefix[:80]!r}")
            prefixes.append(prefix)
        exclude = _regex_list(ctx, f"{path}.exclude", values.get("exclude"))
        tags = ctx.string(f"{path}.tags", values["tags"]) if "tags" in values else None
        if tags is not None:
            ctx.guard(f"{path}.tags", values["tags"], compile_regex, tags)
        catalog = Catalog(tuple(dict.fromkeys(prefixes)), tuple(dict.fromkeys(exclude)), tags)
    if catalog is not None and namespace:
        ctx.fail(path, node, "not supported on a registry key with a namespace (use catalog.prefixes)")
    return catalog
