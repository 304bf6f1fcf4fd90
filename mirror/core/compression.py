"""Layer (de)compression as incremental byte transforms: gzip (zlib) and zstd (zstandard).

A :class:`Transcoder` is fed a layer's bytes block by block and returns the bytes to write, so a
layer of any size passes through a few MiB of memory. Input is decoded according to its magic
bytes (as containers/image's ``DetectCompression``), whatever its media type claims; concatenated
gzip members and zstd frames are read through. Output is a single gzip member (mtime 0) or a single
zstd frame; gzip output differs from skopeo's pgzip bytes (as any two gzip encoders' do), while the
uncompressed content (the config's diff_ids) is the same.

gzip goes through ISA-L (``isal``), 10-15x faster than zlib on incompressible layers and 4x on
decompression here. ISA-L has four levels (0-3) where gzip has ten: :data:`ISAL_LEVEL` maps them, so
``--dest-compress-level 9`` still asks for the smallest output and 1 for the fastest; level 0 (store
only) stays with zlib, which ISA-L does not do.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Protocol, cast

from mirror.errors import MirrorError

if TYPE_CHECKING:  # both imported when a layer is (de)compressed: not at every start-up
    import zstandard
    from isal import isal_zlib

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
NAMES = ("gzip", "zstd")
#: Levels each algorithm accepts; None picks the library default (gzip 6, zstd 3: as skopeo's defaults).
LEVELS = {"gzip": range(0, 10), "zstd": range(1, 23)}
DEFAULT_LEVEL = {"gzip": 6, "zstd": 3}
#: gzip level -> ISA-L level (0 fastest ... 3 smallest); the default 6 is ISA-L's default 2.
ISAL_LEVEL = {1: 0, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 3, 8: 3, 9: 3}


def gzip_error() -> type[Exception]:
    """ISA-L's decoding error (its stub declares an instance, not the class)."""
    from isal import isal_zlib

    return cast("type[Exception]", isal_zlib.error)


class CompressionError(MirrorError):
    """A layer could not be decompressed (corrupt or truncated data)."""


def check(algorithm: str, level: int | None) -> None:
    """skopeo's words for an unknown algorithm; a level the algorithm does not have is refused too."""
    if algorithm not in NAMES:
        raise MirrorError(f'cannot find compressor for "{algorithm}"')
    if level is not None and level not in LEVELS[algorithm]:
        bounds = LEVELS[algorithm]
        raise MirrorError(f"{algorithm}: invalid compression level: {level} (from {bounds.start} to {bounds.stop - 1})")


def detect(head: bytes) -> str | None:
    """The compression of a stream starting with ``head`` (None: not compressed, or unknown)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


class _Step(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Compressor:
    def __init__(self, algorithm: str, level: int | None) -> None:
        level = DEFAULT_LEVEL[algorithm] if level is None else level
        self._z: zlib._Compress | isal_zlib.Compress | zstandard.ZstdCompressionObj
        if algorithm == "gzip" and level == 0:
            self._z = zlib.compressobj(0, zlib.DEFLATED, 31)
        elif algorithm == "gzip":
            from isal import isal_zlib

            self._z = isal_zlib.compressobj(ISAL_LEVEL[level], isal_zlib.DEFLATED, 31)
        else:
            import zstandard

            self._z = zstandard.ZstdCompressor(level=level).compressobj()

    def feed(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def finish(self) -> bytes:
        return self._z.flush()


class _Decompressor:
    """Decodes gzip members or zstd frames one after another until the input ends."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._errors: tuple[type[Exception], ...] = (gzip_error(),)
        if algorithm != "gzip":
            import zstandard

            self._errors += (zstandard.ZstdError,)
        self._d = self._new()
        self._started = False

    def _new(self) -> isal_zlib.Decompress | zstandard.ZstdDecompressionObj:
        if self.algorithm == "gzip":
            from isal import isal_zlib

            return isal_zlib.decompressobj(31)
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        try:
            while data:
                if self._d.eof:
                    self._d = self._new()
                self._started = True
                out.append(self._d.decompress(data))
                data = self._d.unused_data if self._d.eof else b""
        except self._errors as exc:
            raise CompressionError(f"corrupt {self.algorithm} data: {exc}") from None
        return b"".join(out)

    def finish(self) -> bytes:
        if self._started and not self._d.eof:
            raise CompressionError(f"truncated {self.algorithm} data")
        return b""


class Transcoder:
    """Turns a layer into ``target`` (an algorithm, or None: uncompressed); the input's own compression
    is found from its first bytes (pass at least 4 in the first ``feed``)."""

    def __init__(self, target: str | None, level: int | None = None) -> None:
        self.target = target
        self.level = level
        self._decode: _Step | None = None
        self._encode: _Step = _Compressor(target, level) if target is not None else _Identity()
        self.source: str | None = None

    def feed(self, data: bytes) -> bytes:
        if self._decode is None:
            self.source = detect(data[:4])
            self._decode = _Decompressor(self.source) if self.source is not None else _Identity()
        return self._encode.feed(self._decode.feed(data))

    def finish(self) -> bytes:
        if self._decode is None:  # an empty layer
            self._decode = _Identity()
        tail = self._decode.finish()
        return self._encode.feed(tail) + self._encode.finish()
