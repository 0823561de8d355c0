"""Glob patterns over the real cgroup v1 memory tree: what a `targets` pattern entry watches."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.sampling.cgroup_location import cgroups_matching
from tests.cgroups import V1_MEMORY


@pytest.fixture
def tree() -> Iterator[Path]:
    """A slice holding two units and a scope, under the real v1 memory hierarchy (removed afterwards)."""
    if not (V1_MEMORY / "memory.usage_in_bytes").is_file():
        pytest.skip(f"{V1_MEMORY} is not a cgroup v1 memory mount")
    top = V1_MEMORY / f"memmon-glob-{uuid.uuid4().hex[:8]}.slice"
    made = [top, top / "app-a.service", top / "app-b.service", top / "other.scope"]
    try:
        for directory in made:
            directory.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create cgroups here: {exc}")
    yield top
    for directory in reversed(made):
        directory.rmdir()


def test_a_path_pattern_lists_the_matching_cgroups_as_hierarchy_paths(tree: Path) -> None:
    """`/<slice>/app-*.service` gives both services, as hierarchy paths; the scope does not match."""
    found = cgroups_matching(f"/{tree.name}/app-*.service")
    assert found == [f"/{tree.name}/app-a.service", f"/{tree.name}/app-b.service"]


def test_a_directory_pattern_under_the_mount_gives_the_same(tree: Path) -> None:
    """A pattern written as a directory under the mount point is read as that hierarchy path."""
    assert cgroups_matching(str(tree / "app-*.service")) == cgroups_matching(f"/{tree.name}/app-*.service")


def test_a_unit_pattern_finds_units_nested_in_slices(tree: Path) -> None:
    """A unit-name pattern matches the last component anywhere in the tree (units nest in slices); a pattern
    without a unit suffix means services."""
    found = cgroups_matching("app-*.service", unit=True)
    assert f"/{tree.name}/app-a.service" in found and f"/{tree.name}/app-b.service" in found
    assert cgroups_matching("app-*", unit=True) == found
    assert f"/{tree.name}/other.scope" in cgroups_matching("oth*.scope", unit=True)


def test_nothing_matching_is_an_empty_list() -> None:
    """No match is an empty list, not an error (the pattern is re-resolved later)."""
    assert cgroups_matching(f"/memmon-none-{uuid.uuid4().hex}/*") == []
