"""Every runtime dependency declared in pyproject.toml is used by the ``mirror`` package."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mirror"

#: Dependencies used without an import statement in mirror/: distribution -> text that must appear
#: in mirror/ (and why).
INDIRECT = {
    # anyio.run(..., backend_options={"use_uvloop": True}) makes anyio import and install uvloop.
    "uvloop": '"use_uvloop": True',
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = []
    for spec in project["dependencies"]:
        found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
        assert found is not None, spec
        names.append(_canonical(found.group()))
    return names


def _imported_modules() -> set[str]:
    """Top-level names of every module imported anywhere under mirror/ (function-level imports too)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names


def _import_names() -> dict[str, set[str]]:
    """Installed distribution (canonical name) -> the top-level import names it provides."""
    provided: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            provided.setdefault(_canonical(dist), set()).add(module)
    return provided


def test_every_declared_dependency_is_used() -> None:
    declared = _declared()
    provided = _import_names()
    imported = _imported_modules()
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert {"aiohttp", "anyio", "pyyaml"} <= set(declared)  # the parse found the list
    unused = []
    for dist in declared:
        assert dist in provided, f"{dist} is declared but not installed (pip install -e '.[test]')"
        if provided[dist] & imported:
            continue
        marker = INDIRECT.get(dist)
        if marker is None or marker not in source:
            unused.append(f"{dist} (import names {sorted(provided[dist])})")
    assert unused == [], f"declared in [project] dependencies but never used under mirror/: {unused}"


def test_the_mapping_resolves_distribution_names() -> None:
    """The check above is only as good as the mapping: PyYAML is imported as yaml."""
    assert "yaml" in _import_names()["pyyaml"]
    assert "yaml" in _imported_modules()
