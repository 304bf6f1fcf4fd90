"""``standalone-sign`` and ``standalone-verify``: containers/image "simple signing" with GnuPG.

A signature is an OpenPGP-signed (``gpg --sign``, binary) JSON payload::

    {"critical": {"identity": {"docker-reference": REF}, "image": {"docker-manifest-digest": DIGEST},
                  "type": "atomic container signature"},
     "optional": {"creator": ..., "timestamp": UNIX}}

the format skopeo writes as ``signature-N`` and verifies with ``policy.json`` ``signedBy`` rules. GnuPG
does the cryptography (``$MIRROR_GPG``, default ``gpg``, with its usual ``$GNUPGHOME`` keyring); this
module builds and checks the payload with containers/image's rules: exactly one good, valid signature,
made by the expected key fingerprint, over a payload whose critical section has exactly those keys,
whose reference names the expected image (compared normalised: ``app:v1`` = ``docker.io/library/app:v1``)
and whose digest matches the manifest (a signed schema1 manifest is hashed without its JWS signatures).

Deviation from skopeo 1.9, on purpose: ``standalone-sign`` refuses a DOCKER-REFERENCE that is not a valid
reference (skopeo signs any string, producing a signature no verifier accepts).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror import __version__
from mirror.core import manifest as manifest_mod
from mirror.core.digest import Digest
from mirror.core.reference import parse_docker
from mirror.errors import ManifestError, MirrorError, UsageError

SIGNATURE_TYPE = "atomic container signature"
MAX_SIGNATURE = 4 << 20
MAX_MANIFEST = 4 << 20


class SignatureInvalid(MirrorError):
    """The signature does not verify, or does not say what it must."""


@dataclass(frozen=True, slots=True)
class Verified:
    digest: Digest
    reference: str
    fingerprint: str


def gpg_binary() -> str:
    return os.environ.get("MIRROR_GPG") or "gpg"


def _read(path: str, limit: int, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"reading {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data


def manifest_digest(raw: bytes, algorithm: str = "sha256") -> Digest:
    """containers/image's manifest digest: of the bytes, or of a signed schema1 manifest's payload."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ManifestError("the manifest is not valid JSON") from None
    if not isinstance(data, dict):
        raise ManifestError("the manifest is not a JSON object")
    return manifest_mod.compute_digest(raw, manifest_mod.guess_media_type(data), algorithm)


def _normalised(reference: str, what: str) -> str:
    try:
        return str(parse_docker(reference))
    except MirrorError as exc:
        raise UsageError(f"invalid {what} {reference!r}: {exc}") from None


def _run_gpg(args: list[str], data: bytes | None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run([gpg_binary(), "--batch", "--no-tty", *args], input=data, capture_output=True,
                              timeout=120, check=False)
    except FileNotFoundError:
        raise MirrorError(f"{gpg_binary()} not found: signing and verifying need GnuPG (Debian package gnupg)") \
            from None
    except subprocess.TimeoutExpired:
        raise MirrorError(f"{gpg_binary()} did not finish within 120 s") from None


def _gpg_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.startswith("gpg: ")]
    return lines[-1].removeprefix("gpg: ") if lines else f"exit status {proc.returncode}"


def sign(manifest_path: str, reference: str, fingerprint: str, output: str, passphrase_file: str | None) -> None:
    raw = _read(manifest_path, MAX_MANIFEST, "manifest")
    _normalised(reference, "docker reference")
    digest = manifest_digest(raw)
    payload = json.dumps({
        "critical": {"identity": {"docker-reference": reference},
                     "image": {"docker-manifest-digest": str(digest)}, "type": SIGNATURE_TYPE},
        "optional": {"creator": f"mirror {__version__}", "timestamp": int(time.time())},
    }, separators=(",", ":")).encode()
    args = ["--local-user", fingerprint, "--sign"]
    if passphrase_file is not None:
        args = ["--pinentry-mode", "loopback", "--passphrase-file", passphrase_file, *args]
    proc = _run_gpg(args, payload)
    if proc.returncode != 0 or not proc.stdout:
        raise MirrorError(f"signing with key {fingerprint}: {_gpg_error(proc)}")
    target = Path(output)
    temp = target.with_name(f".{target.name}.mirror-tmp-{os.getpid()}")
    try:
        temp.write_bytes(proc.stdout)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise MirrorError(f"writing signature {output}: {exc.strerror or exc}") from None


def verify(manifest_path: str, reference: str, fingerprint: str, signature_path: str) -> Verified:
    raw = _read(manifest_path, MAX_MANIFEST, "manifest")
    expected_ref = _normalised(reference, "docker reference")
    signature = _read(signature_path, MAX_SIGNATURE, "signature")
    proc = _run_gpg(["--status-fd", "2", "--decrypt"], signature)
    status = [line.split()[1:] for line in proc.stderr.decode("utf-8", "replace").splitlines()
              if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
    valid = [fields for fields in status if fields[0] == "VALIDSIG" and len(fields) > 1]
    bad = {"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"} & {fields[0] for fields in status}
    good = sum(fields[0] == "GOODSIG" for fields in status)
    if proc.returncode != 0 or bad or len(valid) != 1 or good != 1:
        raise SignatureInvalid(f"invalid signature {signature_path}: {_gpg_error(proc)}")
    signer = valid[0][1]
    if signer != fingerprint:
        raise SignatureInvalid(f"signature by {signer} does not match expected fingerprint {fingerprint}")
    signed_ref, signed_digest = _payload(proc.stdout)
    if _normalised(signed_ref, "signed docker reference") != expected_ref:
        raise SignatureInvalid(f"docker reference {signed_ref} does not match {reference}")
    if manifest_digest(raw, signed_digest.algorithm) != signed_digest:
        raise SignatureInvalid(f"signature for docker digest {signed_digest} does not match the manifest")
    return Verified(signed_digest, signed_ref, signer)


def _payload(data: bytes) -> tuple[str, Digest]:
    """(docker-reference, docker-manifest-digest) of a simple-signing payload, parsed as strictly as
    containers/image does: exact key sets in the critical section, ``optional`` free-form."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SignatureInvalid("the signed payload is not JSON") from None
    top = _exact(doc, "payload", {"critical", "optional"}, optional={"optional"})
    if "optional" in top and not isinstance(top["optional"], dict):
        raise SignatureInvalid("the signed payload's optional section is not an object")
    critical = _exact(top["critical"], "critical section", {"type", "image", "identity"})
    if critical["type"] != SIGNATURE_TYPE:
        raise SignatureInvalid(f"unrecognized signature type {str(critical['type'])[:80]!r}")
    digest = _exact(critical["image"], "image", {"docker-manifest-digest"})["docker-manifest-digest"]
    ref = _exact(critical["identity"], "identity", {"docker-reference"})["docker-reference"]
    if not isinstance(digest, str) or not isinstance(ref, str):
        raise SignatureInvalid("the signed payload's docker-manifest-digest or docker-reference is not a string")
    try:
        return ref, Digest.parse(digest)
    except MirrorError:
        raise SignatureInvalid(f"the signed payload has an invalid digest {digest[:80]!r}") from None


def _exact(value: Any, what: str, keys: set[str], optional: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict) or not keys - optional <= set(value) <= keys:
        raise SignatureInvalid(f"the signed {what} must be an object with the keys {', '.join(sorted(keys))}")
    return value
