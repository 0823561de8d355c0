"""Fixtures for the sampling tests: real child processes and a real cgroup v1 memory cgroup."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import CHILD, MIB, Spawn


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


V1_MEMORY = Path("/sys/fs/cgroup/memory")


@pytest.fixture
def v1_cgroup() -> Iterator[Path]:
    """A fresh ``/sys/fs/cgroup/memory/memmon-test-<random>`` with a 256 MiB limit, removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    if not (V1_MEMORY / "memory.usage_in_bytes").is_file() or not os.access(V1_MEMORY, os.W_OK):
        pytest.skip(f"{V1_MEMORY} is not a writable cgroup v1 memory mount")
    directory = V1_MEMORY / f"memmon-test-{uuid.uuid4().hex[:12]}"
    try:
        directory.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a v1 memory cgroup: {exc}")
    try:
        (directory / "memory.limit_in_bytes").write_text(str(256 * MIB))
        yield directory
    finally:
        # ``spawn`` kills and reaps its children when it is torn down first (request ``v1_cgroup`` before it);
        # whatever is still in the cgroup is killed here, and rmdir is retried until the kernel lets go.
        for pid in (directory / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                directory.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
