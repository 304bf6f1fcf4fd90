"""A ``docker-credential-*`` helper runs off the event loop: other tasks keep running while it works.

The fake helper announces itself on one FIFO and then waits for a line on another; only a task on
the same event loop writes that line. Were the helper run by a blocking call on the loop, that task
could never run: the helper would wait forever and pytest-timeout would fail the test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from support.images import push_image
from support.registry import Registry

from mirror.errors import CredentialError
from mirror.http.credentials import CredentialOptions, resolve_credential
from mirror.http.tls import TLSOptions
from mirror.ops import inspect as inspect_ops
from mirror.ops.copy import ImageName
from mirror.runtime import GlobalOptions, open_runtime
from mirror.transports.side import SideOptions

HELPER = """#!/bin/sh
server=$(cat)
echo "started $server" > "$HELPER_STARTED"
read go < "$HELPER_RELEASE"
printf '{"ServerURL":"%s","Username":"alice","Secret":"wonderland-secret-9"}' "$server"
"""


class FifoHelper:
    """``docker-credential-x`` in ``bin/``, and the two FIFOs it talks through."""

    def __init__(self, root: Path, registry: str) -> None:
        self.bin, self.home = root / "bin", root / "home"
        self.bin.mkdir(parents=True)
        (self.home / ".docker").mkdir(parents=True)
        script = self.bin / "docker-credential-x"
        script.write_text(HELPER)
        script.chmod(0o755)
        (self.home / ".docker" / "config.json").write_text(json.dumps({"credHelpers": {registry: "x"}}))
        started, release = root / "started", root / "release"
        os.mkfifo(started)
        os.mkfifo(release)
        # Opened up front without blocking: the helper's opens then never wait, only its read does.
        self.started = os.open(started, os.O_RDONLY | os.O_NONBLOCK)
        self.release = os.open(release, os.O_RDWR)
        self.env = {"HOME": str(self.home), "XDG_RUNTIME_DIR": str(root / "run"), "MIRROR_STATE": "none",
                    "PATH": f"{self.bin}:/usr/bin:/bin", "HELPER_STARTED": str(started),
                    "HELPER_RELEASE": str(release)}
        self.heard: list[bytes] = []

    async def answer(self) -> None:
        """Wait (on the event loop) until the helper has started, then let it finish."""
        await anyio.wait_readable(self.started)
        self.heard.append(os.read(self.started, 256))
        os.write(self.release, b"go\n")

    def close(self) -> None:
        os.close(self.started)
        os.close(self.release)


@pytest.fixture
def fifo_helper(tmp_path: Path, htpasswd_registry: Registry) -> Iterator[FifoHelper]:
    helper = FifoHelper(tmp_path / "helper", htpasswd_registry.host)
    yield helper
    helper.close()


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_helper_does_not_block_the_loop_during_a_registry_operation(
        htpasswd_registry: Registry, fifo_helper: FifoHelper) -> None:
    push_image(htpasswd_registry, "team/app", "v1")
    side = SideOptions(tls=TLSOptions(verify=False))
    async with open_runtime(GlobalOptions(), env=fifo_helper.env) as rt, anyio.create_task_group() as tg:
        tg.start_soon(fifo_helper.answer)
        tags = await inspect_ops.list_tags(rt, ImageName("docker", f"{htpasswd_registry.host}/team/app"), side)
    # The helper's answer (alice's password) got us in, and it was asked about this registry.
    assert tags == ["v1"]
    assert fifo_helper.heard == [f"started {htpasswd_registry.host}\n".encode()]


@pytest.mark.anyio
@pytest.mark.timeout(20)
async def test_helper_timeout_kills_it_and_is_one_line(tmp_path: Path) -> None:
    """Nobody releases the helper: it times out, and while it runs the loop serves other tasks (the
    listener hears it start before the lookup gives up; a blocking lookup would give up first)."""
    helper = FifoHelper(tmp_path / "helper", "quay.io")
    events: list[str] = []

    async def listen() -> None:
        await anyio.wait_readable(helper.started)
        events.append(os.read(helper.started, 256).decode().strip())

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            with pytest.raises(CredentialError) as caught:
                await resolve_credential("quay.io", None, CredentialOptions(), helper.env, helper_timeout=0.5)
            events.append(str(caught.value))
    finally:
        helper.close()
    assert events == ["started quay.io", "credential helper docker-credential-x timed out after 0.5s"]
