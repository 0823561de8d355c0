"""One agent per state directory: the second is refused with exit 2 naming the holder (issue 13, item 16)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memmon.storage.lock import LOCK_FILENAME, StateDirBusy, StateDirLock
from tests.conftest import MonitorFactory
from tests.prefork.agent import running_agent
from tests.prefork.servers import free_port


def _second_agent(state_dir: str) -> subprocess.CompletedProcess[str]:
    port = free_port()
    argv = [sys.executable, "-m", "memmon", "--state-dir", state_dir, "--health-port", str(port)]
    argv += ["--prometheus-port", "0", "--check-interval", "0.5"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _holder_pid(state: Path) -> object:
    try:
        return json.loads((state / LOCK_FILENAME).read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


def _state_dir(args: list[str]) -> str:
    return args[args.index("--state-dir") + 1]


def test_second_agent_on_one_state_dir_exits_2_naming_the_holder() -> None:
    """A second agent on a state directory in use exits 2, naming the first one's pid and bind address."""
    with running_agent(["--check-interval", "0.5"]) as first:
        args = [str(arg) for arg in first.process.args]  # type: ignore[union-attr]
        state = _state_dir(args)
        second = _second_agent(state)
        assert first.process.poll() is None, "the first agent must keep running"
        holder = json.loads((Path(state) / LOCK_FILENAME).read_text())
    assert second.returncode == 2, second.stderr
    assert f"pid {first.process.pid}" in second.stderr
    assert f"127.0.0.1:{first.port}" in second.stderr
    assert "storage.state_dir" in second.stderr
    assert holder["pid"] == first.process.pid
    assert "Traceback" not in second.stderr


def test_lock_is_released_at_stop_and_by_a_killed_holder(tmp_path: Path) -> None:
    """The lock goes with its holder: after a clean stop, and after SIGKILL (a stale lock file blocks nobody)."""
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "memmon", "--state-dir", str(state), "--health-port", "0"]
    argv += ["--prometheus-port", "0", "--check-interval", "0.5"]
    log_path = tmp_path / "first.log"
    with log_path.open("wb") as log_file:
        first = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        lock = StateDirLock(state)
        deadline = time.monotonic() + 30
        while _holder_pid(state) != first.pid:  # the first agent holds the lock once its record appears
            assert first.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        with pytest.raises(StateDirBusy, match=f"pid {first.pid}"):
            lock.acquire()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        lock.acquire()  # the kernel dropped the dead holder's flock: the stale file is taken over
        assert json.loads((state / LOCK_FILENAME).read_text())["pid"] == os.getpid()
        lock.release()
        again = StateDirLock(state)
        again.acquire()
        again.release()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


async def test_two_monitors_in_one_process_cannot_share_a_state_dir(make_monitor: MonitorFactory) -> None:
    """Library mode too: a second monitor on the same state directory fails to start; the first is untouched."""
    first = make_monitor()
    second = make_monitor()
    await first.start_monitoring()
    try:
        with pytest.raises(StateDirBusy, match=f"pid {os.getpid()}"):
            await second.start_monitoring()
        assert first.monitoring_active
        assert not second.monitoring_active
        await first.check_now()
    finally:
        await first.stop_monitoring()
    await second.start_monitoring()  # free again once the first stopped
    await second.stop_monitoring()


def test_deleted_lock_file_is_locked_again(tmp_path: Path) -> None:
    """A lock file removed under a holder is recreated and locked at the next verify(): a newcomer is refused."""
    state = tmp_path / "state"
    holder = StateDirLock(state, bind="127.0.0.1:1")
    holder.acquire()
    try:
        (state / LOCK_FILENAME).unlink()
        holder.verify()
        with pytest.raises(StateDirBusy, match=re.escape("127.0.0.1:1")):
            StateDirLock(state).acquire()
    finally:
        holder.release()
