"""Fixtures for the sampling tests: real child processes and a real cgroup v1 memory cgroup."""

from __future__ import annotations

import select
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import CHILD, Spawn


def _wait_ready(child: subprocess.Popen[str], timeout: float = 10.0) -> None:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline() if ready else ""
    if line.strip() != "ready":
        child.kill()
        child.wait()
        raise RuntimeError(f"child did not get ready (exit {child.returncode}): {line!r}")


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
    child.wait(timeout=10)
    if child.stdout is not None:
        child.stdout.close()


@pytest.fixture
def marker() -> str:
    """A string unique to this test, put in children's argv so ``--match`` finds only them."""
    return f"memmon-test-marker-{uuid.uuid4().hex}"


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start allocating children: ``spawn(marker, mib=50, cgroup=None)``; all are killed and reaped after."""
    children: list[subprocess.Popen[str]] = []

    def start(marker: str, mib: int = 50, cgroup: Path | None = None) -> subprocess.Popen[str]:
        argv = [sys.executable, "-c", CHILD, marker, str(mib)]
        if cgroup is not None:
            argv.append(str(cgroup))
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        children.append(child)
        _wait_ready(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            _stop(child)
