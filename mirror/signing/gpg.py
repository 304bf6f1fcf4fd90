"""GnuPG for simple signing: sign a payload, verify a signature.

``gpg`` (``$MIRROR_GPG``) signs and verifies against the user's keyring (``$GNUPGHOME``); a policy's
keys are checked with ``gpgv`` (``$MIRROR_GPGV``) against a keyring file holding only those keys, so no
agent or home directory is involved. Verification follows containers/image's gpgme rules: exactly one
good signature, no expired or revoked key; the signer is the signing key's fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import os
import subprocess
from pathlib import Path

from mirror.errors import MirrorError, SignatureInvalid

TIMEOUT = 120
_BAD = frozenset({"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"})


def gpg_binary() -> str:
    return os.environ.get("MIRROR_GPG") or "gpg"


def gpgv_binary() -> str:
    return os.environ.get("MIRROR_GPGV") or "gpgv"


def run_gpg(args: list[str], data: bytes | None, program: str | None = None) -> subprocess.CompletedProcess[bytes]:
    program = program or gpg_binary()
    try:
        return subprocess.run([program, *args], input=data, capture_output=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise MirrorError(f"{program} not found: signatures need GnuPG (Debian packages gnupg, gpgv)") from None
    except subprocess.TimeoutExpired:
        raise MirrorError(f"{program} did not finish within {TIMEOUT} s") from None


def gpg_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line for line in proc.stderr.decode("utf-8", "replace").splitlines()
             if line.startswith(("gpg: ", "gpgv: "))]
    return lines[-1].split(": ", 1)[1] if lines else f"exit status {proc.returncode}"


def sign(payload: bytes, fingerprint: str, passphrase_file: str | None) -> bytes:
    args = ["--local-user", fingerprint, "--sign"]
    if passphrase_file is not None:
        args = ["--pinentry-mode", "loopback", "--passphrase-file", passphrase_file, *args]
    proc = run_gpg(["--batch", "--no-tty", *args], payload)
    if proc.returncode != 0 or not proc.stdout:
        raise MirrorError(f"signing with key {fingerprint}: {gpg_error(proc)}")
    return proc.stdout


def verify(signature: bytes, keyring: Path | None = None) -> tuple[bytes, str]:
    """(signed payload, signer fingerprint); SignatureInvalid unless exactly one good signature.
    ``keyring``: a keyring file (gpgv); None: the user's keyring (gpg)."""
    if keyring is None:
        proc = run_gpg(["--batch", "--no-tty", "--status-fd", "2", "--decrypt"], signature)
    else:
        proc = run_gpg(["--keyring", str(keyring), "--status-fd", "2", "--output", "-", "-"], signature,
                       gpgv_binary())
    status = [line.split()[1:] for line in proc.stderr.decode("utf-8", "replace").splitlines()
              if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
    valid = [fields for fields in status if fields[0] == "VALIDSIG" and len(fields) > 1]
    good = sum(fields[0] == "GOODSIG" for fields in status)
    if proc.returncode != 0 or _BAD & {fields[0] for fields in status} or len(valid) != 1 or good != 1:
        raise SignatureInvalid(f"invalid signature: {gpg_error(proc)}")
    return proc.stdout, valid[0][1]


def keyring_bytes(keys: list[bytes]) -> bytes:
    """A keyring file (concatenated binary OpenPGP keys) from armored or binary public keys."""
    out = bytearray()
    for data in keys:
        if b"-----BEGIN PGP PUBLIC KEY BLOCK-----" not in data:
            out += data
            continue
        for block in data.split(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")[1:]:
            body = block.split(b"-----END PGP PUBLIC KEY BLOCK-----")[0]
            lines = body.strip().splitlines()
            if b"" in lines:  # armor headers end at the first blank line
                lines = lines[lines.index(b"") + 1:]
            try:
                out += base64.b64decode(b"".join(line.strip() for line in lines if not line.startswith(b"=")))
            except (binascii.Error, ValueError):
                raise MirrorError("a policy key is not valid ASCII-armored OpenPGP data") from None
    return bytes(out)
