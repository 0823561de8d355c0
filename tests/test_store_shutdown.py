"""A state store that fails at shutdown is reported as failing, with what is dropped (issue 13, item 16)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.storage.store import MemoryStore
from tests.conftest import MonitorFactory


@contextlib.contextmanager
def _tmpfs(parent: Path) -> Iterator[Path]:
    """A fresh 4 MiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = parent / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    """Fill the file system to the last byte (a remount read-only is refused while SQLite holds files open
    for writing, EBUSY: a full disk is the failure a running agent meets)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def test_full_store_at_shutdown_says_what_is_dropped(
    make_monitor: MonitorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping with a full state store logs the dropped sample count, never "state store works again"."""
    caplog.set_level(logging.INFO, logger="memmon")
    with _tmpfs(tmp_path) as mount:
        monitor = make_monitor(
            {"storage": {"state_dir": str(mount / "state"), "flush_interval_seconds": 3600}}
        )
        await monitor.start_monitoring()
        try:
            await monitor.check_now()
            await monitor.recorder.flush()
            _fill(mount)
            for _ in range(3):
                await monitor.check_now()
            await monitor.recorder.flush()
            assert monitor.recorder.problem is not None, "a write to a full store must fail"
            buffered = len(monitor.recorder._pending)
            assert buffered >= 3
        finally:
            await monitor.stop_monitoring()
    text = caplog.text
    assert "works again" not in text
    assert f"{buffered} sample(s)" in text
    assert "dropped" in text


async def test_store_back_before_shutdown_keeps_the_buffered_samples(
    make_monitor: MonitorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Samples buffered while the store was full are written once it has room again: none is lost."""
    caplog.set_level(logging.INFO, logger="memmon")
    with _tmpfs(tmp_path) as mount:
        state = mount / "state"
        monitor = make_monitor({"storage": {"state_dir": str(state), "flush_interval_seconds": 3600}})
        await monitor.start_monitoring()
        checked: list[float] = []
        try:
            checked.append((await monitor.check_now()).sample.timestamp)
            await monitor.recorder.flush()
            filler = _fill(mount)
            for _ in range(3):
                checked.append((await monitor.check_now()).sample.timestamp)
            await monitor.recorder.flush()
            assert monitor.recorder.problem is not None
            filler.unlink()
        finally:
            await monitor.stop_monitoring()
        store = MemoryStore(state)
        store.open()
        try:
            stored = {point.timestamp for point in store.history(0)}
        finally:
            store.close()
    assert set(checked) <= stored
    assert "works again" in caplog.text
    assert "dropped" not in caplog.text
