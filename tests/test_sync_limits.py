"""Per-registry limits seen end to end: `mirror sync` with a YAML `rate-limit`, and a throttling registry."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from support.images import push_image
from support.mirror_cli import run_mirror
from support.proxy import Fault, RegistryProxy
from support.registry import Registry
from test_ratelimit import Recorder, TooManyRequests, max_in_window, registry_arrivals, wait_for_arrivals

UA = "mirror-limits-test"


def test_yaml_rate_limit_is_held_at_the_source(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    for t in range(6):
        push_image(registry, "limited/app", f"v{t}", seed=400 + t)
    rps = 10
    config = {registry.host: {"tls-verify": False, "images": {"limited/app": []},
                              "rate-limit": {"requests-per-second": rps, "burst": 1}}}
    path = tmp_path / "sync.yaml"
    path.write_text(yaml.safe_dump(config))
    run_mirror("--user-agent-prefix", UA, "sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
               str(path), f"{registry2.host}/m")
    ua = f"{UA} mirror/0.1.0"
    arrivals = [t for t, _m, _u in registry_arrivals(registry, ua)]
    assert len(arrivals) >= 6 * 3  # tags list + per image: manifest and blob reads
    assert max_in_window(arrivals, 1.0) <= rps + 1, max_in_window(arrivals, 1.0)
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) / rps * 0.95
    assert len(wait_for_arrivals(registry, ua, len(arrivals))) == len(arrivals)


def test_429_pauses_every_worker_and_the_sync_completes(registry: Registry, registry2: Registry,
                                                        tmp_path: Path) -> None:
    for t in range(8):
        push_image(registry, "busy/app", f"v{t}", seed=500 + t)
    throttle, recorder = TooManyRequests("2"), Recorder()
    faults = [Fault(lambda _info: True, recorder, times=None),
              Fault(Fault.match(kind="blob", method="GET"), throttle, times=3)]
    with RegistryProxy(registry, faults=faults) as proxy:
        config = {proxy.host: {"tls-verify": False, "images": {"busy/app": []}}}
        path = tmp_path / "sync.yaml"
        path.write_text(yaml.safe_dump(config))
        report = tmp_path / "report.jsonl"
        out = run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--jobs", "8",
                         "--report", str(report), str(path), f"{registry2.host}/m")
        forwarded = [r for r in proxy.requests if r.status != 429]
    assert f"registry {proxy.host}: 3 rate-limited responses" in out.stderr, out.stderr
    assert len(throttle.sent) == 3
    outcomes = [json.loads(line)["outcome"] for line in report.read_text().splitlines()]
    assert outcomes == ["copied"] * 8
    assert forwarded, "nothing reached the registry"
    # Every worker waits out the cooldown: apart from requests already in flight when the 429s came
    # (they arrive within moments), nothing reaches the registry until Retry-After has passed.
    last = max(throttle.sent)
    quiet = [t - last for t, _m, _p in recorder.arrivals if last + 0.5 < t < last + 1.9]
    assert quiet == [], quiet
    assert any(t >= last + 1.9 for t, _m, _p in recorder.arrivals)
