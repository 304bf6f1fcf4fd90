"""OCI referrers (``--referrers``, YAML ``referrers``): signatures, SBOMs and attestations attached by
``subject`` follow the images they belong to, through the referrers API or the fallback tag.

docker-registry 2.8 (the real one) has no referrers API: there referrers are read from and written to
the referrers tag schema's ``sha256-<hex>`` index. The API path runs against ``support.ociregistry``,
a small in-process registry that speaks it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp import web
from support.artifacts import (
    EMPTY_DATA,
    SBOM,
    SIGNATURE,
    STRANGE,
    Artifact,
    api_referrers,
    attach,
    fallback_entries,
    fallback_tag,
)
from support.images import Client, PushedImage, list_tags, push_image, push_index
from support.mirror_cli import assert_one_line_error, run_mirror
from support.ociregistry import start_oci_registry
from support.proxy import Fault, RequestInfo, start_proxy
from support.registry import Registry

from mirror.config.load import parse_sync_config
from mirror.config.settings import RegistrySettings, SyncFlags, resolve_settings
from mirror.errors import ConfigError
from mirror.plan.pairs import WorkUnit

INSECURE = ("--src-tls-verify=false", "--dest-tls-verify=false", "--insecure-policy")
WRITES = ("PUT", "POST", "PATCH", "DELETE")


def subject_of(image: PushedImage) -> tuple[str, str, int]:
    return image.digest, image.media_type, len(image.manifest)


def attach_family(reg: Registry, repo: str, image: PushedImage, *, fallback: bool = True) -> dict[str, Artifact]:
    """An SBOM and a signature of the image, a signature of the SBOM, and an artifact of a media type
    nobody knows (its payload is not even JSON)."""
    sbom = attach(reg, repo, subject_of(image), SBOM, b'{"spdxVersion":"SPDX-2.3","name":"app"}',
                  annotations={"org.example.kind": "sbom"}, fallback=fallback)
    sig = attach(reg, repo, subject_of(image), SIGNATURE, b"signature of the image", fallback=fallback)
    sbom_subject = (sbom.digest, "application/vnd.oci.image.manifest.v1+json", len(sbom.raw))
    sbom_sig = attach(reg, repo, sbom_subject, SIGNATURE, b"signature of the sbom", fallback=fallback)
    strange = attach(reg, repo, subject_of(image), STRANGE, bytes(range(256)) * 3, layer_type=STRANGE,
                     fallback=fallback)
    return {"sbom": sbom, "sig": sig, "sbom_sig": sbom_sig, "strange": strange}


def by_digest(entries: list[dict[str, object]] | None) -> dict[object, dict[str, object]]:
    return {e["digest"]: e for e in entries or []}


def writes_since(reg: Registry, start: int) -> list[tuple[str, str, int]]:
    return [e for e in reg.access_log_requests()[start:] if e[0] in WRITES]


def test_copy_referrers_through_fallback_tags(registry: Registry, registry2: Registry) -> None:
    """Source and destination without the referrers API: the image's referrers, and the SBOM's own
    signature, arrive byte for byte and are listed in the destination's fallback indexes with the
    source's entries; a second copy writes nothing."""
    image = push_image(registry, "app", "v1", seed=11)
    family = attach_family(registry, "app", image)
    src_top = fallback_entries(registry, "app", image.digest)
    assert src_top is not None and len(src_top) == 3

    dst = f"docker://{registry2.host}/mirrored/app:v1"
    run_mirror("copy", *INSECURE, "--referrers", "-q", f"docker://{registry.host}/app:v1", dst)

    assert by_digest(fallback_entries(registry2, "mirrored/app", image.digest)) == by_digest(src_top)
    sbom = family["sbom"]
    assert [e["digest"] for e in fallback_entries(registry2, "mirrored/app", sbom.digest) or []] == \
        [family["sbom_sig"].digest]
    client = Client(registry2)
    for artifact in family.values():
        raw, _media_type, digest = client.get_manifest("mirrored/app", artifact.digest)
        assert raw == artifact.raw and digest == artifact.digest
        assert client.get_blob("mirrored/app", artifact.payload_digest) == \
            Client(registry).get_blob("app", artifact.payload_digest)

    start = len(registry2.access_log_requests())
    again = run_mirror("copy", *INSECURE, "--referrers", f"docker://{registry.host}/app:v1", dst)
    assert writes_since(registry2, start) == [], again.stderr


