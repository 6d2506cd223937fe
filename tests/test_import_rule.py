"""DESIGN.md's import rule, checked on the source: cutout is pure, storage knows no web."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: third-party top-level modules each package may import (the standard library is always fine)
ALLOWED = {
    "cutout": {"numpy", "astropy", "astropy_healpix", "PIL", "reproject", "cutout"},
    "storage": {"numpy", "astropy", "sqlalchemy", "aiosqlite", "aiofiles", "msgspec", "alembic", "asyncpg", "storage",
                "cutout"},
}


def imported_modules(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of a package."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_design_allows(package: str) -> None:
    for path, names in imported_modules(package).items():
        third_party = {n for n in names if n not in sys.stdlib_module_names}
        assert third_party <= ALLOWED[package], f"{path} imports {sorted(third_party - ALLOWED[package])}"


@pytest.mark.parametrize("package", ["cutout", "storage", "bench", "tests/cutout", "tests/storage"])
def test_only_siasync_imports_litestar(package: str) -> None:
    forbidden = {"litestar"} if package == "bench" else {"litestar", "siasync"}
    for path, names in imported_modules(package).items():
        assert not names & forbidden, f"{path} imports {sorted(names & forbidden)}"


def test_the_rule_is_checked_on_real_files() -> None:
    assert len(imported_modules("cutout")) >= 8
    assert "numpy" in imported_modules("cutout")["cutout/engine.py"]


def test_the_client_needs_only_httpx() -> None:
    """`siasync.client` runs where the service does not: it imports nothing of the server."""
    files = imported_modules("siasync/client")
    assert len(files) >= 5
    for path, names in files.items():
        third_party = {n for n in names if n not in sys.stdlib_module_names}
        assert third_party <= {"httpx", "siasync"}, f"{path} imports {sorted(third_party)}"
        source = (REPO / path).read_text()
        server_imports = [line for line in source.splitlines()
                          if line.startswith(("from siasync", "import siasync"))
                          and not line.startswith(("from siasync.client", "import siasync.client"))]
        assert not server_imports, f"{path}: {server_imports}"
