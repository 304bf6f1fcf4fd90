"""Code shape limits from the design notes: modules of at most 400 lines, functions of at most 60."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mirror"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 20  # the package is where we think it is
    return found


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_modules_are_at_most_400_lines() -> None:
    too_long = {_name(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_functions_are_at_most_60_lines() -> None:
    """From the ``def`` line to the last line of the body (decorators not counted), nested functions too."""
    too_long: dict[str, int] = {}
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long[f"{_name(path)}:{node.lineno} {node.name}"] = length
    assert too_long == {}, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_values_are_structs_whose_equality_is_whole() -> None:
    """Values are msgspec Structs (a dataclass compiles its methods at import: start-up). A Struct that
    defines ``__eq__`` must define ``__ne__`` too: msgspec's own ``!=`` would not go through ``__eq__``
    (it compares every field, or identity with ``eq=False``), so the two would disagree."""
    dataclasses, half_equal, structs = [], [], 0
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if any(d.startswith(("dataclass", "dataclasses.dataclass")) for d in decorators):
                dataclasses.append(f"{_name(path)}:{node.lineno} {node.name}")
            if any(ast.unparse(b) == "Struct" for b in node.bases):
                structs += 1
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if "__eq__" in methods and "__ne__" not in methods:
                    half_equal.append(f"{_name(path)}:{node.lineno} {node.name}")
    assert structs > 50  # the rule looks where the values are
    assert dataclasses == [], f"dataclasses (use msgspec.Struct): {dataclasses}"
    assert half_equal == [], f"Structs with __eq__ but no __ne__: {half_equal}"
