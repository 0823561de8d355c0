"""The ``uml`` fixture: runs shell jobs inside User-Mode Linux, a real cgroup v2 kernel (tests/v2/uml.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.v2.uml import UML_KERNEL, UmlResult, run_in_uml

NOT_INSTALLED = "user-mode-linux not installed: run make test as root, or apt-get install user-mode-linux"


class Uml:
    """``run_in_uml`` bound to the test's own ``tmp_path`` as the shared workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def __call__(
        self,
        job: str,
        *,
        mem: str = "1G",
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
        scratch_mb: int = 0,
    ) -> UmlResult:
        return run_in_uml(job, workdir=self.workdir, mem=mem, timeout=timeout, env=env, scratch_mb=scratch_mb)


@pytest.fixture
def uml(tmp_path: Path) -> Uml:
    """The UML runner with ``tmp_path`` as workdir; skips when /usr/bin/linux.uml is missing."""
    if not UML_KERNEL.exists():
        pytest.skip(NOT_INSTALLED)
    return Uml(tmp_path)
