"""Composition root: builds the run's HTTP session, state store and transport catalog from options.

Nothing else in mirror creates sessions or reads the environment for credentials; everything is
built here once per command and passed down.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from msgspec import Struct
from msgspec.structs import replace

from mirror import __version__
from mirror.core.descriptor import Platform, host_platform
from mirror.core.reference import Repo
from mirror.engine.blobs import KnownLocations
from mirror.http.client import HttpClient
from mirror.http.ratelimit import HostPolicy
from mirror.http.retry import RetryPolicy
from mirror.http.seam import Sender
from mirror.http.sender import open_aiohttp_sender
from mirror.http.tls import default_certs_roots
from mirror.state import StateBackend, StateStore
from mirror.transports.base import Transport
from mirror.transports.catalog import build_transports
from mirror.transports.registry.uploadopts import UploadOptions, resume_settings


class GlobalOptions(Struct, frozen=True):
    debug: bool = False
    command_timeout: float | None = None
    override_os: str | None = None
    override_arch: str | None = None
    override_variant: str | None = None
    user_agent_prefix: str | None = None
    retry_times: int = 0
    retry_delay: float | None = None
    state: str | None = None       # --state: a path, "none", or None for $MIRROR_STATE / the default
    chunk_size: int | None = None  # --chunk-size for resumable uploads
    registries_d: str | None = None  # --registries.d: where registry images' signatures live

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
                 state: StateBackend | None = None, uploads: UploadOptions | None = None) -> None:
        self.http = http
        self.options = options
        self.env = env
        self.state: StateBackend = state or StateStore.memory()
        self.uploads = uploads or UploadOptions()
        self.registry, self.transports = build_transports(http, self.state, self.uploads, env, options.registries_d)

    def transport(self, name: str) -> Transport:
        return self.transports[name]

    def known_locations(self) -> KnownLocations:
        """Blob locations for cross-repo mounts: this run's, plus those the state file remembers."""
        return KnownLocations(lambda host, digest: self.state.known_repos(host, str(digest)))


@asynccontextmanager
async def open_runtime(options: GlobalOptions, env: Mapping[str, str] | None = None,
                       policies: Mapping[str, HostPolicy] | None = None,
                       sender: Sender | None = None, state: StateBackend | None = None) -> AsyncIterator[Runtime]:
    """``policies``: per-registry rate limits, keyed by ``host[:port]`` as written by the user.
    ``sender``: what sends the HTTP requests (default: an aiohttp session for the run; tests pass a fake).
    ``state``: a shared state the caller owns (PostgreSQL for many workers); default: ``--state``'s file."""
    environ = dict(os.environ if env is None else env)
    # The one retry layer (per request): --retry-times N gives N retries, never fewer than the default 4 tries.
    retry = RetryPolicy(attempts=max(4, options.retry_times + 1), fixed_delay=options.retry_delay)
    async with AsyncExitStack() as stack:
        if sender is None:
            sender = await stack.enter_async_context(open_aiohttp_sender())
        api_policies = {Repo(host, "x").api_host: policy for host, policy in (policies or {}).items()}
        http = HttpClient(sender, retry=retry, user_agent=options.user_agent,
                          certs_roots=default_certs_roots(environ), policies=api_policies)
        settings = resume_settings(environ)
        uploads = settings.uploads
        if options.chunk_size:
            uploads = replace(uploads, chunk_size=options.chunk_size)
        if state is not None:
            yield Runtime(http, options, environ, state, uploads)
            return
        state_path = _state_path(options.state, settings.state_path)
        own = StateStore.open(state_path) if state_path else StateStore.memory()
        try:
            yield Runtime(http, options, environ, own, uploads)
        finally:
            own.close()


def _state_path(flag: str | None, default: Path | None) -> Path | None:
    """``--state`` wins over ``$MIRROR_STATE`` and the default; ``none`` turns persistence off."""
    if flag is None:
        return default
    return None if flag.lower() == "none" else Path(flag).expanduser()
