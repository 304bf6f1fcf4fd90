"""The HTTP client, registry transports and copy over the in-memory registry behind the send seam.

No sockets and no registry process: every request goes to ``support.fakeregistry.FakeRegistry``, so
these tests count and inspect each request the client sends (retries, tokens, ranges, redirects).
"""

from __future__ import annotations

import random

import pytest
from msgspec.structs import replace
from structlog.testing import capture_logs
from support.fakeimages import fake_runtime, push_image, random_image
from support.fakeregistry import TOKEN_HOST, FakeRegistry, Logged, digest_of
from yarl import URL

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.reference import Repo, Tag
from mirror.engine.image import CopyOptions
from mirror.errors import MirrorError, RateLimited, RegistryError, TransientError
from mirror.http.credentials import CredentialOptions
from mirror.http.ratelimit import RATE_LIMITED_RETRIES
from mirror.http.seam import Request
from mirror.ops.copy import copy, parse_name
from mirror.runtime import GlobalOptions
from mirror.transports.side import SideOptions

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

SIDE = SideOptions()


def manifest_gets(fake: FakeRegistry, host: str) -> list[Logged]:
    return [e for e in fake.requests(kind="manifest", method="GET", host=host)]


async def copy_one(rt_options: GlobalOptions, fake: FakeRegistry, src: str, dst: str) -> None:
    async with fake_runtime(fake, rt_options) as rt:
        await copy(rt, parse_name(src), parse_name(dst), SIDE, SIDE, CopyOptions())


async def test_copy_round_trips_manifest_and_blobs_byte_for_byte() -> None:
    fake = FakeRegistry()
    image = random_image(1, layers=3, layer_size=3000)
    await push_image(fake, "src.test", "app", image, "v1")
    async with fake_runtime(fake) as rt:
        record = await copy(rt, parse_name("docker://src.test/app:v1"), parse_name("docker://dst.test/mirror/app:v1"),
                            SIDE, SIDE, CopyOptions())
        assert record.digest == image.digest
        # Read back through the registry source: by tag, then by digest (verified against the body).
        source = rt.registry.repo_source(Repo("dst.test", "mirror/app"), SIDE)
        by_tag = await source.get_manifest(Tag("v1"))
        by_digest = await source.get_manifest(Digest.parse(image.digest))
    assert fake.manifest("dst.test", "mirror/app", "v1") == image.manifest == by_tag.raw == by_digest.raw
    assert all(fake.has_blob("dst.test", "mirror/app", d) for d in image.blob_digests)
    # Every blob was read from the source once and its bytes sent to the destination once.
    assert sorted(e.path.rsplit("/", 1)[1] for e in fake.requests("blob", "GET", "src.test")) == \
        sorted(image.blob_digests)
    sent = sum(e.sent for e in fake.requests("upload", host="dst.test"))
    assert sent == len(image.config) + sum(len(layer) for layer in image.layers)
    [put] = [e for e in fake.requests("manifest", "PUT", "dst.test")]
    assert put.path.endswith("/manifests/v1") and put.sent == len(image.manifest)


async def test_a_manifest_put_by_a_wrong_digest_is_refused() -> None:
    fake = FakeRegistry()
    image = random_image(2)
    await push_image(fake, "r.test", "app", image, "v1")
    async with fake_runtime(fake) as rt:
        manifest = await rt.registry.repo_source(Repo("r.test", "app"), SIDE).get_manifest(Tag("v1"))
        dest = rt.registry.repo_destination(Repo("r.test", "app"), SIDE)
        with pytest.raises(RegistryError, match="digest invalid"):
            await dest.put_manifest(manifest, Digest.parse(digest_of(b"something else")))
        await dest.put_manifest(manifest, Digest.parse(image.digest))
    assert fake.requests("manifest", "PUT")[-1].status == 201


async def test_tag_listing_follows_link_pages() -> None:
    fake = FakeRegistry(page_size=3)
    image = random_image(3)
    tags = [f"t{i:02d}" for i in range(8)]
    for tag in tags:
        await push_image(fake, "r.test", "app", image, tag)
    async with fake_runtime(fake) as rt:
        listed = [t async for t in rt.registry.repo_source(Repo("r.test", "app"), SIDE).list_tags()]
    assert listed == tags
    pages = fake.requests("tags")
    assert [p.query for p in pages] == ["", "n=3&last=t02", "n=3&last=t05"]


async def test_a_broken_blob_read_resumes_with_a_range_request() -> None:
    fake = FakeRegistry()
    image = random_image(4, layers=1, layer_size=200_000)
    await push_image(fake, "r.test", "app", image, "v1")
    layer = image.layers[0]
    fake.cut_body(70_000, match=lambda r: r.method == "GET" and "/blobs/" in r.url.path)
    desc = Descriptor("application/octet-stream", Digest.parse(digest_of(layer)), len(layer))
    async with fake_runtime(fake) as rt:
        source = rt.registry.repo_source(Repo("r.test", "app"), SIDE)
        async with source.open_blob(desc) as pieces:
            data = b"".join([piece async for piece in pieces])
    assert data == layer
    first, second = fake.requests("blob", "GET")
    assert (first.status, first.received) == (200, 70_000)
    assert (second.status, second.received) == (206, len(layer) - 70_000)


