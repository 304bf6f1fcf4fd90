"""Selection rules end to end, through the real CLI against real registries: ``--keep-latest`` with
``--prune`` keeps a rolling window and never drops a kept image's signatures; tag regexes on the
command line; ``keep-latest … by: created`` and ``newer-than`` from a YAML; and a local, a sharded and
a queued run (``mirror worker``) of the same YAML select the same tags."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.images import list_tags, push_image
from support.mirror_cli import ROOT, assert_one_line_error, run_mirror
from support.postgres import Postgres
from support.registry import Registry
from support.workers import mirror_env, run_workers

TLS = ("--src-tls-verify=false", "--dest-tls-verify=false")


def _sig(digest: str, suffix: str = ".sig") -> str:
    return f"sha256-{digest.removeprefix('sha256:')}{suffix}"


def test_keep_latest_prunes_a_rolling_window_and_keeps_signatures(registry: Registry, registry2: Registry) -> None:
    src, dst = registry, registry2
    images = {tag: push_image(src, "app", tag, seed=i, layer_count=1) for i, tag in
              enumerate(["1.0", "1.1", "2.0", "2.1", "latest", "3.0-rc1"], start=1)}
    for seed, subject in ((50, "2.1"), (51, "2.0"), (52, "1.0")):  # cosign-style signatures at the source
        push_image(src, "app", _sig(images[subject].digest), seed=seed, layer_count=1)
    args = ("sync", "--src", "docker", "--dest", "docker", *TLS, "--keep-latest", "2", "--exclude-tag-regex=-rc",
            "--digest-tags", f"{src.host}/app", f"{dst.host}/m")
    run_mirror(*args)
    v20, v21 = images["2.0"].digest, images["2.1"].digest
    assert sorted(list_tags(dst, "m/app")) == sorted(["2.0", "2.1", _sig(v20), _sig(v21)])
    # At the destination only: an attestation and a referrers fallback tag of 2.1, and a tag of its own.
    push_image(dst, "m/app", _sig(v21, ".att"), seed=60, layer_count=1)
    push_image(dst, "m/app", _sig(v21, ""), seed=61, layer_count=1)
    push_image(dst, "m/app", "local-only", seed=62, layer_count=1)
    push_image(src, "app", "2.2", seed=7, layer_count=1)  # a new release: 2.0 leaves the window

    report = run_mirror(*args[:-2], "--prune=report", *args[-2:])
    would = sorted(line for line in report.stdout.splitlines() if line.startswith("would prune"))
    expected = sorted(f"{dst.host}/m/app:{tag}" for tag in ("2.0", _sig(v20), "local-only"))
    assert would == [f"would prune {name}" for name in expected]
    deleted = run_mirror(*args[:-2], "--prune=delete", *args[-2:])
    assert sorted(line for line in deleted.stdout.splitlines() if line.startswith("pruned")) == [
        f"pruned {name}" for name in expected]
    # 2.0 and its signature went together; 2.1's signatures stay (copied or not), whatever the source has.
    assert sorted(list_tags(dst, "m/app")) == sorted(["2.1", "2.2", _sig(v21), _sig(v21, ".att"), _sig(v21, "")])


def test_tag_regex_flags_and_their_errors(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    for i, tag in enumerate(["1.0", "1.1", "2.0", "2.0-debug", "latest"]):
        push_image(registry, "app", tag, seed=i, layer_count=1)
    base = ("sync", "--src", "docker", "--dest", "docker", *TLS, "--dry-run")
    out = run_mirror(*base, "--include-tag-regex", r"^1\.", "--include-tag-regex", r"^2\.0", "--exclude-tag-regex",
                     "debug$", f"{registry.host}/app", f"{registry2.host}/m")
    # The dry run's listing is skopeo's (stderr): msg="Would have copied image ref 1/3" from="docker://…" to="…".
    would = re.findall(r'msg="Would have copied image ref \d+/\d+" from="docker://([^"]+)"', out.stderr)
    assert sorted(would) == [f"{registry.host}/app:{tag}" for tag in ("1.0", "1.1", "2.0")]
    config = tmp_path / "sync.yaml"
    config.write_text(json.dumps({registry.host: {"images": {"app": []}}}))
    bad = [
        ((*base, "--include-tag-regex", "(?=x)", f"{registry.host}/app", "d"),
         "--include-tag-regex: invalid regular expression '(?=x)'"),
        ((*base[:2], "yaml", *base[3:], "--exclude-tag-regex", "x", str(config), "d"),
         "--include-tag-regex and --exclude-tag-regex apply to --src docker"),
        ((*base, "--keep-latest-by", "created", f"{registry.host}/app", "d"), "--keep-latest-by needs --keep-latest"),
        ((*base, "--keep-latest", "2", f"{registry.host}/app:1.0", "d"), "need a repository, not one tag"),
        ((*base, "--keep-latest", "0", f"{registry.host}/app", "d"), "argument --keep-latest: invalid count '0'"),
        ((*base, "--newer-than", "3 days", f"{registry.host}/app", "d"), "argument --newer-than: invalid age"),
    ]
    for argv, needle in bad:
        assert_one_line_error(run_mirror(*argv, check=False), needle)


def _ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_local_sharded_and_queued_runs_select_the_same_tags(
        registry: Registry, registry2: Registry, tmp_path: Path, postgres: Postgres, queue_url: str) -> None:
    src, dst = registry, registry2
    ages = {"v1": 300, "v2": 100, "v3": 50, "v4": 10, "v5": 2}
    for repo in ("a", "b", "c", "d"):
        for i, (tag, days) in enumerate(ages.items()):
            # Dates run against version order in c: v1 is its newest image.
            push_image(src, repo, tag, seed=100 * ord(repo) + i, layer_count=1,
                       created=_ago(days if repo != "c" else 301 - days))
    config = tmp_path / "sync.yaml"
    config.write_text(f"""
{src.host}:
  tls-verify: false
  keep-latest: {{count: 2, by: created}}
  newer-than: 60d
  images: {{a: [], b: [], c: [], d: []}}
  images-keep-latest:
    b: 1
    d: 4
  images-newer-than:
    c: 1000d
    d: 400d
""")
    expected = {"a": ["v4", "v5"], "b": ["v5"], "c": ["v1", "v2"], "d": ["v2", "v3", "v4", "v5"]}
    sync = ("--log-format", "json", "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
            str(config))
    run_mirror(*sync, f"{dst.host}/local")
    for k in range(2):
        run_mirror(*sync, f"{dst.host}/shard", "--shard", f"{k}/2")
    with run_workers(postgres, queue_url, 1, tmp_path / "workers", "--dest-tls-verify=false"):
        queued = subprocess.run([sys.executable, "-m", "mirror", *sync, f"{dst.host}/queue", "--queue", queue_url],
                                capture_output=True, text=True, env=mirror_env(), cwd=ROOT, timeout=300)
        assert queued.returncode == 0, queued.stderr[-3000:]
    for namespace in ("local", "shard", "queue"):
        got = {repo: sorted(list_tags(dst, f"{namespace}/{repo}")) for repo in expected}
        assert got == expected, namespace
