"""``standalone-sign`` and ``standalone-verify``: containers/image "simple signing" with GnuPG.

The payload format is ``signing/simple.py``; GnuPG (``$GNUPGHOME`` keyring) is driven by
``signing/gpg.py``. Verification, as containers/image's: exactly one good signature, made by the
expected key fingerprint, whose reference names the expected image (compared normalised:
``app:v1`` = ``docker.io/library/app:v1``) and whose digest matches the manifest.

Deviation from skopeo 1.9, on purpose: ``standalone-sign`` refuses a DOCKER-REFERENCE that is not a valid
reference (skopeo signs any string, producing a signature no verifier accepts).
"""

from __future__ import annotations

import time

from msgspec import Struct

from mirror import __version__, aio
from mirror.core.digest import Digest
from mirror.core.reference import parse_docker
from mirror.errors import MirrorError, SignatureInvalid, UsageError
from mirror.signing import gpg
from mirror.signing.simple import make_payload, manifest_digest, parse_payload

MAX_SIGNATURE = 4 << 20
MAX_MANIFEST = 4 << 20

__all__ = ["Verified", "manifest_digest", "sign", "verify"]


class Verified(Struct, frozen=True):
    digest: Digest
    reference: str
    fingerprint: str


def read_limited(path: str, limit: int, what: str) -> bytes:
    """A small file named on the command line, whole; one-line UsageErrors when missing, unreadable or
    over ``limit``."""
    data = aio.read_limited(path, limit, what, UsageError)
    if data is None:
        raise UsageError(f"reading {what} {path}: No such file or directory")
    return data


def _normalised(reference: str, what: str) -> str:
    try:
        return str(parse_docker(reference))
    except MirrorError as exc:
        raise UsageError(f"invalid {what} {reference!r}: {exc}") from None


def sign(manifest_path: str, reference: str, fingerprint: str, passphrase_file: str | None) -> bytes:
    """The signature, for the caller to write out (``cli.commands`` writes it atomically)."""
    raw = read_limited(manifest_path, MAX_MANIFEST, "manifest")
    _normalised(reference, "docker reference")
    payload = make_payload(reference, manifest_digest(raw), f"mirror {__version__}", int(time.time()))
    return gpg.sign(payload, fingerprint, passphrase_file)


def verify(manifest_path: str, reference: str, fingerprint: str, signature_path: str) -> Verified:
    raw = read_limited(manifest_path, MAX_MANIFEST, "manifest")
    expected_ref = _normalised(reference, "docker reference")
    signature = read_limited(signature_path, MAX_SIGNATURE, "signature")
    try:
        payload, signer = gpg.verify(signature)
    except SignatureInvalid as exc:
        raise SignatureInvalid(f"{signature_path}: {exc}") from None
    if signer != fingerprint:
        raise SignatureInvalid(f"signature by {signer} does not match expected fingerprint {fingerprint}")
    signed_ref, signed_digest = parse_payload(payload)
    if _normalised(signed_ref, "signed docker reference") != expected_ref:
        raise SignatureInvalid(f"docker reference {signed_ref} does not match {reference}")
    if manifest_digest(raw, signed_digest.algorithm) != signed_digest:
        raise SignatureInvalid(f"signature for docker digest {signed_digest} does not match the manifest")
    return Verified(signed_digest, signed_ref, signer)
