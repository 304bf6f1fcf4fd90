"""The sync scheduler (and ``ops.sync`` around it) through the send seam, over the fake registry.

Each test runs whole syncs in-process: the planner's units, the Resolver's transports, the run's
one BlobMover and ManifestWriter, and the real HTTP client, against ``support.fakeregistry``. The
request log says what moved where: blob bytes (upload commits, PATCHes), mounts, HEADs, manifest
PUTs and DELETEs. The real-registry subprocess tests (``test_sync*.py``) stay; these are the fast ones.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from anyio.streams.memory import MemoryObjectSendStream
from support.fakeimages import FakeImage, fake_runtime, push_image, random_image
from support.fakeregistry import FakeRegistry, digest_of
from support.fakesync import (
    SIDE,
    committed_digests,
    mounts,
    patches,
    push_index,
    sync_run,
    yaml_config,
)

from mirror.config.settings import RegistrySettings
from mirror.engine.image import CopyOptions, MultiArch
from mirror.engine.sync import ImageRecord, Scheduler, SyncOptions
from mirror.errors import MirrorError, NotFound
from mirror.ops.units import Resolver
from mirror.plan.expand import PruneCandidate
from mirror.plan.pairs import WorkUnit
from mirror.transports.registry.uploadopts import UploadOptions

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

BASE = bytes(range(256)) * 80            # 20 KiB: in every image
MIDDLE = bytes(range(255, -1, -1)) * 24  # 6 KiB: in half of them


def blob_digests(image: FakeImage) -> set[str]:
    return set(image.blob_digests)


async def test_shared_blobs_move_once_per_destination_registry_and_are_mounted_elsewhere() -> None:
    fake = FakeRegistry()
    services = [random_image(10 + i, layers=1, shared=[BASE, MIDDLE] if i % 2 else [BASE]) for i in range(4)]
    for i, image in enumerate(services):
        await push_image(fake, "src.test", f"svc{i}", image, "v1")
    amd, arm = random_image(20, layers=1, shared=[BASE]), random_image(21, layers=1, shared=[MIDDLE])
    index = await push_index(fake, "src.test", "multi", [(amd, "linux/amd64"), (arm, "linux/arm64")], "v1")
    await push_index(fake, "src.test", "multi", [(amd, "linux/amd64"), (arm, "linux/arm64")], "v1-alias")
    settings = RegistrySettings(name="src.test")
    targets = {f"svc{i}:v1": f"m/svc{i}:v1" for i in range(4)} | {"multi:v1": "m/multi:v1",
                                                                  "multi:v1-alias": "m/multi:v1-alias"}
    units = [WorkUnit(src=f"docker://src.test/{src}", dst=f"docker://{host}/{dst}", settings=settings,
                      src_name=f"src.test/{src}", dst_name=f"{host}/{dst}", fresh_repo=True, dst_has_tag=False)
             for host in ("d1.test", "d2.test") for src, dst in targets.items()]

    async def produce(send: MemoryObjectSendStream[WorkUnit]) -> None:
        for unit in units:
            await send.send(unit)

    records: list[ImageRecord] = []
    async with fake_runtime(fake) as rt:
        scheduler = Scheduler(SyncOptions(jobs=4, blob_jobs=4, copy=CopyOptions(multi_arch=MultiArch.ALL)),
                              rt.known_locations(), records.append, opener=Resolver(rt, SIDE, SIDE).open)
        stats = await scheduler.run(produce)

    assert sorted(r.outcome for r in records) == ["copied"] * len(units)
    assert {r.destination: r.digest for r in records if "multi" in r.destination} == \
        {f"{h}/m/multi:{t}": digest_of(index) for h in ("d1.test", "d2.test") for t in ("v1", "v1-alias")}
    needs = {f"m/svc{i}": blob_digests(image) for i, image in enumerate(services)}
    needs["m/multi"] = blob_digests(amd) | blob_digests(arm)
    unique = set().union(*needs.values())
    assert len(unique) == 4 + 4 + 2 + 2 + 2  # configs, own layers, BASE and MIDDLE, the children's
    sizes = {digest_of(b): len(b) for image in [*services, amd, arm] for b in (image.config, *image.layers)}
    for host in ("d1.test", "d2.test"):
        # Every blob's bytes went to each destination registry exactly once...
        assert committed_digests(fake, host) == sorted(unique), host
        # ...and every other repository that needed it got it by a mount (no HEADs: fresh repositories).
        host_mounts = mounts(fake, host)
        assert all(e.status == 201 and e.sent == 0 for e in host_mounts)
        assert len(host_mounts) == sum(len(d) for d in needs.values()) - len(unique)
        assert sum(e.sent for e in fake.requests("upload", host=host)) == sum(sizes.values())
        assert not fake.requests("blob", "HEAD", host)
        for repo, digests in needs.items():
            assert all(fake.has_blob(host, repo, d) for d in digests)
        # Each manifest once per repository: the tags, and the index's children once for both its tags.
        puts = Counter(e.path for e in fake.requests("manifest", "PUT", host))
        assert puts == Counter([*(f"/v2/{dst.replace(':', '/manifests/')}" for dst in targets.values()),
                                f"/v2/m/multi/manifests/{amd.digest}", f"/v2/m/multi/manifests/{arm.digest}"])
        assert fake.manifest(host, "m/multi", "v1-alias") == index
    # The source was read once per destination registry for every blob (mounts cannot cross registries).
    reads = Counter(e.path.rsplit("/", 1)[1] for e in fake.requests("blob", "GET", "src.test"))
    assert reads == dict.fromkeys(unique, 2)
    # The run's records add up to what the log shows.
    assert stats.copied == len(units) and stats.failed == 0
    assert stats.blobs_uploaded == 2 * len(unique)
    assert stats.blobs_mounted == len(mounts(fake, "d1.test")) + len(mounts(fake, "d2.test"))
    assert stats.bytes_sent == 2 * sum(sizes.values())


async def test_a_resync_sends_only_heads_and_nothing_for_assume_immutable_tags() -> None:
    fake = FakeRegistry()
    images = {f"{reg}/{repo}:{tag}": random_image(seed, layers=2, shared=[BASE])
              for seed, (reg, repo, tag) in enumerate(
                  [("a", "app", "v1"), ("a", "app", "v2"), ("b", "svc", "v1"), ("b", "svc", "v2")])}
    for name, image in images.items():
        path, tag = name.split(":")
        await push_image(fake, "src.test", path, image, tag)
    config = yaml_config("""
        src.test/a:
          assume-immutable-tags: true
          images: {app: [v1, v2]}
        src.test/b:
          images: {svc: [v1, v2]}
    """)
    first = await sync_run(fake, config, "dst.test/m")
    assert first.outcomes() == dict.fromkeys(
        ["dst.test/m/app:v1", "dst.test/m/app:v2", "dst.test/m/svc:v1", "dst.test/m/svc:v2"], "copied")
    assert committed_digests(fake, "dst.test").count(digest_of(BASE)) == 1
    assert not fake.requests("manifest", "HEAD") and not fake.requests("blob", "HEAD")  # all new: no HEADs

    del fake.log[:]
    second = await sync_run(fake, config, "dst.test/m")
    assert {r.destination: (r.outcome, r.reason, r.digest) for r in second.records} == {
        "dst.test/m/app:v1": ("skipped", "tag present at destination (assume immutable tags)", None),
        "dst.test/m/app:v2": ("skipped", "tag present at destination (assume immutable tags)", None),
        "dst.test/m/svc:v1": ("skipped", "up to date", images["b/svc:v1"].digest),
        "dst.test/m/svc:v2": ("skipped", "up to date", images["b/svc:v2"].digest),
    }
    assert (second.stats.skipped, second.stats.copied, second.stats.bytes_sent) == (4, 0, 0)
    # The whole second run: the planner's destination listings, and one HEAD at each end per tag of
    # registry b. Registry a's images (assume-immutable-tags) cost nothing at all.
    sent = Counter((e.method, e.host, e.path) for e in fake.log if e.kind != "ping")
    assert sent == Counter({
        ("GET", "dst.test", "/v2/m/app/tags/list"): 1, ("GET", "dst.test", "/v2/m/svc/tags/list"): 1,
        ("HEAD", "src.test", "/v2/b/svc/manifests/v1"): 1, ("HEAD", "src.test", "/v2/b/svc/manifests/v2"): 1,
        ("HEAD", "dst.test", "/v2/m/svc/manifests/v1"): 1, ("HEAD", "dst.test", "/v2/m/svc/manifests/v2"): 1,
    })

    # v2 moves at both sources: b's is compared and updated, a's is assumed immutable and kept.
    moved_app, moved_svc = random_image(90, shared=[BASE]), random_image(91, shared=[BASE])
    await push_image(fake, "src.test", "a/app", moved_app, "v2")
    await push_image(fake, "src.test", "b/svc", moved_svc, "v2")
    del fake.log[:]
    third = await sync_run(fake, config, "dst.test/m")
    assert third.outcomes() == {"dst.test/m/app:v1": "skipped", "dst.test/m/app:v2": "skipped",
                                "dst.test/m/svc:v1": "skipped", "dst.test/m/svc:v2": "copied"}
    assert fake.manifest("dst.test", "m/svc", "v2") == moved_svc.manifest
    assert fake.manifest("dst.test", "m/app", "v2") == images["a/app:v2"].manifest
    # Only the moved image's own blobs were sent (BASE is there already: HEAD, not re-sent).
    assert committed_digests(fake, "dst.test") == sorted(set(moved_svc.blob_digests) - {digest_of(BASE)})
    assert not [e for e in fake.log if e.host == "src.test" and "/a/app/" in e.path]


async def push_four(fake: FakeRegistry) -> tuple[dict[str, FakeImage], str]:
    """src.test/a/app:v1..v4, sharing BASE; v1's own layer (and nothing else) is unreadable: 404."""
    images = {f"v{i}": random_image(30 + i, layers=1, shared=[BASE]) for i in range(1, 5)}
    for tag, image in images.items():
        await push_image(fake, "src.test", "a/app", image, tag)
    broken = digest_of(images["v1"].layers[-1])
    fake.fault(404, match=lambda r: r.method == "GET" and r.url.path.endswith(f"/blobs/{broken}"))
    return images, broken


