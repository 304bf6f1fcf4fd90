"""The sync configuration as loaded from a skopeo ``sync`` YAML file (plus mirror's extensions).

Everything here is validated by ``mirror.config.load`` before any network traffic; the planner
only reads it. Regexes and semver constraints are kept as text (compiled by ``filters``).

Deliberate difference from skopeo: a repository named under several of ``images``,
``images-by-tag-regex`` and ``images-by-semver`` is ONE ``RepoSpec`` (the union of what each key
selects), so it is copied once; skopeo copies it once per key.
"""

from __future__ import annotations

from msgspec import Struct, field

from mirror.config.retention import Retention


class RateLimit(Struct, frozen=True):
    """Extension ``rate-limit``: per source registry request pacing and connection cap."""

    requests_per_second: float | None = None
    burst: int | None = None
    max_connections: int | None = None


class Catalog(Struct, frozen=True):
    """Extension ``catalog``: mirror every repository the registry lists (``/v2/_catalog``).

    ``prefixes``: keep only repository paths starting with one of these strings (empty: all);
    ``exclude``: regexes (search) on repository paths; ``tags``: regex (search) selecting tags, None
    for all tags. A repository also listed explicitly keeps its explicit selection.
    """

    prefixes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tags: str | None = None


class RepoSpec(Struct, frozen=True):
    """One source repository and what to copy from it."""

    path: str  # repository path on the source registry, e.g. "library/busybox"
    tags: tuple[str, ...] = ()  # explicit tags and digests ("sha256:..."), in YAML order
    all_tags: bool = False
    regex: str | None = None
    semver: str | None = None
    exclude: tuple[str, ...] = ()  # registry-wide + per-repo exclusions, merged
    destination: str | None = None  # mapped destination repository path (extension)
    retention: Retention | None = None  # ``images-keep-latest`` / ``images-newer-than`` for this repository


class Credentials(Struct, frozen=True):
    """YAML ``credentials``; never printed (``repr`` redacts the secrets)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:
        secret = "***" if self.password else "''"
        token = "***" if self.identity_token else "''"
        return f"Credentials(username={self.username!r}, password={secret}, identity_token={token})"


class RegistryConfig(Struct, frozen=True):
    """One top-level YAML entry (a source registry) with its settings."""

    name: str  # the YAML key: host[:port] (skopeo also accepts host[:port]/namespace)
    repos: tuple[RepoSpec, ...]  # one per repository, keys merged (images + regex + semver)
    credentials: Credentials | None = None
    tls_verify: bool | None = None  # None: the CLI value stands
    cert_dir: str | None = None
    cert_dir_set: bool = False  # skopeo quirk: an absent cert-dir blanks --src-cert-dir; keep the info
    rate_limit: RateLimit | None = None
    chunk_size: int | None = None
    catalog: Catalog | None = None
    platforms: tuple[str, ...] = ()  # canonical "os/arch[/variant]"; empty: no platform filter
    assume_immutable_tags: bool = False
    prune: bool = False
    digest_tags: bool = False  # also copy cosign-style tags (sha256-<hex>[.sig|.att|.sbom]) of copied digests
    exclude_tags: tuple[str, ...] = ()  # registry-wide ``exclude-tags`` (also merged into each RepoSpec)
    referrers: bool = False  # also copy OCI referrers (signatures, SBOMs, attestations attached by subject)
    referrers_artifact_types: tuple[str, ...] = ()  # only referrers of these artifact types (empty: all)
    retention: Retention = field(default_factory=Retention)  # registry-wide ``keep-latest`` / ``newer-than``


class SyncConfig(Struct, frozen=True):
    registries: tuple[RegistryConfig, ...]
    source: str  # file path, for messages
