"""The ``systemd`` graceful-restart strategy: ``systemctl try-restart UNIT``.

``try-restart`` restarts the unit only if it is running (systemctl(1)), so a unit an operator stopped on purpose
stays stopped. systemd stops it with its own ``KillSignal``/``TimeoutStopSec``, i.e. the unit's graceful path.
"""

from __future__ import annotations

import asyncio
import shutil
import time

from memmon.model import ActionResult, frozen_mapping


class SystemdRestart:
    """Restarts one unit through systemctl (no D-Bus library needed)."""

    name = "restart:systemd"

    def __init__(self, unit: str, *, systemctl: str = "systemctl", timeout: float = 90.0) -> None:
        self.unit = unit
        self.systemctl = systemctl
        self.timeout = timeout

    async def restart(self, reason: str) -> ActionResult:
        """Run ``systemctl try-restart``; success when it exits 0."""
        started = time.time()
        executable = shutil.which(self.systemctl)
        error: str | None = None
        code: int | None = None
        output = ""
        if executable is None:
            error = f"{self.systemctl} not found: cannot restart {self.unit}"
        else:
            try:
                process = await asyncio.create_subprocess_exec(
                    executable, "try-restart", self.unit,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                async with asyncio.timeout(self.timeout):
                    raw, _ = await process.communicate()
                code, output = process.returncode, raw.decode(errors="replace").strip()[:300]
                if code != 0:
                    error = f"systemctl try-restart {self.unit} exited {code}: {output}"
            except TimeoutError:
                error = f"systemctl try-restart {self.unit} did not finish in {self.timeout:g}s"
            except OSError as exc:
                error = f"cannot run {executable}: {exc}"
        return ActionResult(
            action=self.name,
            success=error is None,
            started_at=started,
            duration_seconds=time.time() - started,
            detail=frozen_mapping({"unit": self.unit, "exit_code": code, "output": output, "reason": reason}),
            error=error,
        )
