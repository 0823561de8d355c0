"""Notifications survive a spool that cannot be written: a real full tmpfs and a real ext4 gone read-only.

The agent runs in-process (real store, real spool, real aiohttp webhook receiver on 127.0.0.1); its state
directory is on a file system mounted for the test (root only) and unmounted in ``finally``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memmon.model import MemorySample
from tests.alerting.receivers import Receiver
from tests.samples import process_sample
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs or a loop device needs root")


class SettableSampler:
    """The target's RSS is whatever ``value`` (MB) says."""

    process = None
    cgroup = None
    target_label = "pid:42"

    def __init__(self, value: float) -> None:
        self.value = value

    def sample(self) -> MemorySample:
        return process_sample(self.value, at=time.time())


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted on a fresh directory, unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount))
    try:
        yield mount
    finally:
        _unmount(mount)


@pytest.fixture
def ext4_loop(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A 16 MiB ext4 on a loop device, mounted with errors=remount-ro: ``(mount point, loop device name)``."""
    for tool in ("mkfs.ext4", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is needed for the read-only file system test")
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with image.open("wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    _run("mkfs.ext4", "-q", "-F", str(image))
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True,
                            timeout=30).stdout.strip()  # fmt: skip
    try:
        _run("mount", "-o", "errors=remount-ro", device, str(mount))
        try:
            yield mount, os.path.basename(device)
        finally:
            _unmount(mount)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the file system has no byte left (ENOSPC); the file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:
        for chunk in (65536, 4096, 512, 1):
            while True:
                try:
                    handle.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def overrides(state: Path, receiver: Receiver) -> dict[str, Any]:
    return {
        "storage": {"state_dir": str(state)},
        "thresholds": {"memory_warning_mb": 100, "memory_critical_mb": 200, "memory_emergency_mb": 400,
                       "resolve_margin_ratio": 0},
        "alerting": {
            "webhook_url": receiver.url + "/hook",
            "rate_limit_seconds": 0,
            "delivery": {"timeout_seconds": 1, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
        },
    }  # fmt: skip


async def notify(sampler: SettableSampler, receiver: Receiver, value: float) -> None:
    """Move the target to ``value`` MB and wait until the receiver accepted one more notification."""
    expected = receiver.accepted + 1
    sampler.value = value
    await wait_until(lambda: receiver.accepted >= expected, within=15)


def break_ext4(device: str) -> bool:
    """Ask the kernel for an ext4 error on ``device`` (errors=remount-ro turns it read-only); False when this
    kernel has no such knob."""
    trigger = Path(f"/sys/fs/ext4/{device}/trigger_fs_error")
    if not trigger.exists():
        return False
    trigger.write_text("memmon test: remount read-only\n")
    return True


def spooled_rows(state: Path) -> int:
    """Rows in the spool file, read through a separate read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{state / 'spool.db'}?mode=ro", uri=True)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM spool").fetchone()
    return int(count)


async def test_full_state_dir_delivers_from_memory_and_spools_again(
    small_tmpfs: Path, start_agent, receiver: Receiver
) -> None:
    """With the state dir's tmpfs full, alerts are still delivered (from memory), /health shows the spool and
    the holding channel degraded, and once space is free the held notification is spooled and delivered."""
    sampler = SettableSampler(50)
    state = small_tmpfs / "state"
    agent = await start_agent(overrides(state, receiver), sampler=sampler)
    filler = fill(small_tmpfs)
    for value in (150, 50, 150, 50):  # firing, resolved, firing, resolved
        await notify(sampler, receiver, value)
    assert agent.monitor.telemetry.deliveries.value("webhook", "spool_error") >= 1
    _, health = await agent.get("/health")
    assert "alerting.spool" in health["degraded"]

    await receiver.down()
    sampler.value = 150
    await wait_until(lambda: agent.monitor.alert_channels()["webhook"].in_memory == 1, within=15)
    _, health = await agent.get("/health")
    channel = health["alert_channels"]["webhook"]
    assert (channel["state"], channel["pending"], channel["in_memory"]) == ("degraded", 1, 1)
    assert {"alerting.spool", "alerting.webhook"} <= set(health["degraded"])

    filler.unlink()
    await wait_until(lambda: "spool" not in agent.monitor.dispatcher.degraded(), within=20)
    report = agent.monitor.alert_channels()["webhook"]
    assert (report.in_memory, report.pending) == (0, 1)
    assert spooled_rows(state) == 1
    await receiver.up()
    await wait_until(lambda: agent.monitor.alert_channels()["webhook"].pending == 0, within=15)
    assert receiver.accepted == 5 and receiver.duplicates == 0


async def test_read_only_file_system_still_delivers(
    ext4_loop: tuple[Path, str], start_agent, receiver
) -> None:
    """When the kernel remounts the state dir's ext4 read-only (errors=remount-ro after a file system error),
    every notification still reaches the webhook and /health shows the spool degraded."""
    mount, device = ext4_loop
    sampler = SettableSampler(50)
    agent = await start_agent(overrides(mount / "state", receiver), sampler=sampler)
    if not break_ext4(device):
        pytest.skip(
            f"/sys/fs/ext4/{device}/trigger_fs_error is missing: this kernel cannot fake an ext4 error"
        )
    for value in (150, 50, 250, 50):  # warning firing/resolved, critical firing/resolved
        await notify(sampler, receiver, value)
    _, health = await agent.get("/health")
    assert "alerting.spool" in health["degraded"]
    assert agent.monitor.telemetry.deliveries.value("webhook", "spool_error") >= 1
