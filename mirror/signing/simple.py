"""containers/image "simple signing" payloads (pure; GnuPG itself is ``signing/gpg.py``).

A signature is an OpenPGP-signed JSON payload::

    {"critical": {"identity": {"docker-reference": REF}, "image": {"docker-manifest-digest": DIGEST},
                  "type": "atomic container signature"},
     "optional": {"creator": ..., "timestamp": UNIX}}

parsed as strictly as containers/image does: exact key sets in the critical section, ``optional``
free-form.
"""

from __future__ import annotations

import json
from typing import Any

from mirror.core import manifest as manifest_mod
from mirror.core.digest import Digest
from mirror.errors import MirrorError, SignatureInvalid

SIGNATURE_TYPE = "atomic container signature"
SIGSTORE_SIGNATURE_TYPE = "cosign container image signature"


def manifest_digest(raw: bytes, algorithm: str = "sha256") -> Digest:
    """containers/image's manifest digest: of the bytes (whatever they are, as skopeo digests an empty
    file), or of a signed schema1 manifest's payload (ManifestError when that is malformed)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Digest.of(raw, algorithm)
    if not isinstance(data, dict):
        return Digest.of(raw, algorithm)
    return manifest_mod.compute_digest(raw, manifest_mod.guess_media_type(data), algorithm)


def make_payload(reference: str, digest: Digest, creator: str, timestamp: int) -> bytes:
    return json.dumps({
        "critical": {"identity": {"docker-reference": reference},
                     "image": {"docker-manifest-digest": str(digest)}, "type": SIGNATURE_TYPE},
        "optional": {"creator": creator, "timestamp": timestamp},
    }, separators=(",", ":")).encode()


def parse_payload(data: bytes, *, sigstore: bool = False) -> tuple[str, Digest]:
    """(docker-reference, docker-manifest-digest) of a verified payload, parsed as strictly as
    containers/image. Simple signing: ``optional`` may be absent, else an object. Sigstore
    (``sigstore=True``): ``optional`` must be there, an object or null."""
    what = "sigstore payload" if sigstore else "signed payload"
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SignatureInvalid(f"the {what} is not JSON") from None
    top = _exact(doc, "payload", {"critical", "optional"}, optional=set() if sigstore else {"optional"})
    if ("optional" in top and not isinstance(top["optional"], dict)
            and not (sigstore and top["optional"] is None)):
        raise SignatureInvalid(f"the {what}'s optional section is not an object")
    critical = _exact(top["critical"], "critical section", {"type", "image", "identity"})
    if critical["type"] != (SIGSTORE_SIGNATURE_TYPE if sigstore else SIGNATURE_TYPE):
        raise SignatureInvalid(f"unrecognized signature type {str(critical['type'])[:80]!r}")
    digest = _exact(critical["image"], "image", {"docker-manifest-digest"})["docker-manifest-digest"]
    ref = _exact(critical["identity"], "identity", {"docker-reference"})["docker-reference"]
    if not isinstance(digest, str) or not isinstance(ref, str):
        raise SignatureInvalid(f"the {what}'s docker-manifest-digest or docker-reference is not a string")
    try:
        return ref, Digest.parse(digest)
    except MirrorError:
        raise SignatureInvalid(f"the {what} has an invalid digest {digest[:80]!r}") from None


def _exact(value: Any, what: str, keys: set[str], optional: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict) or not keys - optional <= set(value) <= keys:
        raise SignatureInvalid(f"the signed {what} must be an object with the keys {', '.join(sorted(keys))}")
    return value
