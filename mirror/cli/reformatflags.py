"""skopeo's manifest-format and layer-compression flags (``--format``, ``--preserve-digests``,
``--dest-compress*``, ``--dest-oci-accept-uncompressed-layers``) → the engine's ``Reformat``."""

from __future__ import annotations

import argparse

from mirror.cli.flags import add_bool, get
from mirror.core import mediatype as mt
from mirror.errors import MirrorError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: mirror --help does not need it
if TYPE_CHECKING:  # the flags are added (for --help too) without importing the engine
    from mirror.engine.reformat import LayerCompression, Reformat

FORMATS = {"oci": mt.OCI_MANIFEST, "v2s2": mt.DOCKER_MANIFEST}
PRESERVE = "Instructed to preserve digests"


def add_format_flags(p: argparse.ArgumentParser, what: str) -> None:
    """``--format`` and ``--preserve-digests`` (copy and sync)."""
    p.add_argument("--format", "-f", dest="manifest_format", metavar="FORMAT",
                   help=f"MANIFEST TYPE (oci or v2s2) to use {what} (default: the source's, converted only where "
                        "the destination needs it); converting changes digests")
    add_bool(p, "--preserve-digests", "fail rather than change a digest (a conversion or a requested "
             "layer change)")


def add_compression_flags(p: argparse.ArgumentParser) -> None:
    """skopeo copy's destination compression flags."""
    add_bool(p, "--dest-compress", "compress tarball layers when saving to a dir: destination "
             "(default: as the source has them)")
    add_bool(p, "--dest-decompress", "decompress tarball layers when saving to a dir: destination "
             "(default: as the source has them)")
    p.add_argument("--dest-compress-format", metavar="FORMAT",
                   help="gzip or zstd: the format layers are compressed in (where the destination compresses "
                        "them: registries, OCI layouts, dir: with --dest-compress); layers in another "
                        "format are recompressed")
    p.add_argument("--dest-compress-level", type=int, metavar="LEVEL",
                   help="compression level (gzip 0-9, default 6; zstd 1-22, default 3)")
    add_bool(p, "--dest-oci-accept-uncompressed-layers", "store uncompressed layers as they are in an oci: "
             "destination (default: compress them, as skopeo)")


def manifest_type(value: str | None) -> str | None:
    """skopeo's ``parseManifestFormat``; schema1 (``v2s1``) is not written by mirror."""
    if value is None:
        return None
    if value == "v2s1":
        raise UsageError("--format v2s1 is not supported: mirror does not write Docker schema1 manifests "
                         "(use oci or v2s2)")
    found = FORMATS.get(value)
    if found is None:
        raise UsageError(f"unknown format \"{value}\". Choose one of the supported formats: 'oci', 'v2s1', or 'v2s2'")
    return found


def reformat(args: argparse.Namespace, dest_transport: str) -> Reformat:
    """The changes the command line asks for, for a destination of ``dest_transport``."""
    from mirror.core import compression
    from mirror.engine.reformat import LayerCompression, Reformat

    algorithm = get(args, "dest_compress_format")
    level = get(args, "dest_compress_level")
    if algorithm is not None or level is not None:
        try:
            compression.check(algorithm or "gzip", level)
        except MirrorError as exc:
            raise UsageError(str(exc)) from None
    layers: LayerCompression | None = None
    if dest_transport == "dir":  # as containers/image, only dir: reads --dest-compress/--dest-decompress
        if get(args, "dest_compress", False) and get(args, "dest_decompress", False):
            raise UsageError("Cannot compress and decompress at the same time")
        if get(args, "dest_compress", False):
            layers = LayerCompression.COMPRESS
        elif get(args, "dest_decompress", False):
            layers = LayerCompression.DECOMPRESS
    if dest_transport in ("oci", "oci-archive") and get(args, "dest_oci_accept_uncompressed_layers", False):
        layers = LayerCompression.PRESERVE
    return Reformat(manifest_type=manifest_type(get(args, "manifest_format")), compression=layers,
                    algorithm=algorithm, level=level, frozen=PRESERVE if get(args, "preserve_digests", False) else "",
                    tmpdir=get(args, "tmpdir"))


def refuse_with_referrers(changes: Reformat, referrers: bool) -> None:
    """A referrer names its subject's digest: an image converted on the way would lose them."""
    if referrers and (changes.manifest_type is not None or changes.explicit_layers):
        raise UsageError("--referrers cannot be combined with --format or a layer compression change: referrers "
                         "name the digest of the image as the source has it")