CONFIG_FOUR = """
    src.test/a:
      images: {app: [v1, v2, v3, v4]}
"""


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for exc in error.exceptions for leaf in leaves(exc)]
    return [error]


async def test_a_broken_image_stops_the_run_without_keep_going() -> None:
    fake = FakeRegistry()
    images, broken = await push_four(fake)
    records: list[ImageRecord] = []
    with pytest.raises(BaseExceptionGroup) as caught:  # a task group's error, as the CLI unwraps it
        await sync_run(fake, yaml_config(CONFIG_FOUR), "dst.test/m", options=SyncOptions(jobs=1), records=records)
    [error] = leaves(caught.value)
    assert isinstance(error, NotFound) and isinstance(error, MirrorError)
    assert broken in str(error)
    # One worker takes the units in order: v1 failed first, so nothing after it was published.
    assert records == []
    assert fake.tags("dst.test", "m/app") == []
    assert not fake.requests("manifest", "PUT")
    assert not [e for e in fake.requests("blob", "GET", "src.test")
                if any(d in e.path for d in images["v4"].blob_digests if d != digest_of(BASE))]


async def test_keep_going_records_the_broken_image_and_copies_every_other() -> None:
    fake = FakeRegistry()
    images, broken = await push_four(fake)
    run = await sync_run(fake, yaml_config(CONFIG_FOUR), "dst.test/m",
                         options=SyncOptions(jobs=2, keep_going=True))
    by_tag = {r.destination.rsplit(":", 1)[1]: r for r in run.records}
    assert {tag: r.outcome for tag, r in by_tag.items()} == {"v1": "failed", "v2": "copied", "v3": "copied",
                                                              "v4": "copied"}
    assert broken in by_tag["v1"].reason and "HTTP 404" in by_tag["v1"].reason
    assert by_tag["v1"].digest is None
    assert (run.stats.failed, run.stats.copied, run.stats.done) == (1, 3, 4)
    assert fake.tags("dst.test", "m/app") == ["v2", "v3", "v4"]
    for tag in ("v2", "v3", "v4"):
        assert fake.manifest("dst.test", "m/app", tag) == images[tag].manifest
        assert by_tag[tag].digest == images[tag].digest
    assert not fake.has_blob("dst.test", "m/app", broken)
    # The broken blob was asked for once (a 404 is final, not retried); BASE moved once for all four.
    assert len([e for e in fake.requests("blob", "GET", "src.test") if e.path.endswith(broken)]) == 1
    assert committed_digests(fake, "dst.test").count(digest_of(BASE)) == 1


