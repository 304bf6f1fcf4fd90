"""Start-up: each command imports only what it uses (issue #12), read from ``python -X importtime``.

Timings belong to ``scripts/bench``; these tests pin the import lists that make them, which do not depend
on the machine's load: ``--version`` and ``--help`` import neither the HTTP client nor logging, signing or
YAML libraries; a ``mirror copy`` of an image already at the destination imports no logging, signing,
compression or queue library; ``--debug`` and ``--log-format json`` still log.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from support.images import push_image
from support.mirror_cli import ROOT, run_mirror
from support.registry import Registry

from mirror import log
from mirror.http.tls import TLSOptions, ssl_context
from mirror.transports.catalog import LOCAL, local_transports

#: Never imported to print the version or a help text.
NOT_FOR_HELP = ("aiohttp", "anyio", "structlog", "rich", "cryptography", "nacl", "yaml", "zstandard", "re2",
                "mirror.runtime", "mirror.engine", "mirror.signing", "mirror.config.schema", "mirror.config.filters",
                "pathlib")
#: Never imported by a copy that finds the image already there (no --debug, no signing, no zstd layer).
NOT_FOR_COPY = ("structlog", "rich", "cryptography", "nacl", "zstandard", "isal", "procrastinate", "psycopg", "yaml",
                "prometheus_client", "croniter", "mirror.cli.gotemplate", "mirror.distributed",
                "mirror.transports.local.archive", "mirror.transports.local.daemon", "mirror.transports.local.oci",
                "mirror.transports.local.storage", "tarfile")
COMMANDS = ("inspect", "list-tags", "copy", "sync", "delete", "manifest-digest", "standalone-sign",
            "standalone-verify", "generate-sigstore-key", "login", "logout", "worker")


def _imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _offenders(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


def _run_importtime(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mirror", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    return proc, _imported(proc.stderr)


@pytest.mark.parametrize("args", [("--version",), ("-v",), ("--help",), *[(c, "--help") for c in COMMANDS]],
                         ids=lambda a: " ".join(a))
def test_version_and_help_import_only_the_parser(args: tuple[str, ...]) -> None:
    proc, modules = _run_importtime(*args)
    assert proc.returncode == 0, proc.stderr
    if args[0] in ("--version", "-v"):
        assert proc.stdout.startswith("mirror version ")
        assert "argparse" not in modules and "mirror.cli.main" not in modules  # answered before the parser
    else:
        command = args[0] if args[0] != "--help" else ""
        assert proc.stdout.startswith(f"usage: mirror {command}".rstrip())
    if args[0] != "sync":  # sync's --keep-latest-by choices come from mirror.config.retention (msgspec, typing)
        assert "typing" not in modules and "dataclasses" not in modules
    assert "mirror.cli.start" in modules  # the list is real
    assert _offenders(modules, NOT_FOR_HELP) == []


def test_help_builds_only_the_command_asked_for() -> None:
    """``mirror copy --help`` adds copy's flags, and never the flag helpers only sync uses."""
    _, copy_modules = _run_importtime("copy", "--help")
    _, sync_modules = _run_importtime("sync", "--help")
    assert "mirror.config.retention" in sync_modules  # sync's --keep-latest-by choices
    assert "mirror.config.retention" not in copy_modules


def _present_image(registry: Registry) -> tuple[str, str, str]:
    pushed = push_image(registry, "start/src", "v1")
    push_image(registry, "start/dst", "v1")
    return registry.ref("start/src", "v1"), registry.ref("start/dst", "v1"), pushed.digest


