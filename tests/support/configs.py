"""configs/ examples as the tests run them: copied with placeholders replaced."""

from __future__ import annotations

from pathlib import Path


def filled(example: Path, tmp_path: Path, replacements: dict[str, str]) -> Path:
    """``example`` copied into ``tmp_path`` with each key replaced by its value, in order; a key the
    example no longer mentions fails the test (the example and its test drifted apart)."""
    text = example.read_text()
    for old, new in replacements.items():
        assert old in text, f"{example.name} no longer mentions {old!r}"
        text = text.replace(old, new)
    path = tmp_path / example.name
    path.write_text(text)
    return path
