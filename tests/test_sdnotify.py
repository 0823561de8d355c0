"""systemd Type=notify: READY=1 after the first sample, WATCHDOG=1 from the check loop, STATUS=, STOPPING=1."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from memmon.kits.sdnotify import SystemdNotifier
from tests.test_cli import clean_env, free_port, memmon, stop, wait_ready


def receive_all(sock: socket.socket, seconds: float) -> list[str]:
    sock.settimeout(0.1)
    messages: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_agent_notifies_systemd_ready_watchdog_status_and_stopping(tmp_path: Path) -> None:
    """A memmon started with NOTIFY_SOCKET and WATCHDOG_USEC sends READY=1 with a STATUS once it has a sample,
    WATCHDOG=1 pings while checking, and STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        port = free_port()
        proc = memmon(
            "--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(tmp_path / "s"),
            "--check-interval", "0.05",
            env=clean_env(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="200000"),
        )  # fmt: skip
        wait_ready(port, proc)
        running = receive_all(sock, 1.0)
        code, _seconds, _err = stop(proc)
        stopping = receive_all(sock, 0.3)
    assert code == 0
    assert running[0].splitlines()[0] == "READY=1"
    assert running[0].splitlines()[1].startswith("STATUS=ok: self ")
    pings = sum("WATCHDOG=1" in message.splitlines() for message in running)
    assert 5 <= pings <= 15  # every 0.1 s (half of WATCHDOG_USEC) over about a second
    assert any("STOPPING=1" in message for message in stopping)


def test_notifier_is_silent_without_a_socket_and_handles_abstract_addresses() -> None:
    """No NOTIFY_SOCKET: nothing is sent; an '@' address is the abstract namespace (leading NUL)."""
    assert not SystemdNotifier({}).enabled and not SystemdNotifier({}).send("READY=1")
    name = f"memmon-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        notifier.checked("ok")
        sock.settimeout(1)
        assert sock.recv(100).decode() == "READY=1\nSTATUS=ok"