def test_artifact_type_filter_and_refusals(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    """``--referrers-artifact-type`` copies only those types, at every level; local transports and a
    filter without ``--referrers`` are refused in one line."""
    image = push_image(registry, "app", "v1", seed=12)
    family = attach_family(registry, "app", image)
    src = f"docker://{registry.host}/app:v1"

    run_mirror("copy", *INSECURE, "--referrers", "--referrers-artifact-type", SBOM, "-q", src,
               f"docker://{registry2.host}/sboms:v1")
    assert [e["digest"] for e in fallback_entries(registry2, "sboms", image.digest) or []] == [family["sbom"].digest]
    assert fallback_entries(registry2, "sboms", family["sbom"].digest) is None  # a signature: filtered out

    run_mirror("copy", *INSECURE, "--referrers", "--referrers-artifact-type", SBOM,
               "--referrers-artifact-type", SIGNATURE, "-q", src, f"docker://{registry2.host}/signed:v1")
    assert set(by_digest(fallback_entries(registry2, "signed", image.digest))) == \
        {family["sbom"].digest, family["sig"].digest}
    assert [e["digest"] for e in fallback_entries(registry2, "signed", family["sbom"].digest) or []] == \
        [family["sbom_sig"].digest]

    refused = run_mirror("copy", *INSECURE, "--referrers", src, f"oci:{tmp_path}/layout:v1", check=False)
    assert_one_line_error(refused, "--referrers", "oci")
    assert not (tmp_path / "layout").exists()
    lonely = run_mirror("copy", *INSECURE, "--referrers-artifact-type", SBOM, src,
                        f"docker://{registry2.host}/x:v1", check=False)
    assert_one_line_error(lonely, "--referrers-artifact-type needs --referrers")
    bad = run_mirror("copy", *INSECURE, "--referrers", "--referrers-artifact-type", "sbom", src,
                     f"docker://{registry2.host}/x:v1", check=False)
    assert_one_line_error(bad, "not a media type")
    to_dir = run_mirror("sync", "--src", "docker", "--dest", "dir", "--referrers", *INSECURE[:1],
                        f"{registry.host}/app", str(tmp_path / "out"), check=False)
    assert_one_line_error(to_dir, "--referrers is not supported for sync from docker to dir")


def test_sync_yaml_referrers_of_an_index_and_its_instances(registry: Registry, registry2: Registry,
                                                           tmp_path: Path) -> None:
    """YAML ``referrers: true`` with ``referrers-artifact-types``: referrers of the index and of each
    instance arrive; a second sync is a no-op (no writes, every image up to date); a referrer attached
    later is copied by the next sync although the image itself is unchanged."""
    index = push_index(registry, "multi", "latest", seed=13)
    arm = index.children[1]
    on_index = attach(registry, "multi", (index.digest, index.media_type, len(index.manifest)), SBOM, b'{"a":1}')
    on_arm = attach(registry, "multi", subject_of(arm), SBOM, b'{"arm":1}')
    attach(registry, "multi", subject_of(arm), STRANGE, b"not wanted")
    config = tmp_path / "sync.yaml"
    config.write_text(json.dumps({registry.host: {
        "tls-verify": False, "images": {"multi": ["latest"]}, "referrers": True,
        "referrers-artifact-types": [SBOM]}}))
    args = ("sync", "--src", "yaml", "--dest", "docker", "--all", "--dest-tls-verify=false", "--insecure-policy",
            "--report", str(tmp_path / "report.jsonl"), str(config), f"{registry2.host}/mirror")

    run_mirror(*args)
    assert [e["digest"] for e in fallback_entries(registry2, "mirror/multi", index.digest) or []] == [on_index.digest]
    assert [e["digest"] for e in fallback_entries(registry2, "mirror/multi", arm.digest) or []] == [on_arm.digest]
    assert fallback_entries(registry2, "mirror/multi", index.children[0].digest) is None

    start = len(registry2.access_log_requests())
    run_mirror(*args)
    assert writes_since(registry2, start) == []
    assert json.loads((tmp_path / "report.jsonl").read_text())["outcome"] == "skipped"

    later = attach(registry, "multi", subject_of(index.children[0]), SBOM, b'{"amd64":1}')
    run_mirror(*args, "--assume-immutable-tags")  # the image is not compared again; its referrers are
    record = json.loads((tmp_path / "report.jsonl").read_text())
    assert (record["outcome"], record["reason"]) == ("copied", "up to date; 1 referrers copied")
    assert [e["digest"] for e in fallback_entries(registry2, "mirror/multi", index.children[0].digest) or []] == \
        [later.digest]


def test_referrers_api_with_pages_and_filter(registry: Registry) -> None:
    """Against a registry with the referrers API (``support.ociregistry``, in-process, two entries a
    page): copying to another such registry lists identical entries through its API and writes no
    fallback tag; a single artifact type is asked of the source's API; copying on to
    docker-registry 2.8 writes the same entries into its fallback index; second runs write nothing."""
    with start_oci_registry(page_size=2) as source, start_oci_registry() as target:
        image = push_image(source.registry, "app", "v1", seed=14)
        family = attach_family(source.registry, "app", image, fallback=False)
        wanted = source.referrers("app", image.digest)
        assert len(wanted) == 3 and "sha256-" not in "".join(list_tags(source.registry, "app"))

        src = f"docker://{source.host}/app:v1"
        run_mirror("copy", *INSECURE, "--referrers", "-q", src, f"docker://{target.host}/copy:v1")
        assert sorted(api_referrers(target.registry, "copy", image.digest), key=lambda e: e["digest"]) == wanted
        assert [e["digest"] for e in api_referrers(target.registry, "copy", family["sbom"].digest)] == \
            [family["sbom_sig"].digest]
        assert list_tags(target.registry, "copy") == ["v1"]  # no fallback tag where the API exists
        listings = [q for m, p, q, _ in source.requests if "/referrers/" in p]
        assert any("page=2" in q for q in listings)  # three referrers, two a page: the Link was followed

        before = len(target.requests)
        run_mirror("copy", *INSECURE, "--referrers", "-q", src, f"docker://{target.host}/copy:v1")
        assert [r for r in target.requests[before:] if r[0] in WRITES] == []

        run_mirror("copy", *INSECURE, "--referrers", "--referrers-artifact-type", STRANGE, "-q", src,
                   f"docker://{target.host}/strange:v1")
        assert [e["digest"] for e in api_referrers(target.registry, "strange", image.digest)] == \
            [family["strange"].digest]
        assert any("artifactType=application%2Fvnd.example.strange.v7%2Boctet" in q
                   for m, p, q, _ in source.requests if "/referrers/" in p)

        run_mirror("copy", *INSECURE, "--referrers", "-q", src, f"docker://{registry.host}/plain:v1")
        assert sorted(fallback_entries(registry, "plain", image.digest) or [], key=lambda e: e["digest"]) == wanted
        start = len(registry.access_log_requests())
        run_mirror("copy", *INSECURE, "--referrers", "-q", src, f"docker://{registry.host}/plain:v1")
        assert writes_since(registry, start) == []
        assert fallback_tag(image.digest) in list_tags(registry, "plain")


def test_concurrent_writers_keep_both_entries_in_the_fallback_index(registry: Registry, registry2: Registry) -> None:
    """Two ``mirror copy`` processes attach different referrers of one subject to the same destination
    (docker-registry 2.8, which ignores If-Match) at the same time. A proxy in front of it scripts the
    worst interleaving: both read the empty fallback index, writer A's index lands and is confirmed,
    then B's stale index (without A's entry) replaces it. A's re-read after its settling delay sees
    the loss and writes again: both entries stay."""
    image = push_image(registry, "app", "v1", seed=15)
    sbom = attach(registry, "app", subject_of(image), SBOM, b'{"spdxVersion":"SPDX-2.3"}')
    sig = attach(registry, "app", subject_of(image), SIGNATURE, b"signature")
    tag = fallback_tag(image.digest)
    # The image and the artifacts' shared empty config are there first: distribution 2.8 rewrites a
    # repository's blob link file in place when a blob is pushed, so a manifest PUT that checks the
    # blob at that moment fails (DIGEST_INVALID) - a registry race this test is not about.
    run_mirror("copy", *INSECURE, "-q", f"docker://{registry.host}/app:v1", f"docker://{registry2.host}/app:v1")
    Client(registry2).push_blob("app", EMPTY_DATA)
    b_arrived, a_done, b_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def by(writer: str, method: str) -> Callable[[RequestInfo], bool]:
        return lambda info: (info.method == method and info.reference == tag
                             and info.headers.get("user-agent", "").startswith(writer))

    with start_proxy(registry2) as proxy:
        async def forward(request: web.Request) -> web.StreamResponse:
            return await proxy._forward(request, proxy.upstream.url + request.raw_path)

        async def a_put(request: web.Request, _info: RequestInfo) -> web.StreamResponse:
            await asyncio.wait_for(b_arrived.wait(), 60)  # B has read the index A is about to replace
            response = await forward(request)
            a_done.set()
            return response

        async def b_put(request: web.Request, _info: RequestInfo) -> web.StreamResponse:
            b_arrived.set()
            await asyncio.wait_for(a_done.wait(), 60)
            response = await forward(request)  # B's stale index replaces A's
            b_done.set()
            return response

        async def a_reads(_request: web.Request, _info: RequestInfo) -> None:
            if a_done.is_set():  # A's confirmation read comes after B's stale write
                await asyncio.wait_for(b_done.wait(), 60)

        proxy.add_fault(Fault(by("writer-a", "PUT"), a_put, times=1))
        proxy.add_fault(Fault(by("writer-b", "PUT"), b_put, times=1))
        proxy.add_fault(Fault(by("writer-a", "GET"), a_reads, times=None))
        dst = f"docker://{proxy.host}/app:v1"
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(run_mirror, "--user-agent-prefix", writer, "copy", *INSECURE, "--referrers",
                                "--referrers-artifact-type", kind, "-q", f"docker://{registry.host}/app:v1", dst)
                    for writer, kind in (("writer-a", SBOM), ("writer-b", SIGNATURE))]
            for run in runs:
                run.result()
        failed = [(r.method, r.path, r.status) for r in proxy.requests if r.status >= 500]
        puts = [(r.header("user-agent") or "").split()[0] for r in proxy.requests
                if r.method == "PUT" and r.path.endswith(tag)]

    assert failed == []  # no scripted wait timed out
    assert sorted(puts) == ["writer-a", "writer-a", "writer-b"]  # A lost the race once and wrote again
    assert by_digest(fallback_entries(registry2, "app", image.digest)) == by_digest([sbom.entry(), sig.entry()])


