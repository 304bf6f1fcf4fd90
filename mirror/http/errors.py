"""Mapping of HTTP error responses to the mirror error tree (one place).

The words are containers/image's (``docker/errors.go``, docker/distribution's ``errcode``), because
scripts match on them: a registry's ``{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest
unknown"}]}`` reads ``manifest unknown: manifest unknown`` (the code lower-cased with spaces, then the
message, as skopeo 1.9 prints it; skopeo 1.22 drops the code when the message is its default, so
both versions' phrases are in mirror's text). The HTTP status follows in brackets.
"""

from __future__ import annotations

import json

from mirror.errors import ImageNotFound, NotFound, RateLimited, RegistryError, TransientError, Unauthorized, Unsupported
from mirror.http.headers import parse_retry_after

MAX_ERROR_BODY = 1 << 20
MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
#: Go's net/http error for a TLS handshake answered in plain HTTP, as skopeo prints it (scripts match it).
PLAIN_HTTP_SERVER = "http: server gave HTTP response to HTTPS client"


def describe(body: bytes) -> tuple[str | None, str]:
    """(code, message) from a registry error body ``{"errors":[{"code","message"}]}``."""
    try:
        data = json.loads(body[:MAX_ERROR_BODY])
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = body[:200].decode("utf-8", "replace").strip().splitlines()
        return None, text[0] if text else ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
        message = errors[0].get("message")
        return (str(code) if code else None), (str(message) if message else "")
    return None, ""


def registry_words(code: str | None, message: str) -> str:
    """An error code and message as containers/image prints them: ``manifest unknown: manifest unknown``."""
    if not code:
        return message
    words = code.lower().replace("_", " ")
    return f"{words}: {message}" if message else words


def error_for(status: int, body: bytes, what: str, retry_after: str | None = None) -> RegistryError | TransientError:
    """The exception for a failed response to ``what`` (e.g. ``"reading manifest x in host/repo"``)."""
    code, message = describe(body)
    if code:
        text = f"{what}: {registry_words(code, message)} (HTTP {status})"
    else:
        text = f"{what}: HTTP {status}" + (f" ({message})" if message else "")
    text = " ".join(text.split())
    if status in (401, 403):
        return Unauthorized(text, status=status, code=code)
    if status == 404:
        kind = ImageNotFound if code == MANIFEST_UNKNOWN else NotFound
        return kind(text, status=status, code=code)
    if status == 405:
        return Unsupported(text, status=status, code=code)
    if status == 429:
        return RateLimited(text, retry_after=parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return TransientError(text)
    return RegistryError(text, status=status, code=code)
