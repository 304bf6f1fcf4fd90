"""Destination naming follows skopeo sync exactly (pure unit tests)."""

from __future__ import annotations

from mirror.core.reference import manifest_ref
from mirror.plan.naming import Naming, docker_destination

DIGEST = "sha256:" + "ab" * 32


def test_basename_scoped_suffix_and_digest() -> None:
    plain = Naming("registry.local:5000/mirror")
    assert str(docker_destination("quay.io", "coreos/etcd", manifest_ref("v3"), plain)) == \
        "registry.local:5000/mirror/etcd:v3"
    scoped = Naming("registry.local:5000/mirror", scoped=True)
    assert str(docker_destination("quay.io", "coreos/etcd", manifest_ref("v3"), scoped)) == \
        "registry.local:5000/mirror/quay.io/coreos/etcd:v3"
    suffixed = Naming("registry.local:5000", append_suffix="-mirror")
    assert str(docker_destination("docker.io", "library/busybox", manifest_ref("1.36"), suffixed)) == \
        "registry.local:5000/busybox:1.36-mirror"
    by_digest = docker_destination("quay.io", "coreos/etcd", manifest_ref(DIGEST), plain)
    assert by_digest.tag is None and str(by_digest.digest) == DIGEST
    mapped = docker_destination("quay.io", "coreos/etcd", manifest_ref("v3"), plain, mapped="infra/etcd-mirror")
    assert str(mapped) == "registry.local:5000/mirror/infra/etcd-mirror:v3"
