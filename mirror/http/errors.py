"""Mapping of HTTP error responses to the mirror error tree (one place)."""

from __future__ import annotations

import json

from mirror.errors import NotFound, RateLimited, RegistryError, TransientError, Unauthorized, Unsupported
from mirror.http.headers import parse_retry_after

MAX_ERROR_BODY = 1 << 20


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


def error_for(status: int, body: bytes, what: str, retry_after: str | None = None) -> RegistryError | TransientError:
    """The exception for a failed response to ``what`` (e.g. ``"reading manifest x"``)."""
    code, message = describe(body)
    detail = f"{code}: {message}" if code and message else (code or message or "")
    text = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
    text = " ".join(text.split())
    if status in (401, 403):
        return Unauthorized(text, status=status, code=code)
    if status == 404:
        return NotFound(text, status=status, code=code)
    if status == 405:
        return Unsupported(text, status=status, code=code)
    if status == 429:
        return RateLimited(text, retry_after=parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return TransientError(text)
    return RegistryError(text, status=status, code=code)
