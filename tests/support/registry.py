"""Run a real CNCF distribution registry (``/usr/bin/docker-registry``) as a subprocess.

The registry is configured from a JSON document (YAML is a superset of JSON), binds 127.0.0.1 on a
free port and writes its JSON log (stderr) and Apache-combined access log (stdout) to one file that
:meth:`Registry.access_log_requests` parses.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bcrypt
import trustme

from .tokenserver import TokenServer

REGISTRY_BIN = "/usr/bin/docker-registry"
START_TIMEOUT = 10.0

AuthKind = Literal["none", "htpasswd", "token"]
AccessLogEntry = tuple[str, str, int]

# 127.0.0.1 - - [28/Nov/2026:00:37:40 +0000] "GET /v2/foo/manifests/x HTTP/1.1" 404 91 "" "curl/7.88.1"
_ACCESS_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) ')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.cache
def session_ca() -> trustme.CA:
    """One throw-away certificate authority per test process."""
    return trustme.CA()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)  # polling interval of a condition with a deadline, not synchronisation


@dataclass
class Registry:
    """A running registry and everything a test needs to talk to it."""

    host: str
    url: str
    storage: Path
    log_path: Path
    config_path: Path
    tls: bool
    cert_dir: Path | None
    ca_pem: Path | None
    username: str | None
    password: str | None
    auth: AuthKind
    token_server: TokenServer | None = None
    pid: int | None = None

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def alt_host(self) -> str:
        """The same registry under the host name ``localhost`` (a "different host" for clients)."""
        return f"localhost:{self.port}"

    def ref(self, repo: str, tag_or_digest: str = "latest") -> str:
        """``docker://host/repo:tag`` or ``docker://host/repo@sha256:...``."""
        sep = "@" if ":" in tag_or_digest else ":"
        return f"docker://{self.host}/{repo}{sep}{tag_or_digest}"

    def skopeo_args(self, prefix: str = "--") -> list[str]:
        """skopeo flags for this registry; ``prefix`` is ``"--"``, ``"--src-"`` or ``"--dest-"``."""
        args: list[str] = []
        if self.tls:
            assert self.cert_dir is not None
            args.append(f"{prefix}cert-dir={self.cert_dir}")
        else:
            args.append(f"{prefix}tls-verify=false")
        if self.username is not None:
            args.append(f"{prefix}creds={self.username}:{self.password}")
        else:
            args.append(f"{prefix}no-creds")
        return args

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting this registry's CA (``None`` for plain HTTP)."""
        if not self.tls:
            return None
        assert self.ca_pem is not None
        return ssl.create_default_context(cafile=str(self.ca_pem))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def access_log_requests(self) -> list[AccessLogEntry]:
        """``(method, uri, status)`` of every request the registry logged so far, in order."""
        out: list[AccessLogEntry] = []
        for line in self.log_text().splitlines():
            m = _ACCESS_RE.match(line)
            if m:
                out.append((m.group(1), m.group(2), int(m.group(3))))
        return out

    def wait_for_access_log(
        self, predicate: Callable[[list[AccessLogEntry]], bool], timeout: float = 5.0
    ) -> list[AccessLogEntry]:
        """Poll the access log until ``predicate(entries)`` holds (the log line lands after the response)."""
        entries: list[AccessLogEntry] = []

        def check() -> bool:
            nonlocal entries
            entries = self.access_log_requests()
            return predicate(entries)

        try:
            wait_until(check, timeout, f"access log condition on {self.host}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; last entries: {entries[-15:]}") from None
        return entries


def _htpasswd_line(user: str, password: str) -> str:
    # cost 4 (the minimum): the registry checks the hash on every request.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{user}:{hashed}\n"