async def test_chunk_size_platforms_and_prune_act_only_on_their_own_registry() -> None:
    fake = FakeRegistry()
    app, svc = random_image(40, layers=2, layer_size=5000), random_image(41, layers=2, layer_size=5000)
    await push_image(fake, "src.test", "a/app", app, "v1")
    await push_image(fake, "src.test", "b/svc", svc, "v1")
    platforms = ("linux/amd64", "linux/arm64", "linux/arm/v7")
    children_a = [(random_image(50 + i, layer_size=600), p) for i, p in enumerate(platforms)]
    children_b = [(random_image(60 + i, layer_size=600), p) for i, p in enumerate(platforms)]
    await push_index(fake, "src.test", "a/multi", children_a, "v1")
    index_b = await push_index(fake, "src.test", "b/multi2", children_b, "v1")
    # Both destination repositories hold a tag their source lacks.
    await push_image(fake, "dst.test", "m/app", random_image(70), "old")
    await push_image(fake, "dst.test", "m/svc", random_image(71), "old")
    config = yaml_config("""
        src.test/a:
          chunk-size: 1KiB
          platforms: [linux/arm64]
          prune: true
          images: {app: [v1], multi: [v1]}
        src.test/b:
          images: {svc: [v1], multi2: [v1]}
    """)
    # Chunked (resumable) uploads from 2 KiB on, default chunk 16 MiB; nothing monolithic.
    uploads = UploadOptions(threshold=2048, monolithic_max=0)
    run = await sync_run(fake, config, "dst.test/m", uploads=uploads, delete_pruned=True,
                         options=SyncOptions(jobs=4, copy=CopyOptions(multi_arch=MultiArch.ALL)))
    assert sorted(run.outcomes().values()) == ["copied"] * 4

    def expected_patches(image: FakeImage, chunk: int) -> int:
        return sum(math.ceil(len(b) / chunk) if len(b) >= 2048 else 1 for b in (image.config, *image.layers))

    # chunk-size 1 KiB for a: each 5000-byte layer in 5 PATCHes; b keeps the default: one each.
    assert len(patches(fake, "dst.test", "m/app")) == expected_patches(app, 1024) == 1 + 5 + 5
    assert len(patches(fake, "dst.test", "m/svc")) == expected_patches(svc, 16 << 20) == 3
    assert all(e.status == 202 and e.sent <= 1024 for e in patches(fake, "dst.test", "m/app"))
    assert max(e.sent for e in patches(fake, "dst.test", "m/svc")) == 5000
    assert set(committed_digests(fake, "dst.test")) >= set(app.blob_digests) | set(svc.blob_digests)

    # platforms for a: a one-platform subset of its index; b's index is copied whole, byte for byte.
    subset = json.loads(fake.manifest("dst.test", "m/multi", "v1"))
    arm = children_a[1][0]
    assert [(m["digest"], m["platform"]["architecture"]) for m in subset["manifests"]] == [(arm.digest, "arm64")]
    assert [r.digest for r in run.records if r.destination.endswith("/multi:v1")] == \
        [digest_of(fake.manifest("dst.test", "m/multi", "v1"))]
    assert all(fake.has_blob("dst.test", "m/multi", d) for d in arm.blob_digests)
    for image, _ in (children_a[0], children_a[2]):
        assert not any(fake.has_blob("dst.test", "m/multi", d) for d in image.blob_digests)
    assert fake.manifest("dst.test", "m/multi2", "v1") == index_b
    for image, _ in children_b:
        assert fake.manifest("dst.test", "m/multi2", image.digest) == image.manifest

    # prune for a only: m/app:old reported and deleted, m/svc:old untouched.
    assert run.result.prune == [PruneCandidate("dst.test/m/app", ("old",))]
    assert run.result.pruned == ["dst.test/m/app:old"]
    assert fake.tags("dst.test", "m/app") == ["v1"]
    assert fake.tags("dst.test", "m/svc") == ["old", "v1"]
    assert [e.path.split("/manifests/")[0] for e in fake.requests("manifest", "DELETE")] == ["/v2/m/app"]

