"""The pipeline's shape: sample -> evaluate -> alert/act -> expose, and no stage imports a later one."""

from __future__ import annotations

import ast
from pathlib import Path

import memmon

PACKAGE = Path(memmon.__file__).parent
STAGES = {"sampling": 1, "evaluation": 2, "alerting": 3, "actions": 3, "exposition": 4}
WIRING = {
    "memmon.app",
    "memmon.assembly",
    "memmon.leakwatch",
    "memmon.kernelwatch",
    "memmon.config_summary",
    "memmon.service",
    "memmon.cli",
    "memmon.__main__",
}


def memmon_imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name == "memmon" or name.startswith("memmon.")]


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.get(parts[1]) if len(parts) > 1 else None


def test_no_module_imports_a_later_stage_or_the_wiring() -> None:
    """A stage imports only shared modules, earlier stages and itself, and never the wiring modules."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "memmon." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        if module in WIRING or module == "memmon":
            continue
        own = stage_of(module)
        own_package = module.split(".")[1] if own is not None else None
        for imported in memmon_imports(path):
            if imported in WIRING:
                offenders.append(f"{module} imports the wiring module {imported}")
                continue
            theirs = stage_of(imported)
            if theirs is None:
                continue
            if own is None:
                offenders.append(f"shared module {module} imports stage module {imported}")
            elif theirs > own or (theirs == own and imported.split(".")[1] != own_package):
                offenders.append(f"{module} (stage {own}) imports {imported} (stage {theirs})")
    assert offenders == []


def test_sampling_depends_only_on_the_records() -> None:
    """The sampling stage imports nothing of memmon but memmon.model and itself (it runs in a worker thread)."""
    for path in (PACKAGE / "sampling").glob("*.py"):
        for imported in memmon_imports(path):
            assert imported == "memmon.model" or imported.startswith("memmon.sampling"), (path.name, imported)
