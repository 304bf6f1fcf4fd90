"""README states the CLI's defaults as the argparse parser defines them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mirror.cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _option_default(command: str, option: str) -> object:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return action.default


@pytest.mark.parametrize("option", ["--jobs", "--blob-jobs"])
def test_readme_states_the_sync_defaults(option: str) -> None:
    default = _option_default("sync", option)
    assert isinstance(default, int)
    stated = re.findall(rf"`{option} N`[^)]*?default (\d+)", README.read_text())
    assert stated == [str(default)], f"README says {option} defaults to {stated}, the CLI to {default}"
