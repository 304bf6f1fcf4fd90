"""Random images for the fake registry, and a ``Runtime`` built on it (fast unit tests, no sockets).

API::

    image = random_image(seed, layers=2, layer_size=1024, shared=())   # -> FakeImage
        # config + ``layers`` random layers (deterministic per seed); ``shared`` blobs come first, so
        # two images built with the same ``shared`` bytes share those layers (same digests)
    image.digest, image.manifest (raw bytes), image.config, image.layers, image.blob_digests
    await push_image(fake, "registry.test", "repo", image, tag="v1")
        # through the fake's own API (monolithic POST ?digest= per blob, manifest PUT), and then
        # removed from ``fake.log`` so tests see only their own requests
    async with fake_runtime(fake, GlobalOptions(retry_delay=0), uploads=UploadOptions(...)) as rt: ...
        # ``mirror.runtime.Runtime`` whose HttpClient sends through ``fake``; no state file, an
        # environment without credential files; ``retry_delay`` defaults to 0 (no real sleeping);
        # ``uploads`` replaces the upload options (what MIRROR_CHUNK_SIZE/_THRESHOLD set), e.g. to
        # chunk KiB-sized blobs

Unlike the rest of ``tests/support`` (the real-registry test bed, which never imports ``mirror``), the
fake modules implement mirror's own seam, so they import ``mirror``; they are helpers, not conftest
fixtures, to keep ``conftest.py`` free of mirror. See ``support.fakeregistry`` for the registry's
controls (faults, request log).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from msgspec.structs import replace
from yarl import URL

from mirror.http.seam import Request
from mirror.runtime import GlobalOptions, Runtime, open_runtime
from mirror.transports.registry.uploadopts import UploadOptions

from .fakeregistry import FakeRegistry, digest_of

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
FAKE_ENV = {"HOME": "/nonexistent/mirror-fake-home", "XDG_RUNTIME_DIR": "/nonexistent/mirror-fake-run"}


@dataclass(frozen=True, slots=True)
class FakeImage:
    config: bytes
    layers: tuple[bytes, ...]
    manifest: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def blob_digests(self) -> tuple[str, ...]:
        return (digest_of(self.config), *(digest_of(layer) for layer in self.layers))


def random_image(seed: int, *, layers: int = 2, layer_size: int = 1024, shared: Sequence[bytes] = (),
                 created: str | None = "2024-01-02T03:04:05Z") -> FakeImage:
    rng = random.Random(seed)
    blobs = (*shared, *(rng.randbytes(layer_size) for _ in range(layers)))
    config = json.dumps({"architecture": "amd64", "os": "linux", **({"created": created} if created else {}),
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(b) for b in blobs]},
                         "config": {"Labels": {"seed": str(seed)}}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(b), "size": len(b)} for b in blobs],
    }, indent=2).encode()
    return FakeImage(config, blobs, manifest)


async def push_image(fake: FakeRegistry, host: str, repo: str, image: FakeImage, tag: str | None = None) -> None:
    """Push through the fake's API (authorised whatever its auth setting); not left in its log."""
    logged = len(fake.log)
    auth = {"Authorization": "Bearer admin"}
    for blob in (image.config, *image.layers):
        url = URL(f"https://{host}/v2/{repo}/blobs/uploads/", encoded=True).with_query(digest=digest_of(blob))
        resp = await fake.send(Request("POST", url, auth, blob))
        assert resp.status == 201, resp.status
    ref = tag or image.digest
    resp = await fake.send(Request("PUT", URL(f"https://{host}/v2/{repo}/manifests/{ref}"),
                                   {**auth, "Content-Type": OCI_MANIFEST}, image.manifest))
    assert resp.status == 201, resp.status
    del fake.log[logged:]


@asynccontextmanager
async def fake_runtime(fake: FakeRegistry, options: GlobalOptions | None = None,
                       uploads: UploadOptions | None = None) -> AsyncIterator[Runtime]:
    """A whole ``Runtime`` over ``fake``: no state file, no credential files, no retry sleeps."""
    options = options or GlobalOptions()
    options = replace(options, state="none", retry_delay=0.0 if options.retry_delay is None else options.retry_delay)
    async with open_runtime(options, env=FAKE_ENV, sender=fake) as rt:
        yield rt if uploads is None else Runtime(rt.http, rt.options, rt.env, rt.state, uploads)
