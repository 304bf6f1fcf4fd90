"""Composition root: builds the run's HTTP session, endpoints and transports from options.

Nothing else in mirror creates sessions or reads the environment for credentials; everything is
built here once per command and passed down.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from mirror import __version__
from mirror.core.descriptor import Platform, host_platform
from mirror.core.reference import Repo
from mirror.http.client import Endpoint, HttpClient, Timeouts
from mirror.http.credentials import Credential, CredentialOptions, resolve_credential
from mirror.http.ratelimit import HostPolicy
from mirror.http.retry import RetryPolicy
from mirror.http.tls import TLSOptions, default_certs_roots
from mirror.transports.registry.destination import RegistryDestination
from mirror.transports.registry.source import RegistrySource


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

    @property
    def platform(self) -> Platform:
        return host_platform(self.override_os, self.override_arch, self.override_variant)

    @property
    def user_agent(self) -> str:
        base = f"mirror/{__version__}"
        return f"{self.user_agent_prefix} {base}" if self.user_agent_prefix else base


class Runtime:
    """Everything one command needs, alive for the duration of the command."""

    def __init__(self, http: HttpClient, options: GlobalOptions, env: Mapping[str, str]) -> None:
        self.http = http
        self.options = options
        self.env = env
        self._credentials: dict[tuple[str, str, CredentialOptions], Credential] = {}

    def endpoint(self, repo: Repo, side: SideOptions, credential: Credential | None = None) -> Endpoint:
        """The endpoint for ``repo``; an explicit ``credential`` (sync YAML) beats the side's."""
        if credential is None:
            key = (repo.registry, repo.path, side.creds)
            credential = self._credentials.get(key)
            if credential is None:
                credential = resolve_credential(repo.registry, repo.path, side.creds, self.env)
                self._credentials[key] = credential
        return self.http.endpoint(repo.api_host, credential, side.tls)

    def registry_source(self, repo: Repo, side: SideOptions, credential: Credential | None = None) -> RegistrySource:
        return RegistrySource(self.endpoint(repo, side, credential), repo)

    def registry_destination(self, repo: Repo, side: SideOptions) -> RegistryDestination:
        return RegistryDestination(self.endpoint(repo, side), repo)


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
        yield Runtime(http, options, environ)
