"""Shared fixtures: real registries (plain, TLS, htpasswd, token), a token server, seeded images, skopeo.

The test bed lives in ``tests/support`` and never imports the ``mirror`` package.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import run_skopeo, skopeo_inspect_raw
from support.images import SeededImages, seed_standard_images
from support.postgres import Postgres, start_postgres
from support.registry import Registry, start_registry
from support.tokenserver import TokenServer

ALICE = ("alice", "wonderland-secret-9")
TOKEN_USERS = {"alice": "wonderland-secret-9", "bob": "builder-secret-7"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throw-away PostgreSQL cluster (initdb in a temp dir, 127.0.0.1) for the whole session."""
    with start_postgres() as server:
        yield server


@pytest.fixture
def queue_url(postgres: Postgres) -> str:
    """A fresh, empty database on the session's cluster: a queue of its own for each test."""
    return postgres.new_database()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A plain-HTTP, anonymous registry (delete enabled), new for each test."""
    with start_registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def registry2(tmp_path: Path) -> Iterator[Registry]:
    """A second independent plain-HTTP registry."""
    with start_registry(tmp_path / "registry2") as reg:
        yield reg


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[Registry]:
    """HTTPS with a throw-away CA: ``cert_dir`` (holds ``ca.crt``) and ``ca_pem``; cert valid for
    127.0.0.1 and localhost."""
    with start_registry(tmp_path / "tls-registry", tls=True) as reg:
        yield reg


@pytest.fixture
def htpasswd_registry(tmp_path: Path) -> Iterator[Registry]:
    """Plain HTTP with Basic auth, user ``alice`` / ``wonderland-secret-9``."""
    with start_registry(tmp_path / "htpasswd-registry", htpasswd=ALICE) as reg:
        yield reg


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    """Token server with users alice/wonderland-secret-9 and bob/builder-secret-7."""
    with TokenServer(tmp_path / "token-server", users=TOKEN_USERS) as ts:
        yield ts


@pytest.fixture
def token_registry(tmp_path: Path, token_server: TokenServer) -> Iterator[Registry]:
    """Plain HTTP with bearer-token auth from ``token_server``; credentials are alice's."""
    with start_registry(tmp_path / "token-registry", token=token_server) as reg:
        yield reg


@pytest.fixture(scope="session")
def seeded_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededImages]:
    """A session-wide registry holding library/alpine:3.19 (OCI), app/docker:v1 (Docker schema2),
    multi/oci:latest (OCI index) and multi/docker:latest (Docker manifest list). Read-only by convention."""
    with start_registry(tmp_path_factory.mktemp("seeded-registry")) as reg:
        yield seed_standard_images(reg)


@pytest.fixture(scope="session")
def seeded_registry(seeded_images: SeededImages) -> Registry:
    return seeded_images.registry


@pytest.fixture
def skopeo() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``skopeo(*args, check=True)``: :func:`support.run_skopeo`."""
    return run_skopeo


@pytest.fixture
def inspect_raw() -> Callable[..., bytes]:
    """``inspect_raw(ref, *flags)``: :func:`support.skopeo_inspect_raw`."""
    return skopeo_inspect_raw
