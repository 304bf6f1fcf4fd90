"""Key-based sigstore signatures, as containers/image makes and checks them (offline, no Fulcio or Rekor).

- Key pairs (``generate-sigstore-key``): ECDSA P-256; the private key is PKCS#8, encrypted as
  cosign's ``ENCRYPTED COSIGN PRIVATE KEY`` PEM: JSON ``{"kdf": scrypt (N, r, p, salt), "cipher":
  nacl/secretbox (nonce), "ciphertext"}`` (secure-systems-lab/go-securesystemslib ``encrypted``);
  the public key is a ``PUBLIC KEY`` PEM. ECDSA, RSA (PKCS#1 v1.5) and Ed25519 private keys sign.
- A signature is a ``Sigstore`` value: the JSON payload
  ``{"critical": {"identity": {"docker-reference"}, "image": {"docker-manifest-digest"}, "type":
  "cosign container image signature"}, "optional": {...}}`` and its SHA-256 signature, base64, in the
  ``dev.cosignproject.cosign/signature`` annotation.
- Verification checks the signature with any of the policy's public keys before it parses the
  payload, then parses it strictly (exact keys in ``critical``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from mirror import __version__
from mirror.core.digest import Digest
from mirror.core.sigblob import SIGSTORE_MIME_TYPE, SIGSTORE_SIGNATURE_ANNOTATION, Sigstore, go_json
from mirror.errors import MirrorError, SignatureInvalid
from mirror.signing.simple import SIGSTORE_SIGNATURE_TYPE, manifest_digest, parse_payload

PRIVATE_PEM_TYPES = ("ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY")
#: go-securesystemslib's "standard" scrypt parameters (its Encrypt default), and the others it accepts.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 65536, 8, 1
SCRYPT_ACCEPTED = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def _kdf(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, dklen=nacl.secret.SecretBox.KEY_SIZE,
                          maxmem=256 * r * n + (1 << 20))


def generate_key_pair(passphrase: bytes) -> tuple[bytes, bytes]:
    """(private key PEM, public key PEM), as ``skopeo generate-sigstore-key`` writes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    salt, nonce = os.urandom(32), os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    ciphertext = box.encrypt(pkcs8, nonce).ciphertext
    envelope = go_json({"kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                                "salt": _b64(salt)},
                        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
                        "ciphertext": _b64(ciphertext)})
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _pem(PRIVATE_PEM_TYPES[0], envelope), public


def load_private_key(pem: bytes, passphrase: bytes, where: str) -> PrivateKey:
    """Decrypt a cosign/sigstore private key file's contents."""
    kind, body = _unpem(pem, where)
    if kind not in PRIVATE_PEM_TYPES:
        raise MirrorError(f"{where}: unsupported pem type: {kind}")
    try:
        doc = json.loads(body)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = (int(kdf["params"]["N"]), int(kdf["params"]["r"]), int(kdf["params"]["p"]))
        salt, nonce = _unb64(kdf["salt"]), _unb64(cipher["nonce"])
        ciphertext = _unb64(doc["ciphertext"])
        names = (kdf["name"], cipher["name"])
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise MirrorError(f"{where}: not an encrypted sigstore private key") from None
    if names != ("scrypt", "nacl/secretbox") or params not in SCRYPT_ACCEPTED or len(nonce) != 24:
        raise MirrorError(f"{where}: unsupported key encryption {names[0]}/{names[1]} {params}")
    try:
        pkcs8 = nacl.secret.SecretBox(_kdf(passphrase, salt, *params)).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise MirrorError(f"{where}: decrypt: encrypted: decryption failed (wrong passphrase?)") from None
    try:
        key = serialization.load_der_private_key(pkcs8, password=None)
    except (ValueError, UnsupportedAlgorithm):
        raise MirrorError(f"{where}: parsing private key: not a PKCS#8 key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise MirrorError(f"{where}: unsupported key type")
    return key


def sign(key: PrivateKey, manifest: bytes, identity: str) -> Sigstore:
    """A signature of ``manifest`` (its digest, as containers/image computes it) naming ``identity``."""
    payload = go_json({"critical": {"identity": {"docker-reference": identity},
                                    "image": {"docker-manifest-digest": str(manifest_digest(manifest))},
                                    "type": SIGSTORE_SIGNATURE_TYPE},
                       "optional": {"creator": f"mirror {__version__}", "timestamp": int(time.time())}})
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = key.sign(payload)
    return Sigstore(SIGSTORE_MIME_TYPE, payload, {SIGSTORE_SIGNATURE_ANNOTATION: _b64(raw)})


def load_public_key(pem: bytes, where: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise MirrorError(f"{where}: not a PEM public key") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise MirrorError(f"{where}: unsupported public key type")
    return key


def verify(keys: list[PublicKey], sig: Sigstore) -> tuple[str, Digest]:
    """(docker-reference, docker-manifest-digest) of a signature made by one of ``keys``."""
    encoded = sig.annotations.get(SIGSTORE_SIGNATURE_ANNOTATION)
    if encoded is None:
        raise SignatureInvalid(f"missing {SIGSTORE_SIGNATURE_ANNOTATION} annotation")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("base64 decoding of the signature failed") from None
    if not any(_verifies(key, raw, sig.payload) for key in keys):
        raise SignatureInvalid("cryptographic signature verification failed")
    return parse_payload(sig.payload, sigstore=True)


def _verifies(key: PublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a string")
    return base64.b64decode(text, validate=True)


def _pem(kind: str, body: bytes) -> bytes:
    encoded = _b64(body)
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----", ""]).encode()


def _unpem(pem: bytes, where: str) -> tuple[str, bytes]:
    text = pem.decode("ascii", "replace")
    start = text.find("-----BEGIN ")
    head_end = text.find("-----", start + 11) if start >= 0 else -1
    if start < 0 or head_end < 0:
        raise MirrorError(f"{where}: invalid pem block")
    kind = text[start + 11:head_end]
    end = text.find(f"-----END {kind}-----", head_end)
    if end < 0:
        raise MirrorError(f"{where}: invalid pem block")
    try:
        return kind, base64.b64decode("".join(text[head_end + 5:end].split()), validate=True)
    except (binascii.Error, ValueError):
        raise MirrorError(f"{where}: invalid pem block") from None
