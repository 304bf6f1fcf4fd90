"""One resolved settings value per source registry: CLI flags plus that registry's YAML entry.

Built once, before planning, by :func:`resolve_settings`; every work unit carries the value of the
registry it came from, so a YAML setting applies to the registry it is written under and nowhere
else. The value is plain data (``to_dict``/``from_dict``): it names credentials by reference (the
YAML key whose ``credentials`` apply) and never holds a secret, so it can be queued.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import Struct, field
from msgspec.structs import fields

from mirror.config.retention import Retention
from mirror.config.schema import Credentials, RateLimit, SyncConfig
from mirror.errors import ConfigError


class SyncFlags(Struct, frozen=True):
    """The run-wide command-line values that per-registry YAML keys may refine."""

    tls_verify: bool = True
    cert_dir: str | None = None
    chunk_size: int | None = None
    assume_immutable: bool = False
    prune: bool = False          # --prune (report or delete)
    digest_tags: bool = False
    referrers: bool = False
    referrers_artifact_types: tuple[str, ...] = ()
    retention: Retention = field(default_factory=Retention)  # --keep-latest, --keep-latest-by, --newer-than
    include_regex: tuple[str, ...] = ()  # --include-tag-regex (``--src docker``)
    exclude_regex: tuple[str, ...] = ()  # --exclude-tag-regex (``--src docker``)


class RegistrySettings(Struct, frozen=True):
    """Everything mirror needs to know about one source registry, resolved."""

    name: str                          # the YAML key (host[:port][/namespace]), or the CLI source's registry
    tls_verify: bool = True
    cert_dir: str | None = None
    credentials: str | None = None     # reference: the YAML key whose ``credentials`` apply; None: CLI/auth files
    rate_limit: RateLimit | None = None
    chunk_size: int | None = None      # upload chunk size for this registry's images
    assume_immutable: bool = False
    prune: bool = False
    platforms: tuple[str, ...] = ()    # canonical "os/arch[/variant]"; empty: every platform
    digest_tags: bool = False
    referrers: bool = False            # also copy OCI referrers
    referrers_artifact_types: tuple[str, ...] = ()  # ... only of these artifact types (empty: all)

    @property
    def referrer_filter(self) -> tuple[str, ...] | None:
        """The artifact types of referrers to copy (empty: all); None: referrers are not copied."""
        return self.referrers_artifact_types if self.referrers else None
    retention: Retention = field(default_factory=Retention)  # keep-latest / newer-than (a repository may refine it)
    include_regex: tuple[str, ...] = ()  # ``--src docker``: tags to select (any matches); empty: all tags
    exclude_regex: tuple[str, ...] = ()  # ``--src docker``: tags to leave out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["platforms"] = list(self.platforms)
        out["referrers_artifact_types"] = list(self.referrers_artifact_types)
        out["include_regex"] = list(self.include_regex)
        out["exclude_regex"] = list(self.exclude_regex)
        out["retention"] = self.retention.to_dict()
        out["rate_limit"] = None if self.rate_limit is None else {
            f.name: getattr(self.rate_limit, f.name) for f in fields(self.rate_limit)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegistrySettings:
        try:
            values = dict(data)
            limit = values.pop("rate_limit", None)
            values["platforms"] = tuple(values.get("platforms") or ())
            values["referrers_artifact_types"] = tuple(values.get("referrers_artifact_types") or ())
            values["include_regex"] = tuple(values.get("include_regex") or ())
            values["exclude_regex"] = tuple(values.get("exclude_regex") or ())
            values["retention"] = Retention.from_dict(values.get("retention"))
            return cls(**values, rate_limit=None if limit is None else RateLimit(**limit))
        except TypeError as exc:
            raise ConfigError(f"invalid registry settings: {exc}") from None


def resolve_settings(config: SyncConfig | None, flags: SyncFlags,
                     cli_registry: str = "") -> dict[str, RegistrySettings]:
    """Settings by YAML key (``config``), or one entry for ``cli_registry`` (``--src docker``/``dir``/``oci``)."""
    if config is None:
        return {cli_registry: RegistrySettings(
            name=cli_registry, tls_verify=flags.tls_verify, cert_dir=flags.cert_dir, chunk_size=flags.chunk_size,
            assume_immutable=flags.assume_immutable, prune=flags.prune, digest_tags=flags.digest_tags,
            referrers=flags.referrers, referrers_artifact_types=flags.referrers_artifact_types,
            retention=flags.retention, include_regex=flags.include_regex, exclude_regex=flags.exclude_regex)}
    out = {}
    for registry in config.registries:
        referrers = flags.referrers or registry.referrers
        if registry.referrers_artifact_types and not referrers:
            raise ConfigError(f"{config.source}: {registry.name}.referrers-artifact-types: referrers are not copied "
                              "for this registry (add referrers: true, or --referrers)")
        out[registry.name] = RegistrySettings(
            name=registry.name,
            tls_verify=flags.tls_verify if registry.tls_verify is None else registry.tls_verify,
            cert_dir=registry.cert_dir or flags.cert_dir,
            credentials=registry.name if registry.credentials is not None else None,
            rate_limit=registry.rate_limit,
            chunk_size=registry.chunk_size or flags.chunk_size,
            assume_immutable=flags.assume_immutable or registry.assume_immutable_tags,
            prune=flags.prune or registry.prune,
            platforms=registry.platforms,
            digest_tags=flags.digest_tags or registry.digest_tags,
            referrers=referrers,
            referrers_artifact_types=registry.referrers_artifact_types or flags.referrers_artifact_types,
            retention=flags.retention.refined(registry.retention),
        )
    return out


def yaml_credentials(config: SyncConfig | None) -> dict[str, Credentials]:
    """The secrets settings refer to, by YAML key: held by each process, never queued."""
    if config is None:
        return {}
    return {r.name: r.credentials for r in config.registries if r.credentials is not None}
