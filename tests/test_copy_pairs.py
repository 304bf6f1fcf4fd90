"""``mirror copy --pairs FILE|-``: a shell loop of copies in one process, between real registries,
checked with skopeo as the oracle and with the destination's access log."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from support.images import make_layer, push_image
from support.mirror_cli import assert_one_line_error, run_mirror
from support.registry import Registry

InspectRaw = Callable[..., bytes]
PLAIN = ("--src-tls-verify=false", "--dest-tls-verify=false")


def _pairs(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_mirror("copy", *PLAIN, *args, input=input, check=False)


def test_pairs_share_layers_report_each_status_and_send_a_shared_blob_once(
        registry: Registry, registry2: Registry, inspect_raw: InspectRaw, tmp_path: Path) -> None:
    base = make_layer(71, 64 * 1024)
    images = [push_image(registry, f"team/app{i}", "v1", layers=[base, make_layer(80 + i, 4096)], seed=i)
              for i in range(4)]
    pairs = tmp_path / "pairs.txt"
    lines = ["# images for the release", ""]
    lines += [f"{registry.ref(im.repo, 'v1')}   {registry2.ref(f'mirror/app{i}', 'v1')}" for i, im in enumerate(images)]
    lines.insert(4, f"{registry.ref('team/missing', 'v1')} {registry2.ref('mirror/missing', 'v1')}  # gone")
    pairs.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.jsonl"
    digests = tmp_path / "digests"
    proc = _pairs("--pairs", str(pairs), "--report", str(report), "--digestfile", str(digests))

    assert proc.returncode == 3, proc.stderr  # some failed, the others copied: as sync --keep-going
    oks = sorted(line for line in proc.stdout.splitlines() if line.startswith("ok "))
    assert oks == sorted(f"ok {registry.ref(im.repo, 'v1')} {registry2.ref(f'mirror/app{i}', 'v1')}"
                         for i, im in enumerate(images))
    failed = [line for line in proc.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and "team/missing" in failed[0] and "manifest unknown" in failed[0], proc.stderr
    records = {r["line"]: r for r in map(json.loads, report.read_text().splitlines())}
    assert sorted(records) == [3, 4, 5, 6, 7]
    assert records[5]["exit_status"] == 2 and records[5]["outcome"] == "failed"  # skopeo's status: image missing
    assert all(records[n]["exit_status"] == 0 and records[n]["outcome"] == "copied" for n in (3, 4, 6, 7))
    assert sorted(digests.read_text().splitlines()) == sorted(
        f"{im.digest} {registry2.host}/mirror/app{i}:v1" for i, im in enumerate(images))

    # Every image arrived byte for byte (skopeo reads it back), and nothing for the missing one.
    for i, im in enumerate(images):
        assert inspect_raw(registry2.ref(f"mirror/app{i}", "v1"), "--tls-verify=false") == im.manifest
    log = registry2.access_log_requests()
    assert not [r for r in log if r[0] == "PUT" and "mirror/missing" in r[1]]
    # The layer every image shares was sent once, in one process; the other repositories mounted it.
    shared = im.layers[0].digest
    # (an upload ends with the request naming its digest: the closing PUT, or a single-request POST)
    uploads = [r for r in log if r[0] in ("PUT", "POST") and "mount=" not in r[1] and r[2] == 201
               and f"digest={shared}" in unquote(r[1])]
    mounts = [r for r in log if r[0] == "POST" and f"mount={shared}" in unquote(r[1]) and r[2] == 201]
    assert len(uploads) == 1 and len(mounts) == len(images) - 1, log


def test_pairs_from_stdin_then_up_to_date_and_a_lone_missing_image_exits_2(
        registry: Registry, registry2: Registry, inspect_raw: InspectRaw) -> None:
    im = push_image(registry, "lib/tool", "1.0", seed=5)
    loop = "".join(f"{registry.ref('lib/tool', '1.0')} {registry2.ref('lib/tool', tag)}\n" for tag in ("1.0", "1"))
    first = _pairs("--pairs", "-", input=loop)
    assert first.returncode == 0, first.stderr
    assert len([line for line in first.stdout.splitlines() if line.startswith("ok ")]) == 2
    assert "2 pairs: 2 copied, 0 up to date, 0 failed" in first.stderr
    for tag in ("1.0", "1"):
        assert inspect_raw(registry2.ref("lib/tool", tag), "--tls-verify=false") == im.manifest
    again = _pairs("--pairs", "-", "--quiet", input=loop)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert "2 pairs: 0 copied, 2 up to date, 0 failed" in _pairs("--pairs", "-", input=loop).stderr
    # One pair, missing at the source: the exit status of `copy` for it (skopeo's 2), all having failed.
    lone = _pairs("--pairs", "-", input=f"{registry.ref('lib/none', '1')} {registry2.ref('lib/none', '1')}\n")
    assert lone.returncode == 2, lone.stderr


def test_a_malformed_pairs_file_is_a_one_line_error_and_copies_nothing(
        registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    im = push_image(registry, "lib/x", "v1", seed=9)
    good = f"{registry.ref(im.repo, 'v1')} {registry2.ref('lib/x', 'v1')}"
    cases = {
        f"{good}\n\n{registry.ref(im.repo, 'v1')}\n": "line 3",                                  # one name only
        f"{good}\n{good} extra\n": "line 2",                                                     # three words
        f"# ok\n{registry.ref(im.repo, 'v1')} nosuchtransport:x\n": "line 2",                     # a bad name
        f"{good}\n{registry.ref(im.repo, 'v2')} {registry2.ref('lib/x', 'v1')}\n": "already on line 1",
        f"{good} 'unterminated\n": "line 1",
        "# nothing but comments\n\n": "no 'SOURCE-IMAGE DESTINATION-IMAGE' lines",
    }
    for text, needle in cases.items():
        path = tmp_path / "pairs.txt"
        path.write_text(text)
        assert_one_line_error(_pairs("--pairs", str(path)), needle)
    assert_one_line_error(_pairs("--pairs", str(tmp_path / "absent.txt")), "absent.txt")
    path.write_text(good + "\n")
    assert_one_line_error(_pairs("--pairs", str(path), registry.ref(im.repo, "v1"), registry2.ref("lib/x", "v1")),
                          "no SOURCE-IMAGE or DESTINATION-IMAGE arguments")
    assert_one_line_error(_pairs("--pairs", str(path), "--sign-identity", "example.com/x:1"), "--sign-identity")
    assert_one_line_error(_pairs("--jobs", "2", registry.ref(im.repo, "v1"), registry2.ref("lib/x", "v2")), "--pairs")
    assert [r for r in registry2.access_log_requests() if r[1] != "/v2/"] == []  # nothing asked of the destination