@pytest.mark.parametrize("status", [503, 0])
async def test_a_blob_request_that_keeps_failing_is_not_resumed_on_top_of_its_retries(status: int) -> None:
    """Range resume is for a body that breaks mid-stream; a request that fails before streaming was
    already retried by the client (before: 4 tries x 6 resumes = 24 blob GETs)."""
    fake = FakeRegistry()
    image = random_image(13, layers=1)
    await push_image(fake, "r.test", "app", image, "v1")
    layer = image.layers[0]
    fake.fault(status, match=lambda r: "/blobs/" in r.url.path)
    desc = Descriptor("application/octet-stream", Digest.parse(digest_of(layer)), len(layer))
    async with fake_runtime(fake) as rt:
        source = rt.registry.repo_source(Repo("r.test", "app"), SIDE)
        with pytest.raises(TransientError):
            async with source.open_blob(desc) as pieces:
                [piece async for piece in pieces]
    assert len(fake.requests("blob", "GET")) == 4


@pytest.mark.parametrize(("retry_times", "tries"), [(0, 4), (2, 4), (5, 6)])
async def test_retry_times_applies_once_per_request(retry_times: int, tries: int) -> None:
    """--retry-times N: max(4, N + 1) tries of the failing request, and no whole-image retry on top
    (before: (N + 1) x max(4, N + 1) manifest GETs, e.g. 12 for N = 2)."""
    fake = FakeRegistry()
    await push_image(fake, "src.test", "app", random_image(5), "v1")
    fake.fault(503, match=lambda r: r.method == "GET" and "/manifests/" in r.url.path)
    with pytest.raises(MirrorError, match="503"):
        await copy_one(GlobalOptions(retry_times=retry_times), fake, "docker://src.test/app:v1",
                       "docker://dst.test/app:v1")
    assert len(manifest_gets(fake, "src.test")) == tries
    assert len(fake.requests("ping", host="src.test")) == 1


@pytest.mark.parametrize("status", [503, 0])
async def test_a_token_fetch_is_retried_like_any_request(status: int) -> None:
    """A failing token server is asked max(4, N + 1) times, by the same loop as every request: not by
    a loop of its own inside the request's loop (which made it attempts x attempts)."""
    fake = FakeRegistry(auth=True)
    await push_image(fake, "src.test", "app", random_image(6), "v1")
    fake.fault(status, match=lambda r: r.url.host == TOKEN_HOST)
    with pytest.raises((RegistryError, TransientError)):
        await copy_one(GlobalOptions(retry_times=2), fake, "docker://src.test/app:v1", "docker://dst.test/app:v1")
    assert len(fake.requests("token")) == 4
    # The ping's challenge asked for the token before the first manifest request, which was never sent
    # (the request is not tried again around the token fetch's own tries).
    assert [e.kind for e in fake.log if e.kind != "token"] == ["ping"]


async def test_a_token_is_fetched_once_per_scope_set_and_a_failed_fetch_retried() -> None:
    fake = FakeRegistry(auth=True, users={"alice": "s3cret-pw"})
    image = random_image(7, layers=2)
    await push_image(fake, "r.test", "app", image, "v1")
    fake.fault(503, times=1, match=lambda r: r.url.host == TOKEN_HOST)  # one failure: retried
    side = SideOptions(creds=CredentialOptions(creds="alice:s3cret-pw"))
    with capture_logs() as logs:
        async with fake_runtime(fake) as rt:
            source = rt.registry.repo_source(Repo("r.test", "app"), side)
            await source.get_manifest(Tag("v1"))
            for layer in image.layers:
                desc = Descriptor("application/octet-stream", Digest.parse(digest_of(layer)), len(layer))
                async with source.open_blob(desc) as pieces:
                    assert b"".join([piece async for piece in pieces]) == layer
    assert [e.status for e in fake.requests("token")] == [503, 200]
    assert all(e.authorized for e in fake.log if e.kind in ("manifest", "blob"))
    assert any(event["event"] == "http_retry" for event in logs)  # the token retry was logged...
    text = repr(logs)
    assert "s3cret" not in text and "token-" not in text and "YWxpY2U6" not in text  # ...with no secret


