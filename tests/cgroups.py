"""Real cgroup v1 memory cgroups for tests (root may create them on these machines)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

V1_MEMORY = Path("/sys/fs/cgroup/memory")


@contextlib.contextmanager
def v1_memory_cgroup(limit: int, *, prefix: str = "memmon-test") -> Iterator[Path]:
    """A fresh ``<V1_MEMORY>/<prefix>-<random>`` limited to ``limit`` bytes (swap included, where there is some);
    every process left in it is killed and the cgroup removed afterwards. Skips, saying why, where a test
    cannot create one (not root, no writable v1 memory hierarchy)."""
    if os.geteuid() != 0:
        pytest.skip("creating a cgroup needs root")
    if not (V1_MEMORY / "cgroup.event_control").is_file() or not os.access(V1_MEMORY, os.W_OK):
        pytest.skip(f"{V1_MEMORY} is not a writable cgroup v1 memory mount")
    directory = V1_MEMORY / f"{prefix}-{uuid.uuid4().hex[:12]}"
    try:
        directory.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a v1 memory cgroup: {exc}")
    try:
        (directory / "memory.limit_in_bytes").write_text(str(limit))
        with contextlib.suppress(
            OSError
        ):  # without it, swap (where there is some) would postpone the OOM kill
            (directory / "memory.memsw.limit_in_bytes").write_text(str(limit))
        yield directory
    finally:
        deadline = time.monotonic() + 10
        while directory.exists():
            with contextlib.suppress(OSError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                directory.rmdir()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not remove {directory}")
            time.sleep(0.05)
