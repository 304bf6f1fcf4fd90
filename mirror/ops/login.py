"""``login`` and ``logout``: verify credentials against the registry, then record them 0600."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mirror.core.reference import split_domain
from mirror.errors import Unauthorized, UsageError
from mirror.http import authfile
from mirror.http.credentials import Credential
from mirror.http.tls import TLSOptions
from mirror.runtime import Runtime


def registry_key(name: str) -> str:
    """The auth-file key for a login target: ``host[:port]`` or ``host/namespace``; Hub → docker.io."""
    text = name.removeprefix("docker://").removeprefix("https://").removeprefix("http://").rstrip("/")
    if not text:
        raise UsageError("login: registry name is empty")
    if "/" not in text:
        return "docker.io" if text in ("docker.io", "index.docker.io", "registry-1.docker.io") else text
    domain, path = split_domain(text)
    return f"{domain}/{path}"


async def login(rt: Runtime, key: str, username: str, password: str, tls: TLSOptions,
                auth_path: Path) -> None:
    host = key.split("/", 1)[0]
    api_host = "registry-1.docker.io" if host == "docker.io" else host
    endpoint = rt.http.endpoint(api_host, Credential(username=username, password=password), tls)
    try:
        await endpoint.fetch("GET", "/v2/", what=f"logging into {host}")
    except Unauthorized as exc:  # skopeo's words: logging into "host": invalid username/password
        raise Unauthorized(f'logging into "{host}": invalid username/password ({exc})', status=exc.status) from None
    authfile.store(auth_path, key, username, password)


def logout(key: str | None, auth_path: Path, all_: bool) -> bool:
    if all_:
        authfile.remove_all(auth_path)
        return True
    assert key is not None
    return authfile.remove(auth_path, key)


def get_login(key: str, authfile_opt: str | None, env: Mapping[str, str]) -> str | None:
    return authfile.get_login(key, authfile_opt, env)
