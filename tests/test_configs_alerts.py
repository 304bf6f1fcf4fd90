"""configs/prometheus/mirror-alerts.yaml: valid rules (``promtool check rules``, and the rule schema
checked here too), using only metrics and label values that real ``mirror sync --metrics`` files hold,
and firing as their comments say when ``promtool test rules`` feeds them series made from those real
files: a run stopped on an error, a run with failed images, a successful nightly, a dry run, a sync
whose last success is too old, a 429 storm and no metrics at all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.images import push_image
from support.mirror_cli import ROOT, run_mirror
from support.registry import Registry

RULES = ROOT / "configs" / "prometheus" / "mirror-alerts.yaml"
RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}
PROMQL_WORDS = {"and", "unless", "or", "time", "max_over_time", "absent"}
STEP = 300  # seconds between the test's samples (a scrape every 5 minutes)
HOURS = 72


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"} and doc["groups"], "a rule file is a list of groups"
    rules = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"], group.get("name")
        rules += group["rules"]
    return rules


def _real_runs(registry: Registry, registry2: Registry, tmp_path: Path) -> dict[str, str]:
    """--metrics files of real runs: a good one, one with a failed image (--keep-going: exit 3), one
    stopped by that image (exit 2), and a dry run."""
    push_image(registry, "alerts/app", "v1", seed=71)
    good, broken = tmp_path / "good.yaml", tmp_path / "broken.yaml"
    good.write_text(json.dumps({registry.host: {"tls-verify": False, "images": {"alerts/app": ["v1"]}}}))
    broken.write_text(json.dumps({registry.host: {"tls-verify": False, "images": {"alerts/app": ["v1", "gone"]}}}))
    runs = {"ok": ([], good, 0), "images": (["--keep-going"], broken, 3), "stopped": ([], broken, 2),
            "dry": (["--dry-run"], broken, 3)}
    out = {}
    for name, (flags, config, status) in runs.items():
        metrics = tmp_path / f"{name}.prom"
        proc = run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", "--metrics",
                          str(metrics), *flags, str(config), f"{registry2.host}/alerts", check=False)
        assert proc.returncode == status, proc.stderr
        out[name] = metrics.read_text()
    return out


def test_the_rules_are_valid_and_use_what_mirror_writes(registry: Registry, registry2: Registry,
                                                        tmp_path: Path) -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} >= {"MirrorSyncFailed", "MirrorSyncImagesFailed", "MirrorSyncStale",
                                           "MirrorRegistryRateLimited"}
    for rule in rules:
        assert set(rule) <= RULE_KEYS and {"alert", "expr", "labels", "annotations"} <= set(rule), rule["alert"]
        assert re.fullmatch(r"[0-9]+[smhdw]", rule.get("for", "0s")), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    if shutil.which("promtool") is not None:  # scripts/test installs it (Debian's prometheus package)
        check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    written: dict[str, set[tuple[str, str]]] = {}
    for text in _real_runs(registry, registry2, tmp_path).values():
        for family in text_string_to_metric_families(text):
            labels = written.setdefault(family.name, set())
            labels.update(item for sample in family.samples for item in sample.labels.items())
    for rule in rules:
        names = set(re.findall(r"\b(mirror_\w+)", rule["expr"]))
        assert names and names <= set(written), f"{rule['alert']}: {sorted(names - set(written))}"
        for name, label, value in re.findall(r"\b(mirror_\w+)\{(\w+)=\"([^\"]*)\"\}", rule["expr"]):
            assert (label, value) in written[name], f"{rule['alert']}: {name}{{{label}={value!r}}} is never written"
        bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^]]*\]|\b(ignoring|on|by|without)\s*\([^)]*\)', "", rule["expr"])
        words = set(re.findall(r"\b([a-zA-Z_]\w*)\b", bare)) - {"ignoring", "on", "by", "without"}
        assert words - names <= PROMQL_WORDS, words - names - PROMQL_WORDS


def _series(samples: str, instance: str, timestamps: list[float]) -> list[dict[str, str]]:
    """promtool input series: every sample of a real --metrics file under job/instance labels, held
    for HOURS; the last-run timestamp follows ``timestamps`` (one value per STEP)."""
    out = []
    for family in text_string_to_metric_families(samples):
        for sample in family.samples:
            labels = {**sample.labels, "job": "mirror-sync", "instance": instance}
            selector = sample.name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
            if sample.name == "mirror_sync_last_run_timestamp_seconds":
                values = " ".join(f"{t:g}" for t in timestamps)
            else:
                values = f"{sample.value:g}x{len(timestamps) - 1}"
            out.append({"series": selector, "values": values})
    return out


def _alert(name: str, hour: int, *fired: dict[str, str], severity: str) -> dict[str, Any]:
    return {"eval_time": f"{hour}h", "alertname": name,
            "exp_alerts": [{"exp_labels": {"severity": severity, "job": "mirror-sync", **labels}} for labels in fired]}


def test_the_alerts_fire_on_series_made_of_real_runs(registry: Registry, registry2: Registry, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "scripts/test installs promtool (Debian's prometheus package)"
    runs = _real_runs(registry, registry2, tmp_path)
    points = HOURS * 3600 // STEP + 1
    nightly = [float(i * STEP // 86400 * 86400) for i in range(points)]  # a run every midnight
    once = [0.0] * points  # one run at 0h, none since
    series = (_series(runs["ok"], "ok", nightly) + _series(runs["images"], "images", nightly)
              + _series(runs["stopped"], "stopped", nightly) + _series(runs["dry"], "dry", nightly)
              + _series(runs["ok"], "stale", once))
    throttled = {"registry": "quay.io"}
    series.append({"series": 'mirror_registry_rate_limited_responses{instance="ok",job="mirror-sync",'
                             'registry="quay.io"}', "values": f"120x{points - 1}"})
    series.append({"series": 'mirror_registry_rate_limited_responses{instance="ok",job="mirror-sync",'
                             'registry="ghcr.io"}', "values": f"3x{points - 1}"})
    tests = [
        {"interval": f"{STEP}s", "input_series": series, "alert_rule_test": [
            _alert("MirrorSyncFailed", 48, {"instance": "stopped"}, severity="critical"),
            _alert("MirrorSyncImagesFailed", 48, {"instance": "images", "outcome": "failed"}, severity="warning"),
            _alert("MirrorSyncStale", 25, severity="critical"),  # 25 hours after its only run: not yet
            _alert("MirrorSyncStale", 27, {"instance": "stale"}, severity="critical"),
            _alert("MirrorSyncStale", 71, {"instance": "stale"}, severity="critical"),
            _alert("MirrorRegistryRateLimited", 30, {"instance": "ok", **throttled}, severity="warning"),
            _alert("MirrorSyncMetricsMissing", 2, severity="warning"),
        ]},
        {"interval": "1m", "input_series": [], "alert_rule_test": [
            _alert("MirrorSyncMetricsMissing", 0, severity="warning"),  # `for: 1h`
            {"eval_time": "61m", "alertname": "MirrorSyncMetricsMissing",
             "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
        ]},
    ]
    # Annotations are templates promtool check rules validates; here only which alerts fire counts.
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            del rule["annotations"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    test_file = tmp_path / "mirror-alerts-test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "SUCCESS" in result.stdout