def test_copy_of_a_present_image_imports_no_logging_or_signing(registry: Registry, tmp_path: Path) -> None:
    src, dst, digest = _present_image(registry)
    empty = tmp_path / "registries.d"
    empty.mkdir()
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = run_mirror("--registries.d", str(empty), "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                      src, dst, env=env)
    assert f"Image is up to date at the destination ({digest})" in proc.stdout
    modules = _imported(proc.stderr)
    assert "aiohttp" in modules and "mirror.engine.sync" in modules  # the list is real: it did copy
    assert _offenders(modules, NOT_FOR_COPY) == []
    assert [line for line in proc.stderr.splitlines() if not line.startswith("import time:")] == []


#: Never imported by a plain ``mirror sync`` (no --metrics, --listen, --schedule or --queue).
NOT_FOR_SYNC = ("prometheus_client", "croniter", "procrastinate", "psycopg", "difflib", "http.server", "structlog",
                "re2", "mirror.distributed", "mirror.cli.gotemplate")


def test_a_plain_sync_imports_no_metrics_schedule_or_queue_library(registry: Registry, tmp_path: Path) -> None:
    push_image(registry, "start/sync", "v1")
    config = tmp_path / "sync.yaml"
    config.write_text(f"{registry.host}:\n  tls-verify: false\n  images:\n    start/sync: [v1]\n")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = run_mirror("sync", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(config),
                      f"{registry.host}/copied", env=env)
    modules = _imported(proc.stderr)
    assert "yaml" in modules and "mirror.engine.sync" in modules  # the list is real: it did sync
    assert _offenders(modules, NOT_FOR_SYNC) == []
    registry.wait_for_access_log(lambda entries: ("PUT", "/v2/copied/sync/manifests/v1", 201) in
                                 [entry[:3] for entry in entries])


def test_debug_and_json_logging_still_log(registry: Registry) -> None:
    src, dst, digest = _present_image(registry)
    tls = ("--src-tls-verify=false", "--dest-tls-verify=false")
    debug = run_mirror("--debug", "copy", *tls, src, dst)
    assert "http_request" in debug.stderr and "/v2/start/dst/manifests/v1" in debug.stderr
    events = run_mirror("--log-format", "json", "copy", *tls, src, dst).stderr.splitlines()
    records = [json.loads(line) for line in events if line.startswith("{")]
    synced = [r for r in records if r["event"] == "image_synced"]
    assert len(synced) == 1 and synced[0]["outcome"] == "skipped" and synced[0]["digest"] == digest
    assert synced[0]["level"] == "info" and all(r["level"] != "debug" for r in records)  # INFO, not DEBUG


def test_log_facade_binds_fields_and_defers_to_structlog() -> None:
    """Unconfigured, every event reaches structlog as configured (here a capture); bound fields are
    added, fields given to the call win, and the binding ends with its block."""
    logger = log.get_logger("mirror.test")
    with capture_logs() as logs:
        with log.bound(src="a", dst="b"):
            logger.warning("inner", dst="explicit")
            with log.bound(attempt=2):
                logger.debug("nested")
        logger.info("outer")
    assert logs == [
        {"event": "inner", "log_level": "warning", "dst": "explicit", "src": "a"},
        {"event": "nested", "log_level": "debug", "src": "a", "dst": "b", "attempt": 2},
        {"event": "outer", "log_level": "info"},
    ]


def test_configured_level_drops_events_without_importing_structlog() -> None:
    code = """if True:
        import sys
        from mirror import log
        from mirror.cli.logsetup import configure_logging
        configure_logging(debug=False, fmt="json")
        log.get_logger("mirror.t").debug("dropped", password="x")
        print("structlog" in sys.modules, flush=True)
        log.get_logger("mirror.t").info("kept", password="hunter2")
        print("structlog" in sys.modules, flush=True)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.stdout.split() == ["False", "True"]
    (line,) = proc.stderr.splitlines()
    record = json.loads(line)
    assert record["event"] == "kept" and record["password"] == "<redacted>"  # still redacted
    assert "dropped" not in proc.stderr and "hunter2" not in proc.stderr


def test_aiohttp_default_contexts_load_no_ca_file_and_still_verify() -> None:
    """aiohttp's import-time default contexts (unused by mirror) skip the CA bundle but keep verification
    on (fail closed); the variable that made them skip it is restored."""
    code = """if True:
        import os, ssl
        os.environ["SSL_CERT_FILE"] = "/mirror-test/ca.pem"
        import mirror.http.aiohttplib
        from aiohttp import connector
        ctx = connector._SSL_CONTEXT_VERIFIED
        print(os.environ["SSL_CERT_FILE"], ctx.verify_mode == ssl.CERT_REQUIRED, ctx.check_hostname,
              ctx.cert_store_stats()["x509"])
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.stdout.split() == ["/mirror-test/ca.pem", "True", "True", "0"]


def test_unverified_context_loads_no_ca(tmp_path: Path) -> None:
    ctx = ssl_context("registry.test:5000", TLSOptions(verify=False), (tmp_path,))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.cert_store_stats()["x509"] == 0


def test_local_transport_names_match_their_classes() -> None:
    """The catalog names the local transports without importing them: the names must be the classes'."""
    transports = local_transports()
    assert sorted(transports) == sorted(LOCAL)
    assert {name: transports[name].name for name in LOCAL} == {name: name for name in LOCAL}


def test_the_event_loop_runs_with_the_collector_on() -> None:
    """start.main turns the collector off for the imports; every command's loop (run_loop) turns it on,
    so a long sync still collects reference cycles."""
    import gc

    from mirror.cli.start import run_loop

    async def collector_on() -> bool:
        return gc.isenabled()

    gc.disable()
    try:
        assert run_loop(collector_on) is True
    finally:
        gc.enable()
        gc.unfreeze()
