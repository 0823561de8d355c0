"""The package's declared dependencies are exactly the third-party modules its code imports (issue 13, item 4)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "agent" / "memmon"
# Distribution name -> the top-level module it provides, where the two differ.
MODULE_OF = {"prometheus-client": "prometheus_client", "pydantic-settings": "pydantic_settings"}
# Modules that come with a declared distribution: pydantic pins its own pydantic-core exactly, so pydantic_core
# (PydanticCustomError) must not be declared separately.
BUNDLED = {"pydantic_core": "pydantic"}


def third_party_imports() -> set[str]:
    """Top-level modules imported anywhere in agent/memmon that are neither stdlib nor memmon itself."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    third_party = {name for name in found if name not in sys.stdlib_module_names and name != "memmon"}
    return {BUNDLED.get(name, name) for name in third_party}


def declared(requirements: list[str]) -> set[str]:
    """Module names of requirement strings such as ``"prometheus-client>=0.19"``."""
    names = {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}
    return {MODULE_OF.get(name, name.replace("-", "_")) for name in names}


def test_runtime_dependencies_are_exactly_what_the_code_imports() -> None:
    """Nothing imported is missing from `dependencies`, and nothing in it goes unused (the image installs it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert third_party_imports() == declared(project["dependencies"])


def test_no_optional_extra_installs_what_no_module_imports() -> None:
    """Every extra other than `test` names only modules the package imports (no unused `kubernetes` client)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    imported = third_party_imports()
    for extra, requirements in project.get("optional-dependencies", {}).items():
        if extra == "test":
            continue
        assert declared(requirements) <= imported, extra
