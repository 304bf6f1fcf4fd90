"""`mirror inspect` and `list-tags` give what skopeo gives on the same images."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

from support.images import SeededImages, put_tags
from support.mirror_cli import assert_one_line_error, run_mirror
from support.proxy import RegistryProxy
from support.registry import Registry

Skopeo = Callable[..., subprocess.CompletedProcess[str]]
PLAIN = "--tls-verify=false"


def _refs(seeded: SeededImages) -> list[str]:
    reg = seeded.registry
    return [reg.ref(seeded.alpine.repo, "3.19"), reg.ref(seeded.docker_image.repo, "v1"),
            reg.ref(seeded.oci_index.repo, "latest"), reg.ref(seeded.docker_list.repo, "latest"),
            reg.ref(seeded.alpine.repo, seeded.alpine.digest)]


def test_inspect_matches_skopeo(seeded_images: SeededImages, skopeo: Skopeo) -> None:
    refs = _refs(seeded_images)
    cases = [(ref, "amd64") for ref in refs] + [(refs[2], "arm64"), (refs[3], "arm64")]
    for ref, arch in cases:
        flags = ["--override-arch", arch, "--override-os", "linux"]
        ours = json.loads(run_mirror(*flags, "inspect", PLAIN, ref).stdout)
        theirs = json.loads(skopeo(*flags, "inspect", PLAIN, ref).stdout)
        # Debian's skopeo 1.9 predates LayersData (skopeo >= 1.10): check it against Layers instead.
        layers_data = ours.pop("LayersData")
        assert [d["Digest"] for d in layers_data] == ours["Layers"]
        assert all(d["Size"] > 0 and d["MIMEType"].endswith("gzip") for d in layers_data)
        theirs.pop("LayersData", None)
        if "Variant" not in theirs:  # Variant is also newer than skopeo 1.9
            ours.pop("Variant", None)
        assert ours == theirs, ref
        ours_cfg = json.loads(run_mirror("inspect", *flags, PLAIN, "--config", ref).stdout)
        theirs_cfg = json.loads(skopeo(*flags, "inspect", PLAIN, "--config", ref).stdout)
        assert ours_cfg == theirs_cfg, ref
        ours_raw_cfg = run_mirror("inspect", *flags, PLAIN, "--config", "--raw", ref).stdout
        assert ours_raw_cfg == skopeo(*flags, "inspect", PLAIN, "--config", "--raw", ref).stdout
        assert run_mirror("inspect", PLAIN, "--raw", ref).stdout == skopeo("inspect", PLAIN, "--raw", ref).stdout
    variant = json.loads(run_mirror("--override-arch", "arm64", "inspect", PLAIN,
                                    _refs(seeded_images)[2]).stdout)
    assert (variant["Architecture"], variant.get("Variant")) == ("arm64", "v8")


def test_inspect_format_templates(seeded_images: SeededImages, skopeo: Skopeo) -> None:
    ref = _refs(seeded_images)[0]
    for template in ("Name: {{.Name}} Digest: {{.Digest}}", "{{range .RepoTags}}{{.}},{{end}}",
                     "{{.Architecture}}/{{.Os}} {{len .Layers}} {{.Labels}}"):
        ours = run_mirror("inspect", PLAIN, "--format", template, ref).stdout
        assert ours == skopeo("inspect", PLAIN, "--format", template, ref).stdout, template
    # skopeo 1.9 has no `json` template function (newer skopeo does): compare with the JSON output.
    full = json.loads(run_mirror("inspect", PLAIN, ref).stdout)
    labels = run_mirror("inspect", PLAIN, "--format", "{{json .Labels}}", ref).stdout
    assert json.loads(labels) == full["Labels"] and labels == json.dumps(full["Labels"], separators=(",", ":")) + "\n"
    expected = f"Name: {seeded_images.registry.host}/library/alpine Digest: {seeded_images.alpine.digest}\n"
    assert run_mirror("inspect", PLAIN, "-f", "Name: {{.Name}} Digest: {{.Digest}}", ref).stdout == expected
    no_tags = json.loads(run_mirror("inspect", PLAIN, "--no-tags", ref).stdout)
    assert no_tags["RepoTags"] == []
    bad = run_mirror("inspect", PLAIN, "--format", "{{.Name", ref, check=False)
    assert_one_line_error(bad, "template")


def test_list_tags_follows_every_page(registry: Registry, skopeo: Skopeo) -> None:
    tags = put_tags(registry, "many/tags", 45)
    with RegistryProxy(registry, tags_page_size=10) as proxy:
        out = json.loads(run_mirror("list-tags", PLAIN, proxy.ref("many/tags").rsplit(":", 1)[0]).stdout)
        pages = [r for r in proxy.requests if "/tags/list" in r.path]
    assert out["Tags"] == sorted(tags)
    assert out["Repository"] == f"{proxy.host}/many/tags"
    assert len(pages) >= 5
    direct = json.loads(skopeo("list-tags", PLAIN, f"docker://{registry.host}/many/tags").stdout)
    assert sorted(direct["Tags"]) == sorted(out["Tags"])


def test_inspect_errors_are_one_line(registry: Registry) -> None:
    cases = [
        (["inspect", PLAIN, f"docker://{registry.host}/missing/repo:v1"], "manifest", 2),
        (["inspect", "docker:alpine"], "does not start with //", 1),
        (["inspect", "alpine"], "transport", 1),
        (["inspect", "nope://alpine"], "transport", 1),
        (["inspect", f"docker://{registry.host}/a:b@sha256:{'0' * 64}"], "tag and digest", 1),
        (["inspect", "docker://UPPER/Case"], "invalid reference", 1),
        (["list-tags", PLAIN, f"docker://{registry.host}/a:v1"], "tag", 1),
        (["copy", "docker://a/b"], "", 1),
        (["inspect", "--retry-times", "x", "docker://a/b"], "invalid int", 1),
    ]
    for args, needle, code in cases:
        proc = run_mirror(*args, check=False)
        assert_one_line_error(proc, needle)
        assert proc.returncode == code, (args, proc.stderr)
