"""configs/systemd/: the service and its timer pass ``systemd-analyze verify`` (and score as well
hardened in ``systemd-analyze security``), their ExecStart is mirror's real CLI, and the service's
two command lines, run as systemd would run them (its ${STATE_DIRECTORY}, the auth.json credential,
%d and %H filled in; the example hosts swapped for the test's), sync into a registry that needs the
credential and push the run's metrics to a real Pushgateway.

Without systemd-analyze (no ``systemd`` package) the units are checked by the parser below only;
scripts/test installs it, and it runs without systemd being PID 1."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.images import list_tags, push_image
from support.mirror_cli import ROOT, run_mirror
from support.pushgateway import start_pushgateway
from support.registry import Registry

from mirror.cli.main import build_parser

SYSTEMD = ROOT / "configs" / "systemd"
SERVICE, TIMER = SYSTEMD / "mirror-sync.service", SYSTEMD / "mirror-sync.timer"
MIRROR_BIN = "/usr/local/bin/mirror"
DEST_HOST = "registry.internal.example.com"
PUSHGATEWAY = "http://pushgateway.example.com:9091"
Unit = dict[str, dict[str, list[str]]]  # section -> key -> values, in order


def _parse(path: Path) -> Unit:
    """A unit file as systemd reads it: sections, keys (repeatable), backslash continuations, comments."""
    unit: Unit = {}
    section = None
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: {line}"
            section = line[1:-1]
            assert section not in unit, f"{path.name}: [{section}] twice"
            unit[section] = {}
            continue
        key, sep, value = line.partition("=")
        assert section is not None and sep and re.fullmatch(r"[A-Za-z]+", key.strip()), f"{path.name}:{number}: {line}"
        unit[section].setdefault(key.strip(), []).append(value.strip())
    return unit


def _one(unit: Unit, section: str, key: str) -> str:
    [value] = unit[section][key]
    return value


def test_the_units_are_well_formed_and_hardened(tmp_path: Path) -> None:
    service, timer = _parse(SERVICE), _parse(TIMER)
    assert set(service) == {"Unit", "Service"} and set(timer) == {"Unit", "Timer", "Install"}
    hardening = {"DynamicUser": "yes", "StateDirectory": "mirror", "ProtectSystem": "strict", "ProtectHome": "yes",
                 "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "Type": "oneshot"}
    assert {key: _one(service, "Service", key) for key in hardening} == hardening
    assert set(_one(service, "Service", "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in service["Service"]["SystemCallFilter"]
    assert _one(timer, "Install", "WantedBy") == "timers.target" and _one(timer, "Timer", "Persistent") == "true"
    # ExecStart is mirror's own CLI, its state in the StateDirectory, as the parser reads it.
    argv = shlex.split(_one(service, "Service", "ExecStart"))
    assert argv[0] == MIRROR_BIN
    args = build_parser().parse_args(argv[1:])
    assert (args.src, args.dest, args.keep_going) == ("yaml", "docker", True)
    assert args.state == "${STATE_DIRECTORY}/state.sqlite" and args.metrics.startswith("${STATE_DIRECTORY}/")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the parser above is all this machine can check
    # systemd-analyze needs the command to exist: the test's mirror stands in for /usr/local/bin/mirror.
    units = tmp_path / "units"
    units.mkdir()
    mirror = Path(sys.executable).parent / "mirror"
    (units / SERVICE.name).write_text(SERVICE.read_text().replace(MIRROR_BIN, str(mirror)))
    shutil.copy(TIMER, units / TIMER.name)
    verify = subprocess.run([analyze, "verify", str(units / SERVICE.name), str(units / TIMER.name)],
                            capture_output=True, text=True, timeout=60)
    assert (verify.returncode, verify.stderr) == (0, ""), verify.stderr  # unknown keys are only warnings: none
    security = subprocess.run([analyze, "security", "--offline=yes", str(units / SERVICE.name)],
                              capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert exposure is not None, security.stdout + security.stderr
    assert float(exposure.group(1)) <= 2.0, security.stdout  # 0 (locked down) .. 10 (exposed); 1.4 when written


def _as_systemd_would(value: str, env: dict[str, str], credentials: Path) -> list[str]:
    """One Exec line's argv: its prefix dropped, %d and %H filled in, ${VAR}s expanded."""
    value = value.lstrip("-+@:!").replace("%d", str(credentials)).replace("%H", socket.gethostname())
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word) for word in shlex.split(value)]


def test_the_service_syncs_and_pushes_its_metrics(registry: Registry, htpasswd_registry: Registry,
                                                  tmp_path: Path) -> None:
    service = _parse(SERVICE)["Service"]
    for i in range(2):
        push_image(registry, f"team/svc{i}", "v1", seed=950 + i)
    dest = htpasswd_registry
    state, credentials, etc = tmp_path / "var-lib-mirror", tmp_path / "credentials", tmp_path / "etc-mirror"
    for directory in (state, credentials, etc):
        directory.mkdir()
    auth = base64.b64encode(f"{dest.username}:{dest.password}".encode()).decode()
    [load] = service["LoadCredential"]
    name, _, source = load.partition(":")
    assert (name, source) == ("auth.json", "/etc/mirror/auth.json")
    (credentials / name).write_text(json.dumps({"auths": {dest.host: {"auth": auth}}}))
    (etc / "sync.yaml").write_text(yaml.safe_dump({registry.host: {"tls-verify": False,
                                                                   "images": {"team/svc0": [], "team/svc1": []}}}))
    env = {"STATE_DIRECTORY": str(state)}
    for assignment in service["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%d", str(credentials))
    with start_pushgateway(tmp_path / "pushgateway") as gateway:
        start, stop = (_as_systemd_would(service[key][0], env, credentials) for key in ("ExecStart", "ExecStopPost"))
        start = [w.replace("/etc/mirror/", f"{etc}/").replace(DEST_HOST, dest.host) for w in start]
        run_mirror(*start[1:], "--dest-tls-verify=false", env={**os.environ, **env, "MIRROR_STATE": "unused"})
        assert all(list_tags(dest, f"mirror/svc{i}") == ["v1"] for i in range(2))
        assert (state / "state.sqlite").is_file() and (state / "report.jsonl").is_file()
        # "-": a failed push does not fail the run.
        assert stop[0] == "/usr/bin/curl" and service["ExecStopPost"][0].startswith("-")
        pushed = subprocess.run([a.replace(PUSHGATEWAY, gateway.url) for a in stop], capture_output=True, text=True,
                                timeout=60)
        assert pushed.returncode == 0, pushed.stderr
        samples = [s for family in text_string_to_metric_families(gateway.metrics()) for s in family.samples
                   if s.name == "mirror_sync_images"]
    by_outcome = {s.labels["outcome"]: (s.value, s.labels["job"], s.labels["instance"]) for s in samples}
    assert by_outcome["copied"] == (2, "mirror-sync", socket.gethostname())
