"""A throw-away PostgreSQL cluster from Debian's ``postgresql`` package, for the distributed-mode tests.

``initdb`` creates a cluster in a temp directory; ``postgres`` serves it on a free 127.0.0.1 port
(and a unix socket in the same directory) with ``trust`` authentication, for one test session.
PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` system user
(created by the Debian package) and its commands run through ``runuser``. Each test gets its own
database (:meth:`Postgres.new_database`).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .registry import free_port

START_TIMEOUT = 30.0
_counter = itertools.count(1)


def pg_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` (Debian installs the server binaries there)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL server not installed (Debian package 'postgresql'); ./scripts/test installs it")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    root: Path
    port: int
    user: str
    bindir: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its connection URL."""
        name = f"t{os.getpid()}_{next(_counter)}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, database: str, sql: str) -> str:
        result = subprocess.run(
            [str(self.bindir / "psql"),
             "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "-d", database, "-c", sql],
            capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def dump(self, url: str) -> str:
        """``pg_dump`` of a whole database (schema and data), as text."""
        result = subprocess.run([str(self.bindir / "pg_dump"), "--no-owner", url],
                                capture_output=True, text=True, check=True, timeout=120)
        return result.stdout


def _as_server_user() -> tuple[list[str], str | None]:
    if os.getuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root needs the 'postgres' system user (Debian package 'postgresql')") from None
    return ["runuser", "-u", "postgres", "--"], "postgres"


@contextmanager
def start_postgres() -> Iterator[Postgres]:
    bindir = pg_bindir()
    prefix, owner = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="mirror-pg-"))
    if owner is not None:
        shutil.chown(root, owner)
    data = root / "data"
    user = "mirror"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    port = free_port()
    log = open(root / "server.log", "wb")  # closed in the finally below
    process = subprocess.Popen(
        [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=log, stderr=subprocess.STDOUT)
    server = Postgres(root, port, user, bindir, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            ready = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                   capture_output=True, check=False)
            if ready.returncode == 0:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)  # polling a condition with a deadline
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
