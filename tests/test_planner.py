"""The planner through the send seam: a YAML sync config → the exact work units, over the fake registry.

Listings (source tags, destination tags, catalogs) and the digest-tag HEADs go through the real
``SyncEndpoints``/``Resolver`` and HTTP client to ``support.fakeregistry``, so the request log shows
what planning costs. The real-registry subprocess tests (``test_sync*.py``) stay; these are the fast
ones.
"""

from __future__ import annotations

import pytest
from support.fakeimages import push_image, random_image
from support.fakeregistry import FakeRegistry
from support.fakesync import plan, yaml_config

from mirror.config.schema import RateLimit
from mirror.config.settings import RegistrySettings, SyncFlags
from mirror.errors import ConfigError
from mirror.plan.expand import PruneCandidate
from mirror.plan.pairs import WorkUnit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

SECRET = "hunter2-planner-secret"


def first_pages(fake: FakeRegistry, host: str) -> list[str]:
    """Repositories whose tag listing was started (its first page), in request order."""
    return [e.path.removeprefix("/v2/").removesuffix("/tags/list")
            for e in fake.requests("tags", "GET", host) if e.query == ""]


async def test_a_yaml_plan_is_the_exact_units_with_each_registrys_settings() -> None:
    fake = FakeRegistry(page_size=2)  # tag lists and the catalog come in pages of 2
    v1, v2, other = random_image(1), random_image(2), random_image(3)
    # src.test/a/app: two tags, cosign-style tags of both digests, and one of a digest nobody selects.
    for tag, image in {"v1": v1, "v2": v2, f"sha256-{v1.digest[7:]}.sig": other,
                       f"sha256-{v2.digest[7:]}.att": other, f"sha256-{'0' * 64}.sig": other}.items():
        await push_image(fake, "src.test", "a/app", image, tag)
    for tag in ("1.0", "1.1-rc", "latest"):
        await push_image(fake, "src.test", "a/all", other, tag)
    for tag in ("v1.0", "v1.1", "v1.5-rc", "v2.0", "xv1.2"):
        await push_image(fake, "src.test", "a/rx", other, tag)
    for tag in ("1.1.0", "1.2.0", "1.3.1", "2.0.0", "latest", "nightly"):
        await push_image(fake, "src.test", "b/sem", other, tag)
    for repo, tags in {"team/x": ("stable", "stable-2", "dev"), "team/secret-y": ("stable",),
                       "other/z": ("stable",), "team/explicit": ("v9", "stable")}.items():
        for tag in tags:
            await push_image(fake, "cat.test", repo, other, tag)
    # The destination before the run: m/app has v1, m/all and m/sem have tags the sources lack.
    await push_image(fake, "dst.test", "m/app", v1, "v1")
    await push_image(fake, "dst.test", "m/all", other, "old")
    await push_image(fake, "dst.test", "m/sem", other, "1.2.0")
    await push_image(fake, "dst.test", "m/sem", other, "stale")
    config = yaml_config(rf"""
        src.test/a:
          tls-verify: false
          chunk-size: 1KiB
          assume-immutable-tags: true
          prune: true
          digest-tags: true
          platforms: [linux/aarch64]
          exclude-tags: ['-rc$']
          images:
            app: [v1, "{v2.digest}"]
            all: []
          images-by-tag-regex:
            rx: '^v1\.'
        src.test/b:
          tls-verify: true
          chunk-size: 4KiB
          rate-limit: {{requests-per-second: 5, burst: 10}}
          credentials: {{username: bob, password: {SECRET}}}
          images:
            sem: [latest]
          images-by-semver:
            sem: '>= 1.2.0, < 2.0.0'
          images-exclude-tags:
            sem: ['^1\.3']
        cat.test:
          images:
            team/explicit: [v9]
          catalog:
            prefixes: [team/]
            exclude: [secret]
            tags: '^stable'
    """)
    units, prune = await plan(fake, config, "dst.test/m", SyncFlags(tls_verify=False, chunk_size=2048))

    a = RegistrySettings(name="src.test/a", tls_verify=False, chunk_size=1024, assume_immutable=True, prune=True,
                         platforms=("linux/arm64",), digest_tags=True)
    b = RegistrySettings(name="src.test/b", tls_verify=True, credentials="src.test/b",
                         rate_limit=RateLimit(5.0, 10, None), chunk_size=4096)
    cat = RegistrySettings(name="cat.test", tls_verify=False, chunk_size=2048)  # the CLI flags stand

    def unit(settings: RegistrySettings, src: str, dst: str, fresh: bool, has: bool | None,
             assumed: bool = False) -> WorkUnit:
        return WorkUnit(src=f"docker://{src}", dst=f"docker://dst.test/m/{dst}", settings=settings, src_name=src,
                        dst_name=f"dst.test/m/{dst}", fresh_repo=fresh, dst_has_tag=has, assumed_present=assumed)

    sig1, att2 = f"sha256-{v1.digest[7:]}.sig", f"sha256-{v2.digest[7:]}.att"
    expected = [
        unit(a, "src.test/a/app:v1", "app:v1", False, True, assumed=True),  # a assumes immutable tags
        unit(a, f"src.test/a/app@{v2.digest}", f"app@{v2.digest}", False, None),
        unit(a, f"src.test/a/app:{sig1}", f"app:{sig1}", False, False),
        unit(a, f"src.test/a/app:{att2}", f"app:{att2}", False, False),
        unit(a, "src.test/a/all:1.0", "all:1.0", False, False),
        unit(a, "src.test/a/all:latest", "all:latest", False, False),
        unit(a, "src.test/a/rx:v1.0", "rx:v1.0", True, False),
        unit(a, "src.test/a/rx:v1.1", "rx:v1.1", True, False),
        unit(b, "src.test/b/sem:1.2.0", "sem:1.2.0", False, True),
        unit(b, "src.test/b/sem:latest", "sem:latest", False, False),
        unit(cat, "cat.test/team/explicit:v9", "explicit:v9", True, False),
        unit(cat, "cat.test/team/x:stable", "x:stable", True, False),
        unit(cat, "cat.test/team/x:stable-2", "x:stable-2", True, False),
    ]
    assert sorted(units, key=lambda u: u.src) == sorted(expected, key=lambda u: u.src)
    # Within one repository the units come in selection order (listing order, then explicit refs),
    # digest tags after the refs they belong to.
    app = [u.src.rsplit("/", 1)[1] for u in units if "/a/app" in u.src]
    assert app == ["app:v1", f"app@{v2.digest}", f"app:{sig1}", f"app:{att2}"]
    # Only the registry with prune reports candidates; b's m/sem:stale is left alone.
    assert prune == [PruneCandidate("dst.test/m/all", ("old",))]
    for u in units:
        text = u.to_json()
        assert WorkUnit.from_json(text) == u
        assert SECRET not in text and "bob" not in text  # credentials by reference only

    # What planning cost: listings and the one HEAD digest-tags needs (v1's digest; the explicit digest
    # needs none); never a manifest GET, a blob or an upload.
    assert [(e.method, e.host, e.path) for e in fake.requests("manifest")] == \
        [("HEAD", "src.test", "/v2/a/app/manifests/v1")]
    assert not fake.requests("blob") and not fake.requests("upload")
    # Source tags are listed only where the selection needs them (not for cat.test's explicit v9).
    assert sorted(first_pages(fake, "src.test")) == ["a/all", "a/app", "a/rx", "b/sem"]
    assert first_pages(fake, "cat.test") == ["team/x"]
    # Each destination repository is listed once, however many units go to it (m/app: 4).
    assert sorted(first_pages(fake, "dst.test")) == ["m/all", "m/app", "m/explicit", "m/rx", "m/sem", "m/x"]
    # The catalog was read page by page (the fake caps pages at 2 whatever ``n`` asks).
    assert [e.query for e in fake.requests("catalog")] == ["n=1000", "n=2&last=team/explicit"]
    assert {e.host for e in fake.requests("catalog")} == {"cat.test"}


async def test_a_work_unit_that_is_not_one_is_a_config_error() -> None:
    unit = WorkUnit(src="docker://s.test/r:v1", dst="docker://d.test/r:v1",
                    settings=RegistrySettings(name="s.test", platforms=("linux/amd64",)), dst_has_tag=None)
    assert WorkUnit.from_json(unit.to_json().encode()) == unit
    for text in ('{"v": 2}', "[]", unit.to_json().replace('"platforms"', '"platformz"'), "{"):
        with pytest.raises(ConfigError, match=r"invalid (work unit|registry settings)"):
            WorkUnit.from_json(text)
