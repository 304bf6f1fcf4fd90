"""Composition root: builds the run's HTTP session, endpoints and transports from options.

Nothing else in mirror creates sessions or reads the environment for credentials; everything is
built here once per command and passed down.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from mirror import __version__
from mirror.aio import SingleFlight
from mirror.core.descriptor import Platform, host_platform
from mirror.core.reference import Repo
from mirror.engine.blobs import KnownLocations
from mirror.http.client import Endpoint, HttpClient, Timeouts
from mirror.http.credentials import Credential, CredentialOptions, resolve_credential
from mirror.http.ratelimit import HostPolicy
from mirror.http.retry import RetryPolicy
from mirror.http.tls import TLSOptions, default_certs_roots
from mirror.state import StateStore
from mirror.transports.registry.destination import RegistryDestination
from mirror.transports.registry.endpoint import DeferredEndpoint, RegistryEndpoint
from mirror.transports.registry.source import RegistrySource
from mirror.transports.registry.uploadopts import UploadOptions, resume_settings


@dataclass(frozen=True, slots=True)
class SideOptions:
    """Credentials and TLS for one side (source or destination) of an operation."""

    creds: CredentialOptions = field(default_factory=lambda: CredentialOptions(
        creds=None, username=None, password=None, registry_token=None, no_creds=False, authfile=None))
    tls: TLSOptions = field(default_factory=TLSOptions)


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    debug: bool = False
    command_timeout: float | None = None
    override_os: str | None = None
    override_arch: str | None = None
    override_variant: str | None = None
    tmpdir: str | None = None
    user_agent_prefix: str | None = None
    retry_times: int = 0
    retry_delay: float | None = None
    state: str | None = None       # --state: a path, "none", or None for $MIRROR_STATE / the default
    chunk_size: int | None = None  # --chunk-size for resumable uploads

    @property
    def platform(self) -> Platform:
        return host_platform(self.override_os, self.override_arch, self.override_variant)

    @property
    def user_agent(self) -> str:
        base = f"mirror/{__version__}"
        return f"{self.user_agent_prefix} {base}" if self.user_agent_prefix else base


class Runtime:
    """Everything one command needs, alive for the duration of the command."""

    def __init__(self, http: HttpClient, options: GlobalOptions, env: Mapping[str, str],
                 state: StateStore | None = None, uploads: UploadOptions | None = None) -> None:
        self.http = http
        self.options = options
        self.env = env
        self.state = state or StateStore.memory()
        self.uploads = uploads or UploadOptions()
        self._credentials: dict[tuple[str, str, CredentialOptions], Credential] = {}
        self._lookups: SingleFlight[Credential] = SingleFlight(remember=0)

    def endpoint(self, repo: Repo, side: SideOptions, credential: Credential | None = None) -> RegistryEndpoint:
        """The endpoint for ``repo``; an explicit ``credential`` (sync YAML) beats the side's. A side's
        credential not looked up yet is looked up on the endpoint's first request (auth files and
        credential helpers are awaited there, off the event loop)."""
        if credential is None:
            credential = self._credentials.get((repo.registry, repo.path, side.creds))
        if credential is None:
            return DeferredEndpoint(repo.api_host, lambda: self._connect(repo, side))
        return self.http.endpoint(repo.api_host, credential, side.tls)

    async def _connect(self, repo: Repo, side: SideOptions) -> Endpoint:
        key = (repo.registry, repo.path, side.creds)
        credential = self._credentials.get(key)
        if credential is None:
            credential, _ = await self._lookups.do(
                key, lambda: resolve_credential(repo.registry, repo.path, side.creds, self.env))
            self._credentials[key] = credential
        return self.http.endpoint(repo.api_host, credential, side.tls)

    def registry_source(self, repo: Repo, side: SideOptions, credential: Credential | None = None) -> RegistrySource:
        return RegistrySource(self.endpoint(repo, side, credential), repo)

    def registry_destination(self, repo: Repo, side: SideOptions) -> RegistryDestination:
        return RegistryDestination(self.endpoint(repo, side), repo, state=self.state, uploads=self.uploads)

    def known_locations(self) -> KnownLocations:
        """Blob locations for cross-repo mounts: this run's, plus those the state file remembers."""
        return KnownLocations(lambda host, digest: self.state.known_repos(host, str(digest)))


@asynccontextmanager
async def open_runtime(options: GlobalOptions, env: Mapping[str, str] | None = None,
                       policies: Mapping[str, HostPolicy] | None = None) -> AsyncIterator[Runtime]:
    """``policies``: per-registry rate limits, keyed by ``host[:port]`` as written by the user."""
    environ = dict(os.environ if env is None else env)
    # Per-request retries: at least the policy default; --retry-times adds attempts on top.
    retry = RetryPolicy(attempts=max(4, options.retry_times + 1), fixed_delay=options.retry_delay)
    connector = aiohttp.TCPConnector(limit=64, limit_per_host=32, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        api_policies = {Repo(host, "x").api_host: policy for host, policy in (policies or {}).items()}
        http = HttpClient(session, retry=retry, user_agent=options.user_agent, timeouts=Timeouts(),
                          certs_roots=default_certs_roots(environ), policies=api_policies)
        settings = resume_settings(environ)
        uploads = settings.uploads
        if options.chunk_size:
            uploads = replace(uploads, chunk_size=options.chunk_size)
        state_path = _state_path(options.state, settings.state_path)
        state = StateStore.open(state_path) if state_path else StateStore.memory()
        try:
            yield Runtime(http, options, environ, state, uploads)
        finally:
            state.close()


def _state_path(flag: str | None, default: Path | None) -> Path | None:
    """``--state`` wins over ``$MIRROR_STATE`` and the default; ``none`` turns persistence off."""
    if flag is None:
        return default
    return None if flag.lower() == "none" else Path(flag).expanduser()
