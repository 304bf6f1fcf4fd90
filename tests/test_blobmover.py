"""``BlobMover`` over the fake registry: at most one upload per (registry, digest), mounts after that.

The fake's request log shows exactly which bytes went where (``support.fakeregistry``).
"""

from __future__ import annotations

import anyio
import pytest
from support.fakeimages import FakeImage, fake_runtime, push_image, random_image
from support.fakeregistry import FakeRegistry, Logged, digest_of

from mirror.core.descriptor import Descriptor
from mirror.core.digest import Digest
from mirror.core.reference import Repo, Tag
from mirror.engine.blobs import BlobMover, BlobOutcome, KnownLocations
from mirror.engine.image import CopyOptions
from mirror.engine.sync import Scheduler, SyncOptions
from mirror.ops.copy import copy, parse_name
from mirror.plan.pairs import ImagePair
from mirror.transports.side import SideOptions

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

SIDE = SideOptions()
SHARED = bytes(range(256)) * 40  # 10 KiB layer in both images


def commits(fake: FakeRegistry, host: str, digest: str) -> list[Logged]:
    """Requests that sent a blob's bytes and closed its upload (monolithic POST or PUT ?digest=)."""
    return [e for e in fake.requests("upload", host=host) if f"digest={digest}" in e.query and e.status == 201]


def blob_reads(fake: FakeRegistry, host: str, digest: str) -> list[Logged]:
    return [e for e in fake.requests("blob", "GET", host) if e.path.endswith(digest)]


async def two_images(fake: FakeRegistry) -> tuple[FakeImage, FakeImage]:
    a = random_image(1, layers=1, shared=[SHARED])
    b = random_image(2, layers=1, shared=[SHARED])
    await push_image(fake, "src.test", "a", a, "v1")
    await push_image(fake, "src.test", "b", b, "v1")
    return a, b


async def test_concurrent_needs_of_one_blob_in_one_repository_upload_it_once() -> None:
    fake = FakeRegistry()
    await two_images(fake)
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.parse(digest_of(SHARED)), len(SHARED))
    outcomes: list[tuple[BlobOutcome, int]] = []
    async with fake_runtime(fake) as rt:
        mover = BlobMover(anyio.CapacityLimiter(4), KnownLocations())
        dst = rt.registry.repo_destination(Repo("dst.test", "mirror"), SIDE)

        async def ensure(name: str) -> None:
            outcomes.append(await mover.ensure(rt.registry.repo_source(Repo("src.test", name), SIDE), dst, desc, True))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ensure, "a")
            tg.start_soon(ensure, "b")
    assert sorted(o.value for o, _ in outcomes) == ["skipped", "uploaded"]
    assert sum(sent for _, sent in outcomes) == len(SHARED)
    assert len(commits(fake, "dst.test", str(desc.digest))) == 1
    assert len(blob_reads(fake, "src.test", str(desc.digest))) == 1
    assert len([e for e in fake.requests("blob", "HEAD", "dst.test") if e.path.endswith(str(desc.digest))]) == 1


async def test_a_sync_of_two_images_sharing_a_layer_sends_it_once() -> None:
    fake = FakeRegistry()
    a, b = await two_images(fake)
    records = []
    async with fake_runtime(fake) as rt:
        pairs = [ImagePair(rt.registry.repo_source(Repo("src.test", name), SIDE), Tag("v1"),
                           rt.registry.repo_destination(Repo("dst.test", "mirror"), SIDE), Tag(name), fresh_repo=True)
                 for name in ("a", "b")]
        scheduler = Scheduler(SyncOptions(jobs=2, blob_jobs=4), rt.known_locations())

        async def sync(pair: ImagePair) -> None:
            records.append(await scheduler.sync_pair(pair))

        async with anyio.create_task_group() as tg:  # as the scheduler's workers do: one BlobMover
            for pair in pairs:
                tg.start_soon(sync, pair)
    assert sorted(r.outcome for r in records) == ["copied", "copied"]
    assert fake.manifest("dst.test", "mirror", "a") == a.manifest
    assert fake.manifest("dst.test", "mirror", "b") == b.manifest
    shared = digest_of(SHARED)
    assert len(commits(fake, "dst.test", shared)) == 1
    assert len(blob_reads(fake, "src.test", shared)) == 1
    for digest in {*a.blob_digests, *b.blob_digests}:  # and every other blob once too
        assert len(commits(fake, "dst.test", digest)) == 1, digest


async def test_a_second_repository_on_the_same_registry_mounts_instead_of_uploading() -> None:
    fake = FakeRegistry()
    image = random_image(3, layers=3)
    await push_image(fake, "src.test", "app", image, "v1")
    async with fake_runtime(fake) as rt:
        for repo in ("one", "two"):
            await copy(rt, parse_name("docker://src.test/app:v1"), parse_name(f"docker://dst.test/{repo}:v1"),
                       SIDE, SIDE, CopyOptions())
    assert fake.manifest("dst.test", "two", "v1") == image.manifest
    to_two = fake.requests("upload", host="dst.test")
    to_two = [e for e in to_two if e.path.startswith("/v2/two/")]
    assert {e.method for e in to_two} == {"POST"}  # no PATCH, no PUT: no bytes
    assert sorted(e.query for e in to_two) == sorted(f"mount={d}&from=one" for d in image.blob_digests)
    assert all(e.status == 201 and e.sent == 0 for e in to_two)
    assert len(fake.requests("blob", "GET", "src.test")) == len(image.blob_digests)  # read for "one" only


async def test_a_copy_within_one_registry_mounts_from_the_source_repository() -> None:
    fake = FakeRegistry()
    image = random_image(4, layers=2)
    await push_image(fake, "r.test", "app", image, "v1")
    async with fake_runtime(fake) as rt:
        await copy(rt, parse_name("docker://r.test/app:v1"), parse_name("docker://r.test/copy:v1"),
                   SIDE, SIDE, CopyOptions())
    assert fake.manifest("r.test", "copy", "v1") == image.manifest
    uploads = fake.requests("upload")
    assert sorted(e.query for e in uploads) == sorted(f"mount={d}&from=app" for d in image.blob_digests)
    assert fake.requests("blob", "GET") == []
