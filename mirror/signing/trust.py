"""Enforce a source image's signature policy before anything of it is copied (containers/image's
``IsRunningImageAllowed``): the top-level manifest first, then every instance that is copied.

``signedBy`` (simple signing) and ``sigstoreSigned`` (public keys): at least one of the image's
signatures of that kind must verify with one of the requirement's keys (for GPG, a private keyring
holding only those keys), sign this manifest's digest, and name the image as ``signedIdentity``
demands; signatures of the other kind are not considered. Keys are loaded once per requirement per run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mirror.core.digest import Digest
from mirror.core.manifest import Manifest
from mirror.core.reference import Reference, parse_docker
from mirror.core.sigblob import SIGSTORE_MIME_TYPE, sigstore_signature, simple_signature
from mirror.errors import ConfigError, MirrorError, PolicyDenied, SignatureInvalid
from mirror.signing.policy import Identity, ImagePolicy, Requirement
from mirror.signing.simple import manifest_digest, parse_payload
from mirror.transports.base import ImageSource, source_signatures

if TYPE_CHECKING:  # imported when a signature is verified: a policy that accepts anything needs no cryptography
    from mirror.signing import sigstore


class Trust:
    """Policy checks for one run; owns the temporary keyrings of ``signedBy`` requirements."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._keyrings: dict[int, Path] = {}
        self._sigstore_keys: dict[int, list[sigstore.PublicKey]] = {}
        self._lock = anyio.Lock()

    async def check(self, policy: ImagePolicy, src: ImageSource, manifest: Manifest, instance: Digest | None,
                    where: str) -> None:
        for requirement in policy.requirements:
            if requirement.kind == "insecureAcceptAnything":
                continue
            if requirement.kind == "reject":
                raise PolicyDenied(f"{where} is rejected by the signature policy (scope {policy.scope})")
            if requirement.kind not in ("signedBy", "sigstoreSigned") or requirement.unsupported:
                what = requirement.unsupported or requirement.kind
                raise PolicyDenied(f"{where}: the signature policy requires {what} (scope {policy.scope}), "
                                   "which mirror cannot check")
            await self._signed(policy, requirement, src, manifest, instance, where)

    async def _signed(self, policy: ImagePolicy, requirement: Requirement, src: ImageSource,
                      manifest: Manifest, instance: Digest | None, where: str) -> None:
        blobs = await source_signatures(src, instance, manifest.digest)
        verify = await self._verifier(requirement)
        candidates = [sig for sig in map(_of_kind(requirement.kind), blobs) if sig is not None]
        if not candidates:
            others = f" ({len(blobs)} of another kind)" if blobs else ""
            raise PolicyDenied(f"{where}: a signature was required by the signature policy (scope {policy.scope}), "
                               f"but no signature exists{others}")
        reasons = []
        for signature in candidates:
            try:
                signed_ref, signed_digest = await anyio.to_thread.run_sync(verify, signature)
                if manifest_digest(manifest.raw, signed_digest.algorithm) != signed_digest:
                    raise SignatureInvalid(f"the signature is for {signed_digest}, not {manifest.digest}")
                _check_identity(requirement.identity, policy.reference, signed_ref)
                return
            except SignatureInvalid as exc:
                reasons.append(exc.message)
        raise PolicyDenied(f"{where}: no signature is accepted by the signature policy (scope {policy.scope}): "
                           + "; ".join(reasons))

    async def _verifier(self, requirement: Requirement) -> Callable[[Any], tuple[str, Digest]]:
        """A function from a signature of the requirement's kind to its (reference, digest), verified."""
        from mirror.signing import gpg, sigstore

        if requirement.kind == "sigstoreSigned":
            keys = await self._public_keys(requirement)
            return lambda sig: sigstore.verify(keys, sig)
        home = await self._keyring(requirement)
        return lambda sig: parse_payload(gpg.verify(sig, home)[0])

    async def _public_keys(self, requirement: Requirement) -> list[sigstore.PublicKey]:
        async with self._lock:
            keys = self._sigstore_keys.get(id(requirement))
            if keys is None:
                from mirror.signing import sigstore

                data = await anyio.to_thread.run_sync(requirement.keys)
                try:
                    keys = [sigstore.load_public_key(key, f"public key {i + 1}") for i, key in enumerate(data)]
                except MirrorError as exc:
                    raise ConfigError(f"signature policy: {exc}") from None
                self._sigstore_keys[id(requirement)] = keys
            return keys

    async def _keyring(self, requirement: Requirement) -> Path:
        """A keyring file with only the requirement's keys (removed with this object)."""
        async with self._lock:
            keyring = self._keyrings.get(id(requirement))
            if keyring is None:
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="mirror-policy-")
                keyring = Path(self._tmp.name) / f"keyring-{len(self._keyrings)}.gpg"
                await anyio.to_thread.run_sync(_write_keyring, keyring, requirement)
                self._keyrings[id(requirement)] = keyring
            return keyring


def _of_kind(kind: str) -> Callable[[bytes], Any]:
    """The signature blobs a requirement considers: simple signing for signedBy, sigstore signature
    payloads for sigstoreSigned (other attachments, such as attestations, are not signatures)."""
    def pick(blob: bytes) -> Any:
        try:
            if kind == "signedBy":
                return simple_signature(blob)
            sig = sigstore_signature(blob)
        except SignatureInvalid:
            return None
        return sig if sig is not None and sig.mime_type == SIGSTORE_MIME_TYPE else None
    return pick


def _write_keyring(path: Path, requirement: Requirement) -> None:
    from mirror.signing import gpg

    path.write_bytes(gpg.keyring_bytes(requirement.keys()))


def _check_identity(identity: Identity, image: Reference | None, signed: str) -> None:
    try:
        signed_ref = parse_docker(signed)
    except MirrorError:
        raise SignatureInvalid(f"the signed docker reference {signed[:200]!r} is invalid") from None
    kind = identity.kind
    if kind == "exactReference":
        if str(signed_ref) != str(_parse(identity.values[0])):
            raise SignatureInvalid(f"signed reference {signed_ref} is not {identity.values[0]}")
        return
    if kind == "exactRepository":
        if str(signed_ref.repo) != str(_parse(identity.values[0]).repo):
            raise SignatureInvalid(f"signed repository {signed_ref.repo} is not {identity.values[0]}")
        return
    if image is None:
        raise SignatureInvalid(f"signedIdentity {kind} needs the image's docker reference, and a local image has none")
    if kind == "remapIdentity":
        prefix, signed_prefix = identity.values
        name = str(image)
        if name.startswith(prefix) and (len(name) == len(prefix) or name[len(prefix)] in "/:@"
                                        or prefix.endswith("/")):
            image = _parse(signed_prefix + name[len(prefix):])
        kind = "matchRepoDigestOrExact"
    if kind == "matchRepository" or (kind == "matchRepoDigestOrExact" and image.digest is not None):
        if str(signed_ref.repo) != str(image.repo):
            raise SignatureInvalid(f"signed repository {signed_ref.repo} is not {image.repo}")
        return
    if str(signed_ref) != str(image):  # matchExact, or matchRepoDigestOrExact of a tagged image
        raise SignatureInvalid(f"signed reference {signed_ref} is not {image}")


def _parse(text: str) -> Reference:
    try:
        return parse_docker(text)
    except MirrorError:
        raise PolicyDenied(f"the signature policy names an invalid reference {text[:200]!r}") from None
