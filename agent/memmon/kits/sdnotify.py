"""systemd notifications (``Type=notify``) with a plain datagram to ``$NOTIFY_SOCKET`` (sd_notify(3)):
``READY=1`` after the first sample, ``WATCHDOG=1`` from the check loop (at half of ``WATCHDOG_USEC``, so a hung
loop gets the agent restarted by systemd), ``STATUS=`` with the level and memory, ``STOPPING=1`` at shutdown.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


class SystemdNotifier:
    """Does nothing when ``NOTIFY_SOCKET`` is unset (not started by systemd with Type=notify)."""

    def __init__(
        self, environ: Mapping[str, str] = os.environ, *, monotonic: Callable[[], float] = time.monotonic
    ):
        address = environ.get("NOTIFY_SOCKET", "")
        # An address starting with "@" is in the abstract namespace: a leading NUL byte (unix(7)).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        self.watchdog_interval = (
            int(usec) / 2e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        )
        self.monotonic = monotonic
        self._last_ping = float("-inf")
        self._ready = False
        self._status: str | None = None
        self.errors = 0

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a socket."""
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """One notification datagram; False (and counted) when it cannot be sent."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            self.errors += 1
            return False
        return True

    def checked(self, status: str) -> None:
        """After each check: READY=1 the first time, STATUS= when it changed, WATCHDOG=1 when due."""
        if not self.address:
            return
        lines = [] if self._ready else ["READY=1"]
        if status != self._status:
            lines.append(f"STATUS={status}")
        now = self.monotonic()
        if self.watchdog_interval is not None and now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            lines.append("WATCHDOG=1")
        if lines and self.send(*lines):
            self._ready, self._status = True, status

    def stopping(self) -> None:
        """STOPPING=1 at shutdown."""
        self.send("STOPPING=1", "STATUS=stopping")