@pytest.mark.parametrize("cdn", ["https://cdn.test", "https://cdn.test:8443"])
async def test_a_redirect_to_another_host_never_receives_authorization(cdn: str) -> None:
    fake = FakeRegistry(auth=True, blob_redirect=cdn)
    image = random_image(8, layers=1, layer_size=5000)
    await push_image(fake, "r.test", "app", image, "v1")
    layer = image.layers[0]
    desc = Descriptor("application/octet-stream", Digest.parse(digest_of(layer)), len(layer))
    async with fake_runtime(fake) as rt:
        source = rt.registry.repo_source(Repo("r.test", "app"), SIDE)
        async with source.open_blob(desc) as pieces:
            assert b"".join([piece async for piece in pieces]) == layer
    [blob_get] = fake.requests("blob", "GET")
    [cdn_get] = fake.requests("cdn")
    assert (blob_get.status, blob_get.authorized) == (307, True)
    assert (cdn_get.status, cdn_get.authorized, cdn_get.received) == (200, False, len(layer))
    assert cdn_get.query == "sig=x%2By"  # the redirect URL is used exactly as encoded


async def test_a_redirect_from_https_to_plain_http_is_refused() -> None:
    fake = FakeRegistry(blob_redirect="http://cdn.test")
    image = random_image(12, layers=1)
    await push_image(fake, "r.test", "app", image, "v1")
    layer = image.layers[0]
    desc = Descriptor("application/octet-stream", Digest.parse(digest_of(layer)), len(layer))
    async with fake_runtime(fake) as rt:
        source = rt.registry.repo_source(Repo("r.test", "app"), SIDE)
        with pytest.raises(RegistryError, match="plain http"):
            async with source.open_blob(desc) as pieces:
                [piece async for piece in pieces]
    assert fake.requests("cdn") == []


async def test_upload_paths_chunked_and_monolithic_are_verified_by_the_registry() -> None:
    """A chunked upload (PATCH with Content-Range) and a monolithic one both end in a verified PUT."""
    fake = FakeRegistry()
    small = random_image(9, layers=1, layer_size=500)
    big = random.Random(10).randbytes(3 << 20)
    image = random_image(11, layers=0, shared=[big])
    await push_image(fake, "src.test", "big", image, "v1")
    await push_image(fake, "src.test", "small", small, "v1")
    options = GlobalOptions(chunk_size=1 << 20)
    async with fake_runtime(fake, options) as rt:
        rt.registry.uploads = replace(rt.registry.uploads, threshold=2 << 20)
        for name, img in (("big", image), ("small", small)):
            await copy(rt, parse_name(f"docker://src.test/{name}:v1"), parse_name(f"docker://dst.test/{name}:v1"),
                       SIDE, SIDE, CopyOptions())
            assert fake.manifest("dst.test", name, "v1") == img.manifest
    patches = fake.requests("upload", "PATCH", "dst.test")
    assert [e.sent for e in patches] == [1 << 20] * 3
    assert all(e.status == 202 for e in patches)
    assert fake.has_blob("dst.test", "big", digest_of(big))


def test_a_request_never_shows_its_headers_or_body() -> None:
    request = Request("GET", URL("https://r.test/v2/"), {"Authorization": "Bearer s3cr3t"}, b"password=hunter2")
    assert "s3cr3t" not in repr(request) and "hunter2" not in repr(request)


async def test_a_failed_chunk_resumes_through_the_upload_status_query_not_a_request_retry() -> None:
    """A streamed PATCH is never re-sent by the client; upload.py asks the registry where it is
    (GET status → 204 + Range) and continues from there."""
    fake = FakeRegistry()
    big = random.Random(14).randbytes(3 << 20)
    image = random_image(15, layers=0, shared=[big])
    await push_image(fake, "src.test", "big", image, "v1")
    patches = iter(range(100))
    fake.fault(503, times=1, match=lambda r: r.method == "PATCH" and next(patches) == 1)
    async with fake_runtime(fake, GlobalOptions(chunk_size=1 << 20)) as rt:
        rt.registry.uploads = replace(rt.registry.uploads, threshold=2 << 20)
        await copy(rt, parse_name("docker://src.test/big:v1"), parse_name("docker://dst.test/big:v1"),
                   SIDE, SIDE, CopyOptions())
    assert fake.manifest("dst.test", "big", "v1") == image.manifest
    chunk = 1 << 20
    assert [(e.method, e.status, e.sent) for e in fake.requests("upload", host="dst.test")
            if e.method in ("PATCH", "GET")] == [
        ("PATCH", 202, chunk), ("PATCH", 503, chunk), ("GET", 204, 0), ("PATCH", 202, chunk), ("PATCH", 202, chunk)]
    assert fake.has_blob("dst.test", "big", digest_of(big))


async def test_429s_have_their_own_budget_in_the_same_loop() -> None:
    """429s are retried RATE_LIMITED_RETRIES times whatever --retry-times says (the host's limiter has
    already paused every request to that host), then reported as rate limited."""
    fake = FakeRegistry()
    await push_image(fake, "r.test", "app", random_image(16), "v1")
    fake.fault(429, match=lambda r: "/manifests/" in r.url.path, retry_after=0)
    async with fake_runtime(fake, GlobalOptions(retry_times=1)) as rt:
        with pytest.raises(RateLimited):
            await rt.registry.repo_source(Repo("r.test", "app"), SIDE).get_manifest(Tag("v1"))
    assert len(manifest_gets(fake, "r.test")) == RATE_LIMITED_RETRIES + 1
