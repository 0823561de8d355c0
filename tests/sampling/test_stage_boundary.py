"""The sampling stage depends on nothing in memmon but the shared records."""

from __future__ import annotations

import ast
from pathlib import Path

import memmon.sampling

PACKAGE = Path(memmon.sampling.__file__).parent


def test_sampling_imports_only_model_and_itself() -> None:
    """Every memmon import in memmon/sampling is memmon.model or memmon.sampling.*."""
    offenders = []
    for module in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("memmon") and not (
                    name == "memmon.model" or name == "memmon.sampling" or name.startswith("memmon.sampling.")
                ):
                    offenders.append(f"{module.name}: {name}")
    assert offenders == []
