"""A standalone, synchronous, stdlib-only image pusher for the test registries.

Speaks plain HTTP, TLS (trusting the registry's CA), Basic auth and the bearer-token flow (on 401 it
parses ``WWW-Authenticate``, fetches a token from the realm with Basic credentials, and retries).
Content is deterministic: the same seed always yields the same bytes and digests.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import random
import re
import ssl
import tarfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Literal

from .registry import Registry

Format = Literal["oci", "docker"]
Platform = tuple[str, str, str | None]  # (os, architecture, variant)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
CREATED = "2024-01-02T03:04:05Z"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(seed: int, size: int = 2048) -> bytes:
    """A deterministic gzip'd tar holding one file of ``size`` pseudo-random bytes."""
    payload = random.Random(seed).randbytes(size)
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/file-{seed}.bin")
        info.size = size
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    gz_buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buf, mtime=0) as gz:
        gz.write(tar_buf.getvalue())
    return gz_buf.getvalue()


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class PushedImage:
    repo: str
    tag: str | None
    digest: str
    manifest: bytes
    media_type: str
    config: bytes
    config_digest: str
    layers: tuple[Blob, ...]
    layer_data: tuple[bytes, ...] = field(repr=False)
    platform: Platform

    @property
    def ref(self) -> str:
        return self.tag or self.digest


@dataclass(frozen=True)
class PushedIndex:
    repo: str
    tag: str
    digest: str
    manifest: bytes
    media_type: str
    children: tuple[PushedImage, ...]


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes


class RegistryError(RuntimeError):
    pass


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class Client:
    """A minimal registry client for one :class:`Registry` (new connection per request)."""

    def __init__(self, reg: Registry, *, anonymous: bool = False) -> None:
        self.reg = reg
        self.ctx = reg.ssl_context()
        self.creds = None if anonymous or reg.username is None else (reg.username, reg.password or "")
        self.authorization: str | None = None

    def _basic(self) -> str | None:
        if self.creds is None:
            return None
        return "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()

    def raw(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.netloc, timeout=30, context=self.ctx or ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=30)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, target, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def _fetch_token(self, params: dict[str, str]) -> str:
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        url = params["realm"] + ("?" + urllib.parse.urlencode(query) if query else "")
        basic = self._basic()
        resp = self.raw("GET", url, {"Authorization": basic} if basic else {})
        if resp.status != 200:
            raise RegistryError(f"token request {url} -> {resp.status}: {resp.body[:200]!r}")
        data = json.loads(resp.body)
        return str(data.get("token") or data["access_token"])

    def request(
        self,
        method: str,
        path_or_url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
    ) -> Response:
        url = urllib.parse.urljoin(self.reg.url + "/", path_or_url)
        for attempt in range(3):
            hdrs = dict(headers or {})
            if self.authorization:
                hdrs["Authorization"] = self.authorization
            resp = self.raw(method, url, hdrs, body)
            if resp.status != 401 or attempt == 2:
                break
            scheme, params = _parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            if scheme == "basic" and self.creds is not None:
                self.authorization = self._basic()
            elif scheme == "bearer" and "realm" in params:
                self.authorization = "Bearer " + self._fetch_token(params)
            else:
                break
        if resp.status not in ok:
            raise RegistryError(f"{method} {url} -> {resp.status}: {resp.body[:300]!r}")
        return resp

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404)).status == 200

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256_digest(data)
        if self.blob_exists(repo, digest):
            return digest
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", {"Content-Length": "0"}, b"", ok=(202,))
        location = urllib.parse.urljoin(self.reg.url + "/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        self.request("PUT", f"{location}{sep}digest={urllib.parse.quote(digest)}", headers, data, ok=(201,))
        return digest

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT", f"/v2/{repo}/manifests/{ref}", {"Content-Type": media_type}, data, ok=(201,)
        )
        digest = sha256_digest(data)
        if resp.headers.get("Docker-Content-Digest") not in (None, digest):
            raise RegistryError(f"registry digest {resp.headers['Docker-Content-Digest']} != {digest}")
        return digest

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        resp = self.request("GET", f"/v2/{repo}/manifests/{ref}", {"Accept": ", ".join(ALL_MANIFEST_TYPES)})
        digest = sha256_digest(resp.body)
        header = resp.headers.get("Docker-Content-Digest")
        if header is not None and header != digest:
            raise RegistryError(f"Docker-Content-Digest {header} != sha256 of body {digest}")
        if ref.startswith("sha256:") and ref != digest:
            raise RegistryError(f"asked for {ref}, body hashes to {digest}")
        return resp.body, resp.headers.get("Content-Type", ""), digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}").body

    def list_tags(self, repo: str, page_size: int | None = None) -> list[str]:
        tags: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list" + (f"?n={page_size}" if page_size else "")
        while path:
            resp = self.request("GET", path)
            tags.extend(json.loads(resp.body).get("tags") or [])
            link = resp.headers.get("Link")
            m = re.match(r"<([^>]+)>", link or "")
            path = m.group(1) if m else None
        return tags

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.request("DELETE", f"/v2/{repo}/manifests/{digest}", ok=(202,))


