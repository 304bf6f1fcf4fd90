"""The error tree. Every failure a user can cause or meet is one of these, with a one-line message.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; only ``--debug`` shows tracebacks.
"""

from __future__ import annotations


class MirrorError(Exception):
    """Base class: a failure with a clear one-line message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(MirrorError):
    """Bad command-line input (exit 1, as skopeo)."""


class InvalidReference(UsageError):
    """An image reference that does not parse."""


class ConfigError(UsageError):
    """A configuration file (YAML, auth file, certs) that cannot be used."""


class RegistryError(MirrorError):
    """A registry answered with an error status."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(RegistryError):
    """Manifest, blob, repository, file or upload session unknown (404). Exit 1: skopeo 1.22 exits 2
    only when the image itself is missing (:class:`ImageNotFound`)."""


class ImageNotFound(NotFound):
    """The image asked for does not exist: a registry's ``MANIFEST_UNKNOWN``, a ref name an OCI
    layout's index.json lacks, an image containers-storage does not hold. Exit 2, as skopeo (>= 1.16,
    ``isNotFoundImageError``)."""

    exit_code = 2


class Unauthorized(RegistryError):
    """Authentication failed or access denied (401/403)."""


class Unsupported(RegistryError):
    """The registry refuses the operation (405 UNSUPPORTED), e.g. deletion disabled."""


class RateLimited(RegistryError):
    """429 Too Many Requests; ``retry_after`` in seconds when the registry said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, code="TOOMANYREQUESTS")
        self.retry_after = retry_after


class TransientError(MirrorError):
    """A failure worth retrying: connection reset, timeout, 5xx."""


class DigestMismatch(MirrorError):
    """Content does not hash to the digest that names it."""


class ManifestError(MirrorError):
    """A manifest that is malformed, too large or of an unsupported type."""


class TLSError(MirrorError):
    """Certificate verification or TLS configuration failed."""


class CredentialError(MirrorError):
    """Credentials could not be found, parsed or stored."""


class SignatureError(MirrorError):
    """Signatures cannot be carried to the destination (skopeo's ``--remove-signatures`` drops them)."""


class SignatureInvalid(SignatureError):
    """A signature does not verify, or does not say what it must."""


class PolicyDenied(SignatureError):
    """The signature policy (policy.json) rejects the image."""
