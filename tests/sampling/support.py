"""Helpers shared by the sampling tests: fixture paths, recorded /proc trees, the allocating child."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MIB = 1 << 20

Spawn = Callable[..., subprocess.Popen[str]]
"""The ``spawn`` fixture: ``spawn(marker, mib=50, cgroup=None)`` starts an allocating child, ready."""

# The child allocates (and touches: b"\x01" * n is written, unlike a calloc'ed bytearray) argv[2] MiB after
# optionally moving itself into the cgroup directory argv[3], then says "ready" and sleeps until killed.
CHILD = """
import os, sys, time
if len(sys.argv) > 3:
    with open(os.path.join(sys.argv[3], "cgroup.procs"), "w") as procs:
        procs.write(str(os.getpid()))
block = b"\\x01" * (int(sys.argv[2]) << 20)
sys.stdout.write("ready\\n")
sys.stdout.flush()
time.sleep(300)
"""


def proc_tree(tmp_path: Path, layout: str, mounts: Mapping[str, Path]) -> Path:
    """Copy ``fixtures/proc/<layout>`` to ``tmp_path`` and point its mountinfo mount points at fixture dirs.

    The recorded mountinfo files keep their real mount points (``/sys/fs/cgroup/memory``...); ``mounts`` maps
    each one to be redirected to a fixture tree, so the code under test finds the recorded cgroup files. Without a
    recorded ``self``, memmon's own mountinfo is the first process's (the same mount namespace).
    """
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES / "proc" / layout, root)
    for mountinfo in root.glob("*/mountinfo"):
        lines = []
        for line in mountinfo.read_text().splitlines():
            fields = line.split(" ")
            if fields[4] in mounts:
                fields[4] = str(mounts[fields[4]])
            lines.append(" ".join(fields))
        mountinfo.write_text("\n".join(lines) + "\n")
    own = root / "self" / "mountinfo"
    if not own.exists():  # memmon in the recorded processes' mount namespace (their container, or the host)
        own.parent.mkdir()
        shutil.copyfile(min(root.glob("[0-9]*/mountinfo")), own)
    return root


def wait_zombie(pid: int, timeout: float = 5.0) -> None:
    """Wait until an unreaped child has exited (its /proc/<pid>/stat state is Z)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not become a zombie")


def psi_off_reason() -> str:
    """Why this kernel has no memory pressure (PSI) to read, for a skip: nothing can be installed for it."""
    booted = Path("/proc/cmdline").read_text().split()
    why = (
        "booted with psi=0"
        if "psi=0" in booted
        else "built without CONFIG_PSI, or with CONFIG_PSI_DEFAULT_DISABLED and not booted with psi=1"
    )
    return f"PSI (memory pressure) is off on this kernel ({why}); nothing to install: boot with psi=1"
