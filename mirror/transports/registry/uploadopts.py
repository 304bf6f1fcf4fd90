"""Upload settings: the options that choose a blob's upload path, and the environment that sets them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from msgspec import Struct

from mirror.core.size import CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, MiB, parse_size
from mirror.errors import ConfigError
from mirror.state import default_state_path


class UploadOptions(Struct, frozen=True):
    """How blobs are uploaded; see the module docstring."""

    chunk_size: int = 16 * MiB
    threshold: int = 64 * MiB
    monolithic_max: int = MiB
    max_resumes: int = 5
    stop_grace: float = 30.0  # seconds a cancelled resumable upload may spend finishing its chunk

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.threshold <= 0 or self.monolithic_max < 0 or self.max_resumes < 0 \
                or self.stop_grace < 0:
            raise ConfigError(f"invalid upload options {self}")


class ResumeSettings(Struct, frozen=True):
    uploads: UploadOptions
    state_path: Path | None  # None: no persistent state


def resume_settings(env: Mapping[str, str]) -> ResumeSettings:
    """The one place that reads ``MIRROR_CHUNK_SIZE``, ``MIRROR_CHUNK_THRESHOLD`` and ``MIRROR_STATE``.

    Sizes are read by :func:`mirror.core.size.parse_size` (binary units, as ``--chunk-size`` and the
    YAML ``chunk-size``).

    ``MIRROR_STATE``: a path, or ``none`` for no persistent state; unset or empty: the default path
    (:func:`mirror.state.default_state_path`).
    """
    defaults = UploadOptions()
    chunk = env.get("MIRROR_CHUNK_SIZE", "").strip()
    threshold = env.get("MIRROR_CHUNK_THRESHOLD", "").strip()
    uploads = UploadOptions(
        chunk_size=parse_size(chunk, "MIRROR_CHUNK_SIZE", minimum=CHUNK_SIZE_MIN, maximum=CHUNK_SIZE_MAX)
        if chunk else defaults.chunk_size,
        threshold=parse_size(threshold, "MIRROR_CHUNK_THRESHOLD", minimum=1) if threshold else defaults.threshold)
    state = env.get("MIRROR_STATE", "").strip()
    if state.lower() == "none":
        return ResumeSettings(uploads, None)
    return ResumeSettings(uploads, Path(state).expanduser() if state else default_state_path(env))
