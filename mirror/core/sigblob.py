"""Signatures as stored: containers/image's signature "blob" format (pure values, no I/O).

A signature travels between transports as bytes in the format containers/image stores in ``dir:``
``signature-N`` files and lookaside storage:

- simple signing (an OpenPGP signed message) is stored raw, for compatibility with old ``dir:`` images;
- any other format is ``0x00`` + format name + ``\\n`` + data; sigstore's data is the JSON object
  ``{"mimeType": ..., "payload": base64, "annotations": {...}}`` (Go's encoding, so the bytes match
  skopeo's byte for byte).

Everything here is untrusted until a verifier (``signing/``) has checked it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from types import MappingProxyType

from msgspec import Struct

from mirror.errors import SignatureInvalid

SIMPLE_SIGNING = "simple-signing"
SIGSTORE = "sigstore-json"
#: cosign's simple-signing payload type and signature annotation (sigstore/cosign).
SIGSTORE_MIME_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGSTORE_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"

# First bytes of an OpenPGP message: compressed data, one-pass signature or signature packets, old
# and new packet formats (containers/image's auto-detection of raw simple signatures).
_OPENPGP_FIRST = frozenset({0xA0, 0xA1, 0xA2, 0xA3, 0xC8, 0x90, 0x91, 0x92, 0x3D, 0xC4, 0x88, 0x89, 0x8A, 0x8B, 0xC2})


class Sigstore(Struct, frozen=True):
    """A sigstore (cosign) signature: a payload and annotations (the signature itself is one of them)."""

    mime_type: str
    payload: bytes
    annotations: Mapping[str, str] = MappingProxyType({})


def format_of(blob: bytes) -> str:
    """``simple-signing``, ``sigstore-json`` or another format's name; SignatureInvalid if unrecognised."""
    if not blob:
        raise SignatureInvalid("empty signature blob")
    if blob[0] in _OPENPGP_FIRST:
        return SIMPLE_SIGNING
    if blob[0] != 0:
        raise SignatureInvalid(f"unrecognized signature format, starting with binary {blob[0]:#x}")
    name, newline, _ = blob[1:].partition(b"\n")
    if not newline or not all(32 <= b < 0x7F for b in name):
        raise SignatureInvalid("invalid signature format name")
    return name.decode("ascii")


def simple_signature(blob: bytes) -> bytes | None:
    """The OpenPGP message of a simple-signing blob; None for another format."""
    kind = format_of(blob)
    if kind != SIMPLE_SIGNING:
        return None
    return blob if blob[0] != 0 else blob.partition(b"\n")[2]


def sigstore_signature(blob: bytes) -> Sigstore | None:
    """The sigstore signature in a blob; None for another format; SignatureInvalid if malformed."""
    if format_of(blob) != SIGSTORE:
        return None
    try:
        doc = json.loads(blob.partition(b"\n")[2])
        payload = base64.b64decode(doc.get("payload") or "", validate=True)
    except (ValueError, UnicodeDecodeError, RecursionError, AttributeError, TypeError, binascii.Error):
        raise SignatureInvalid("a sigstore signature blob is not valid JSON of the expected shape") from None
    mime, annotations = doc.get("mimeType"), doc.get("annotations") or {}
    if not isinstance(mime, str) or not isinstance(annotations, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise SignatureInvalid("a sigstore signature blob has a malformed mimeType or annotations")
    return Sigstore(mime, payload, MappingProxyType(dict(annotations)))


def sigstore_blob(sig: Sigstore) -> bytes:
    """The stored form of a sigstore signature, byte for byte what containers/image writes."""
    doc = {"mimeType": sig.mime_type, "payload": base64.b64encode(sig.payload).decode("ascii"),
           "annotations": dict(sorted(sig.annotations.items()))}
    return b"\x00" + SIGSTORE.encode() + b"\n" + go_json(doc)


def go_json(value: object) -> bytes:
    """JSON as Go's ``encoding/json`` writes it: compact, UTF-8, with ``<``, ``>``, ``&``, U+2028 and
    U+2029 escaped (map keys must already be in the order Go would sort them)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()
