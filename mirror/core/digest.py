"""Content digests: parsing, validation and incremental hashing."""

from __future__ import annotations

import hashlib
import re

from msgspec import Struct

from mirror.errors import DigestMismatch, InvalidReference

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_LOWER_HEX = re.compile(r"[0-9a-f]+")

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class Digest(Struct, frozen=True):
    """An ``algorithm:hex`` content digest (sha256 or sha512)."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST_RE.match(text)
        if match is None:
            raise InvalidReference(f"invalid digest {text!r}")
        algorithm, hexpart = match.groups()
        length = _ALGORITHMS.get(algorithm)
        if length is None:
            raise InvalidReference(f"unsupported digest algorithm {algorithm!r} in {text!r}")
        if len(hexpart) != length or _LOWER_HEX.fullmatch(hexpart) is None:
            raise InvalidReference(f"invalid {algorithm} digest {text!r}")
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Hasher:
        return Hasher(self.algorithm)

    def verify(self, data: bytes, what: str = "content") -> None:
        actual = Digest.of(data, self.algorithm)
        if actual != self:
            raise DigestMismatch(f"{what} digest mismatch: expected {self}, got {actual}")


class Hasher:
    """Incremental hash that counts bytes; ``check`` enforces digest and size at the end."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._h.hexdigest())

    def check(self, expected: Digest, expected_size: int | None, what: str = "blob") -> None:
        if expected_size is not None and expected_size >= 0 and self.size != expected_size:
            raise DigestMismatch(
                f"{what} {expected}: size mismatch, expected {expected_size} bytes, got {self.size}"
            )
        actual = self.digest()
        if actual != expected:
            raise DigestMismatch(f"{what} digest mismatch: expected {expected}, got {actual}")