def _diff_id(layer: bytes) -> tuple[str, bool]:
    if layer[:2] == b"\x1f\x8b":
        return sha256_digest(gzip.decompress(layer)), True
    return sha256_digest(layer), False


@dataclass(frozen=True)
class BuiltImage:
    """A generated single-platform image, not pushed anywhere: manifest, config and layers as bytes."""

    manifest: bytes
    media_type: str
    config: bytes
    config_digest: str
    config_media_type: str
    layers: tuple[Blob, ...]
    layer_data: tuple[bytes, ...] = field(repr=False)
    platform: Platform

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(_diff_id(layer)[0] for layer in self.layer_data)

    def blobs(self) -> dict[str, bytes]:
        """Every blob by digest: the config first, then the layers."""
        out = {self.config_digest: self.config}
        out.update((blob.digest, data) for blob, data in zip(self.layers, self.layer_data, strict=True))
        return out


def build_image(
    *,
    fmt: Format = "oci",
    layers: list[bytes] | None = None,
    seed: int = 0,
    arch: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    labels: Mapping[str, str] | None = None,
    env: list[str] | None = None,
    layer_count: int = 2,
    layer_size: int = 2048,
    created: str = CREATED,
) -> BuiltImage:
    """The bytes :func:`push_image` pushes: a deterministic config and manifest over ``layers``."""
    if layers is None:
        layers = [make_layer(seed * 1000 + i, layer_size + 512 * i) for i in range(layer_count)]
    diff = [_diff_id(layer) for layer in layers]
    config_obj: dict[str, object] = {
        "created": created,
        "architecture": arch,
        "os": os,
        "config": {
            "Env": list(env) if env is not None else ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Labels": dict(labels or {"org.example.seed": str(seed)}),
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [d for d, _ in diff]},
        "history": [{"created": CREATED, "created_by": f"testbed layer {i}"} for i in range(len(layers))],
    }
    if variant is not None:
        config_obj["variant"] = variant
    config = json.dumps(config_obj, separators=(",", ":"), sort_keys=True).encode()
    config_digest = sha256_digest(config)
    blobs: list[Blob] = []
    for layer, (_, gz) in zip(layers, diff, strict=True):
        if fmt == "docker":
            mt = DOCKER_LAYER_GZIP
        else:
            mt = OCI_LAYER_GZIP if gz else OCI_LAYER_TAR
        blobs.append(Blob(sha256_digest(layer), len(layer), mt))
    media_type = OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST
    config_media_type = OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_media_type, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest} for b in blobs],
    }
    # Docker writes schema2 manifests with 3-space indentation; keep OCI compact: byte-exactness matters.
    manifest = (json.dumps(manifest_obj, indent=3) if fmt == "docker" else json.dumps(manifest_obj)).encode()
    return BuiltImage(manifest, media_type, config, config_digest, config_media_type, tuple(blobs), tuple(layers),
                      (os, arch, variant))


def push_image(
    reg: Registry,
    repo: str,
    tag: str | None,
    *,
    fmt: Format = "oci",
    layers: list[bytes] | None = None,
    seed: int = 0,
    arch: str = "amd64",
    os: str = "linux",
    variant: str | None = None,
    labels: Mapping[str, str] | None = None,
    env: list[str] | None = None,
    layer_count: int = 2,
    layer_size: int = 2048,
    client: Client | None = None,
    created: str = CREATED,
) -> PushedImage:
    """Push blobs + an image manifest; by tag, or by digest only when ``tag`` is ``None``. ``created``:
    the config's creation date (RFC 3339)."""
    c = client or Client(reg)
    built = build_image(fmt=fmt, layers=layers, seed=seed, arch=arch, os=os, variant=variant, labels=labels,
                        env=env, layer_count=layer_count, layer_size=layer_size, created=created)
    c.push_blob(repo, built.config)
    for data in built.layer_data:
        c.push_blob(repo, data)
    digest = c.put_manifest(repo, tag or built.digest, built.manifest, built.media_type)
    return PushedImage(
        repo,
        tag,
        digest,
        built.manifest,
        built.media_type,
        built.config,
        built.config_digest,
        built.layers,
        built.layer_data,
        built.platform,
    )


