"""The package's layers: kits -> records -> config and storage -> sample -> evaluate -> alert/act -> expose ->
wiring, and no module imports a layer above its own (nor a sibling of the same height)."""

from __future__ import annotations

import ast
from pathlib import Path

import memmon

PACKAGE = Path(memmon.__file__).parent
LAYERS = {
    "kits": 0,
    "model": 1,
    "telemetry": 1,
    "config": 2,
    "storage": 2,
    "sampling": 3,
    "evaluation": 4,
    "alerting": 5,
    "actions": 5,
    "exposition": 6,
}
"""Each top-level package or module of memmon and its height; modules of equal height do not import each other."""
WIRING = {
    "memmon.app",
    "memmon.assembly",
    "memmon.leakwatch",
    "memmon.leaktrace",
    "memmon.limitwatch",
    "memmon.kernelwatch",
    "memmon.targetwatch",
    "memmon.targetset",
    "memmon.roster",
    "memmon.noderoster",
    "memmon.nodemode",
    "memmon.levellog",
    "memmon.config_summary",
    "memmon.service",
    "memmon.cli",
    "memmon.__main__",
}
"""The modules that know every layer (they build and run the pipeline)."""


def memmon_imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name == "memmon" or name.startswith("memmon.")]


def module_name(path: Path) -> str:
    module = "memmon." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return module.removesuffix(".__init__")


def layer_of(module: str) -> tuple[str, int] | None:
    """``(top-level name, height)`` of a memmon module, None for the wiring and the package itself."""
    parts = module.split(".")
    if len(parts) < 2 or module in WIRING:
        return None
    return parts[1], LAYERS[parts[1]]


def test_every_module_has_a_layer_or_is_wiring() -> None:
    """A new top-level module must be placed: in a layer's package, or named as wiring here."""
    unplaced = [
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if module_name(path) not in WIRING
        and module_name(path) != "memmon"
        and module_name(path).split(".")[1] not in LAYERS
    ]
    assert unplaced == []


def test_no_module_imports_a_higher_layer_or_the_wiring() -> None:
    """Every module imports only lower layers and its own package (wiring modules excepted)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        own = layer_of(module)
        if own is None:
            continue
        for imported in memmon_imports(path):
            if imported == "memmon":
                continue  # the package root: ``__version__`` and lazily imported entry points only
            if imported in WIRING:
                offenders.append(f"{module} imports the wiring {imported}")
                continue
            theirs = layer_of(imported)
            assert theirs is not None
            if theirs[1] > own[1] or (theirs[1] == own[1] and theirs[0] != own[0]):
                offenders.append(
                    f"{module} ({own[0]}, {own[1]}) imports {imported} ({theirs[0]}, {theirs[1]})"
                )
    assert offenders == []


def test_kits_know_nothing_of_memory() -> None:
    """The shared kits import only other kits: they could be lifted out of memmon as they are."""
    for path in (PACKAGE / "kits").glob("*.py"):
        for imported in memmon_imports(path):
            assert imported.startswith("memmon.kits"), (path.name, imported)


def test_sampling_depends_only_on_the_records() -> None:
    """The sampling stage imports nothing of memmon but memmon.model and itself (it runs in a worker thread)."""
    for path in (PACKAGE / "sampling").glob("*.py"):
        for imported in memmon_imports(path):
            assert imported == "memmon.model" or imported.startswith("memmon.sampling"), (path.name, imported)


def test_stages_receive_sections_not_the_whole_settings() -> None:
    """Sample, evaluate, alert and act modules import config sections, never the root ``Settings`` (the assembly
    hands each part what it reads)."""
    offenders = []
    for stage in ("sampling", "evaluation", "alerting", "actions"):
        for path in (PACKAGE / stage).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module in (
                    "memmon.config",
                    "memmon.config.settings",
                ):
                    offenders += [f"{stage}/{path.name}: {alias.name}" for alias in node.names]
    assert offenders == []
