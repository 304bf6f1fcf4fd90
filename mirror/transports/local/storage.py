"""skopeo's ``containers-storage:[DRIVER@ROOT+RUNROOT:OPTIONS]REF`` transport, by driving podman.

Why podman and not the store itself: containers/storage's on-disk format (``overlay-images/
images.json``, ``overlay-layers/layers.json``, tar-split metadata, per-driver layer directories,
mount counts) is an internal detail of that Go library, guarded by its own lock files and changed
between releases; writing it from Python would risk corrupting a store other tools share and
would need a reimplementation of every graph driver. podman is the store's reference client and
uses the library's own locking, so mirror hands it images in formats both sides already speak:

- source: ``podman save --format docker-archive -o <tmp> REF``, then the archive is read by seeking
  (``dockerarchive.py``); as with skopeo, the manifest is regenerated from the store (the config,
  i.e. the image ID, and the layer contents are what survives);
- destination: the image is written as a skopeo ``dir:`` directory in a temp directory (manifest,
  config and layers byte for byte, every blob verified) and, only when the copy succeeded,
  ``podman pull dir:<tmp>`` stores it and ``podman tag <image ID> REF`` names it. So podman lists the
  image with the source's manifest digest (``podman images --digests``) and its config digest as
  image ID, exactly as after ``skopeo copy docker://... containers-storage:REF``. (A docker-archive
  would lose the manifest digest: podman would record the one it regenerates from the archive.)

The bracketed store spec maps to podman's global flags: DRIVER → ``--storage-driver``, ROOT →
``--root``, RUNROOT → ``--runroot``, each OPTION (comma-separated) → ``--storage-opt``. REF is
``name[:tag]`` or, for a source, an image ID (``sha256:<hex>`` or a bare 64-hex ID). ``$MIRROR_PODMAN``
names the podman binary (default: ``podman`` on PATH).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from msgspec import Struct

from mirror.core.reference import ManifestRef, Tag
from mirror.errors import ImageNotFound, InvalidReference, MirrorError
from mirror.transports.base import Capabilities, ImageDestination, ImageSource, Location, Untagged
from mirror.transports.local.directory import DirDestination
from mirror.transports.local.dockerarchive import ArchiveSource, normalise_tag
from mirror.transports.local.files import work_dir
from mirror.transports.side import SideOptions

_ID_RE = re.compile(r"^(?:sha256:)?[a-f0-9]{64}$")
_SPEC_RE = re.compile(r"^\[(?:(?P<driver>[^@\]+:]+)@)?(?P<root>[^\]+:]*)(?:\+(?P<runroot>[^\]:]*))?"
                      r"(?::(?P<options>[^\]]*))?\]")
TIMEOUT = 600.0


class StorageRef(Struct, frozen=True):
    flags: tuple[str, ...]   # podman global flags selecting the store
    name: str                # normalised name:tag, or an image ID
    is_id: bool

    @property
    def store(self) -> str:
        return " ".join(self.flags) or "default store"


def parse_ref(rest: str) -> StorageRef:
    where = f"invalid containers-storage: reference {rest!r}"
    flags: list[str] = []
    image = rest
    if rest.startswith("["):
        match = _SPEC_RE.match(rest)
        if match is None:
            raise InvalidReference(f"{where}: malformed [DRIVER@ROOT+RUNROOT:OPTIONS] store spec")
        image = rest[match.end():]
        for key, flag in (("driver", "--storage-driver"), ("root", "--root"), ("runroot", "--runroot")):
            value = match.group(key)
            if value:
                if key != "driver" and not value.startswith("/"):
                    raise InvalidReference(f"{where}: the store {key} must be an absolute path")
                flags += [flag, value]
        for option in filter(None, (match.group("options") or "").split(",")):
            flags += ["--storage-opt", option]
    if "\x00" in image or not image:
        raise InvalidReference(f"{where}: no image name")
    if _ID_RE.match(image):
        return StorageRef(tuple(flags), image.removeprefix("sha256:"), True)
    if image.startswith("@"):
        raise InvalidReference(f"{where}: image IDs are written sha256:<hex>")
    return StorageRef(tuple(flags), normalise_tag(image, where), False)


def _podman() -> str:
    return os.environ.get("MIRROR_PODMAN") or "podman"


async def podman(ref: StorageRef, *args: str) -> str:
    """Run ``podman FLAGS ARGS``; a failure becomes a one-line error."""
    argv = [_podman(), *ref.flags, *args]
    try:
        with anyio.fail_after(TIMEOUT):
            proc = await anyio.run_process(argv, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MirrorError(f"containers-storage: needs podman ({argv[0]!r} not found)") from None
    except TimeoutError:
        raise MirrorError(f"containers-storage: podman {args[0]} timed out after {TIMEOUT:g}s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        message = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        message = re.sub(r'^(Error: |time="[^"]*" level=\w+ msg=")', "", message)[:300]
        if "image not known" in message or "no such image" in message.lower():
            raise ImageNotFound(f"containers-storage ({ref.store}): image {ref.name} not found")
        raise MirrorError(f"containers-storage ({ref.store}): podman {args[0]}: {message}")
    return proc.stdout.decode("utf-8", "replace")


CAPS = Capabilities()


class StorageTransport(Untagged):
    name = "containers-storage"
    capabilities = CAPS

    def validate(self, rest: str) -> None:
        parse_ref(rest)

    @asynccontextmanager
    async def source(self, rest: str, side: SideOptions) -> AsyncIterator[tuple[ImageSource, ManifestRef]]:
        ref = parse_ref(rest)
        async with work_dir(side.local.tmpdir) as work:
            spool = work / "image.tar"
            await podman(ref, "save", "--format", "docker-archive", "-o", str(spool), ref.name)
            src = await ArchiveSource.open(spool, None, Location(self.name, "", ref.name))
            yield src, src.manifest.digest

    @asynccontextmanager
    async def destination(self, rest: str, side: SideOptions
                          ) -> AsyncIterator[tuple[ImageDestination, Tag | None]]:
        ref = parse_ref(rest)
        if ref.is_id:
            raise InvalidReference(f"containers-storage:{rest}: a destination needs a name:tag, not an image ID")
        async with work_dir(side.local.tmpdir) as work:
            building = work / "building"
            await anyio.to_thread.run_sync(building.mkdir)
            dest = DirDestination(work / "image", building)
            dest.location = Location(self.name, "", ref.name)
            # Not a dir: destination's capabilities: podman refuses signatures that are not OpenPGP
            # (dir: carries any), and this transport's source (podman save) cannot read them back.
            dest.capabilities = CAPS
            yield dest, Tag(ref.name)
            await dest.commit()
            lines = (await podman(ref, "pull", "-q", f"dir:{work / 'image'}")).split()
            if not lines or not _ID_RE.match(lines[-1]):
                raise MirrorError(f"containers-storage ({ref.store}): podman pull did not report an image ID")
            await podman(ref, "tag", lines[-1], ref.name)