def test_yaml_keys_settings_and_work_units() -> None:
    """``referrers`` and ``referrers-artifact-types`` apply to their registry, refine the flags, travel
    in work units as plain data, and are checked where they are written."""
    text = f"""
a.example:
  images: {{app: []}}
  referrers: true
  referrers-artifact-types: [{SBOM}, {SBOM}]
b.example:
  images: {{app: []}}
c.example:
  images: {{app: []}}
  referrers-artifact-types: [{SIGNATURE}]
"""
    config = parse_sync_config(text, "sync.yaml")
    with pytest.raises(ConfigError, match=r"c.example.referrers-artifact-types: referrers are not copied"):
        resolve_settings(config, SyncFlags())
    settings = resolve_settings(config, SyncFlags(referrers=True, referrers_artifact_types=(STRANGE,)))
    assert settings["a.example"].referrer_filter == (SBOM,)
    assert settings["b.example"].referrer_filter == (STRANGE,)
    assert settings["c.example"].referrer_filter == (SIGNATURE,)
    plain = resolve_settings(parse_sync_config(text.split("c.example")[0], "sync.yaml"), SyncFlags())
    assert plain["b.example"].referrer_filter is None
    unit = WorkUnit("docker://a.example/app:1", "docker://d.example/app:1", settings["a.example"])
    back = WorkUnit.from_json(unit.to_json())
    assert back == unit and isinstance(back.settings, RegistrySettings)
    assert back.settings.referrers_artifact_types == (SBOM,)
    for bad, message in (("a.example:\n  images: {app: []}\n  referrers-artifact-types: [sbom]\n",
                          "a.example.referrers-artifact-types[0]: 'sbom' is not a media type"),
                         ("a.example:\n  images: {app: []}\n  referrers-artifact-types: []\n", "empty list"),
                         ("a.example:\n  images: {app: []}\n  referrers: maybe\n", "a.example.referrers")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_sync_config(bad, "sync.yaml")