DEFAULT_PLATFORMS: tuple[Platform, ...] = (("linux", "amd64", None), ("linux", "arm64", "v8"))


def push_index(
    reg: Registry,
    repo: str,
    tag: str,
    *,
    fmt: Format = "oci",
    platforms: list[Platform] | tuple[Platform, ...] = DEFAULT_PLATFORMS,
    seed: int = 0,
    layer_count: int = 2,
    client: Client | None = None,
) -> PushedIndex:
    """Push one image per platform by digest, then the OCI index / Docker manifest list by tag."""
    c = client or Client(reg)
    children = tuple(
        push_image(
            reg,
            repo,
            None,
            fmt=fmt,
            seed=seed * 100 + i + 1,
            os=os_,
            arch=arch,
            variant=variant,
            layer_count=layer_count,
            client=c,
        )
        for i, (os_, arch, variant) in enumerate(platforms)
    )
    media_type = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    entries = []
    for child in children:
        plat: dict[str, str] = {"architecture": child.platform[1], "os": child.platform[0]}
        if child.platform[2] is not None:
            plat["variant"] = child.platform[2]
        entries.append(
            {
                "mediaType": child.media_type,
                "size": len(child.manifest),
                "digest": child.digest,
                "platform": plat,
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}, indent=2).encode()
    digest = c.put_manifest(repo, tag, index, media_type)
    return PushedIndex(repo, tag, digest, index, media_type, children)


def get_manifest(reg: Registry, repo: str, ref: str) -> tuple[bytes, str, str]:
    """``(raw bytes, media type, digest)``; the digest is checked against sha256 of the bytes."""
    return Client(reg).get_manifest(repo, ref)


def get_blob(reg: Registry, repo: str, digest: str) -> bytes:
    data = Client(reg).get_blob(repo, digest)
    if sha256_digest(data) != digest:
        raise RegistryError(f"blob {digest} has content hashing to {sha256_digest(data)}")
    return data


def list_tags(reg: Registry, repo: str, page_size: int | None = None) -> list[str]:
    """All tags of ``repo``, following ``Link`` pagination when ``page_size`` is given."""
    return Client(reg).list_tags(repo, page_size)


def put_tags(reg: Registry, repo: str, n: int, *, prefix: str = "t", seed: int = 0) -> list[str]:
    """Create ``n`` tags ``t000..`` all pointing at one small image; returns the tag names."""
    c = Client(reg)
    image = push_image(reg, repo, None, seed=seed, layer_count=1, layer_size=256, client=c)
    width = max(3, len(str(n - 1)))
    tags = [f"{prefix}{i:0{width}d}" for i in range(n)]
    for tag in tags:
        c.put_manifest(repo, tag, image.manifest, image.media_type)
    return tags


@dataclass(frozen=True)
class SeededImages:
    """The fixed content of the session-scoped ``seeded_registry`` (treat it as read-only)."""

    registry: Registry
    alpine: PushedImage  # library/alpine:3.19, OCI image, 3 layers
    docker_image: PushedImage  # app/docker:v1, Docker schema2 image, 2 layers
    oci_index: PushedIndex  # multi/oci:latest, OCI index linux/amd64 + linux/arm64/v8
    docker_list: PushedIndex  # multi/docker:latest, Docker manifest list linux/amd64 + linux/arm64/v8


def seed_standard_images(reg: Registry) -> SeededImages:
    c = Client(reg)
    alpine = push_image(
        reg,
        "library/alpine",
        "3.19",
        fmt="oci",
        seed=319,
        layer_count=3,
        labels={"org.opencontainers.image.title": "alpine"},
        client=c,
    )
    docker_image = push_image(
        reg, "app/docker", "v1", fmt="docker", seed=42, env=["PATH=/bin", "APP=1"], client=c
    )
    oci_index = push_index(reg, "multi/oci", "latest", fmt="oci", seed=7, client=c)
    docker_list = push_index(reg, "multi/docker", "latest", fmt="docker", seed=8, layer_count=3, client=c)
    return SeededImages(reg, alpine, docker_image, oci_index, docker_list)