def _config(
    workdir: Path, addr: str, *, tls_files: tuple[Path, Path] | None, delete: bool, auth: dict[str, object]
) -> dict[str, object]:
    http: dict[str, object] = {"addr": addr, "secret": "mirror-testbed-secret", "relativeurls": False}
    if tls_files is not None:
        http["tls"] = {"certificate": str(tls_files[0]), "key": str(tls_files[1])}
    cfg: dict[str, object] = {
        "version": 0.1,
        "log": {
            "level": "info",
            "formatter": "json",
            "accesslog": {"disabled": False},
            "fields": {"service": "registry"},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": delete},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if auth:
        cfg["auth"] = auth
    return cfg


def _probe(url: str, ctx: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/", timeout=1, context=ctx) as resp:
            return int(resp.status) == 200
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (OSError, ssl.SSLError):
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate ``proc`` (by its PID), wait, and kill it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _spawn(
    config_path: Path, log_path: Path, url: str, ctx: ssl.SSLContext | None
) -> subprocess.Popen[bytes]:
    """Start the registry; return once ``/v2/`` answers or the process has exited."""
    workdir = config_path.parent
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)},
        )
    try:
        wait_until(lambda: proc.poll() is not None or _probe(url, ctx), START_TIMEOUT, f"registry {url}")
    except TimeoutError:
        stop_process(proc)
        raise RuntimeError(
            f"registry at {url} did not answer /v2/ within {START_TIMEOUT}s; log:\n{_tail(log_path)}"
        ) from None
    return proc


@contextmanager
def start_registry(
    workdir: Path,
    *,
    tls: bool = False,
    htpasswd: tuple[str, str] | None = None,
    token: TokenServer | None = None,
    delete: bool = True,
) -> Iterator[Registry]:
    """Start a registry under ``workdir``; yields a :class:`Registry` once ``/v2/`` answers."""
    if htpasswd is not None and token is not None:
        raise ValueError("choose htpasswd or token auth, not both")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "storage").mkdir(exist_ok=True)

    tls_files: tuple[Path, Path] | None = None
    cert_dir: Path | None = None
    ca_pem: Path | None = None
    if tls:
        ca = session_ca()
        cert_dir = workdir / "certs"
        cert_dir.mkdir(exist_ok=True)
        ca_pem = cert_dir / "ca.crt"
        ca.cert_pem.write_to_path(str(ca_pem))
        server = ca.issue_cert("127.0.0.1", "localhost")
        tls_files = (workdir / "server.crt", workdir / "server.key")
        server.cert_chain_pems[0].write_to_path(str(tls_files[0]))
        for extra_pem in server.cert_chain_pems[1:]:
            extra_pem.write_to_path(str(tls_files[0]), append=True)
        server.private_key_pem.write_to_path(str(tls_files[1]))

    auth_cfg: dict[str, object] = {}
    auth_kind: AuthKind = "none"
    username: str | None = None
    password: str | None = None
    if htpasswd is not None:
        username, password = htpasswd
        pw_file = workdir / "htpasswd"
        pw_file.write_text(_htpasswd_line(username, password))
        auth_cfg = {"htpasswd": {"realm": "mirror-testbed", "path": str(pw_file)}}
        auth_kind = "htpasswd"
    elif token is not None:
        auth_cfg = {
            "token": {
                "realm": token.url,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.cert_path),
            }
        }
        auth_kind = "token"
        username, password = token.default_credentials()

    ctx = ssl.create_default_context(cafile=str(ca_pem)) if ca_pem is not None else None
    scheme = "https" if tls else "http"
    log_path = workdir / "registry.log"
    config_path = workdir / "config.yml"

    proc: subprocess.Popen[bytes] | None = None
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind: retry on a new one
        host = f"127.0.0.1:{free_port()}"
        url = f"{scheme}://{host}"
        cfg = _config(workdir, host, tls_files=tls_files, delete=delete, auth=auth_cfg)
        config_path.write_text(json.dumps(cfg, indent=2))
        proc = _spawn(config_path, log_path, url, ctx)
        if proc.poll() is None:
            break
        last_error = _tail(log_path)
        proc = None
    if proc is None:
        raise RuntimeError(f"registry exited during start-up; log:\n{last_error}")

    reg = Registry(
        host=host,
        url=url,
        storage=workdir / "storage",
        log_path=log_path,
        config_path=config_path,
        tls=tls,
        cert_dir=cert_dir,
        ca_pem=ca_pem,
        username=username,
        password=password,
        auth=auth_kind,
        token_server=token,
        pid=proc.pid,
    )
    try:
        yield reg
    finally:
        stop_process(proc)
