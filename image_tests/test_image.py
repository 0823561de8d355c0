"""memmon's image run the way the README and the chart run it: a read-only root, uid 65532, no capabilities, a
memory limit, the state volume. It watches its own container: the container's limit, the volume its only write,
a clean stop on SIGTERM."""

from __future__ import annotations

import os
from pathlib import Path

from image_tests.conftest import (
    RUN_AS_THE_CHART_DOES,
    BuiltImage,
    Container,
    Containers,
    podman,
    stopwatch,
    wait_until,
)

LIMIT_MIB = 256
PSEUDO = ("/proc", "/sys", "/dev")
"""Kernel file systems (and the device tmpfs podman fills before the start): not where a program stores data."""


def run_self_watching(containers: Containers) -> Container:
    """memmon watching its own container, as the chart's sidecar runs it, checking every second."""
    state = containers.volume("state")
    options = [*RUN_AS_THE_CHART_DOES, "--memory", f"{LIMIT_MIB}m", "-v", f"{state}:/var/lib/memmon"]
    return containers.run("self", options, ["--check-interval", "1"])


def files_written_since(pid: int, since_ns: int) -> list[str]:
    """Every regular file in the container (seen from the host through /proc/PID/root) modified at or after
    ``since_ns``, outside the kernel's pseudo file systems."""
    root = f"/proc/{pid}/root"
    written = []
    for directory, subdirectories, files in os.walk(root):
        inside = directory[len(root) :] or "/"
        subdirectories[:] = [d for d in subdirectories if os.path.join(inside, d) not in PSEUDO]
        for name in files:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue  # gone since the listing (SQLite's journal, say)
            if info.st_mtime_ns >= since_ns and not os.path.islink(path):
                written.append(os.path.join(inside, name))
    return written


def test_image_answers_health_with_the_containers_own_limit(
    containers: Containers, image: BuiltImage
) -> None:
    """/health answers healthy from the read-only, non-root, capability-less container, and memmon judges its own
    container against the container's memory limit (limit_source cgroup), not the host's memory."""
    memmon = run_self_watching(containers)
    health = memmon.wait_healthy()
    assert health["status"] == "healthy", health
    assert health["target"] == "self", health
    # Read-only cgroupfs: no kernel notifications; the usage watcher and polling carry the checks.
    assert "kernel_events" in health["degraded"], health
    memory = memmon.get("/health/memory")
    assert memory["limit_source"] == "cgroup", memory
    assert memory["effective_limit_mb"] == LIMIT_MIB, memory
    status = Path(f"/proc/{memmon.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["65532"] * 4, fields["Uid"]
    assert fields["Gid"].split() == ["65532"] * 4, fields["Gid"]
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0, (
        fields["CapEff"],
        fields["CapBnd"],
    )
    assert fields["NoNewPrivs"].strip() == "1"
    assert image.size_bytes > 0


def test_the_state_volume_is_the_only_place_memmon_writes(containers: Containers) -> None:
    """After five checks have been stored in the history, every file written since the container started is in
    the state volume /var/lib/memmon, and the root file system is mounted read-only."""
    memmon = run_self_watching(containers)
    memmon.wait_healthy()
    started_ns = int(podman("inspect", "--format", "{{.State.StartedAt.UnixNano}}", memmon.name).stdout)
    wait_until(
        lambda: memmon.get("/health/metrics/history")["total"] >= 5,
        60,
        "5 samples in the history",
        log=memmon.logs,
    )
    mounts = Path(f"/proc/{memmon.pid}/mountinfo").read_text().splitlines()
    root_options = next(line.split()[5] for line in mounts if line.split()[4] == "/")
    assert "ro" in root_options.split(","), root_options
    written = files_written_since(memmon.pid, started_ns)
    assert any(path.startswith("/var/lib/memmon/memmon.db") for path in written), written
    outside = [path for path in written if not path.startswith("/var/lib/memmon/")]
    assert outside == [], outside
    assert "Read-only file system" not in memmon.logs()


def test_sigterm_stops_memmon_within_5_seconds_with_exit_code_0(containers: Containers) -> None:
    """``podman stop`` (SIGTERM, SIGKILL only after 30 s) ends memmon within 5 s, exit code 0, its stop logged."""
    memmon = run_self_watching(containers)
    memmon.wait_healthy()
    with stopwatch() as elapsed:
        podman("stop", "--time", "30", memmon.name, timeout=60)
    state = memmon.inspect()["State"]
    assert state["ExitCode"] == 0, state
    assert elapsed[0] < 5, f"stopping took {elapsed[0]:.1f} s"
    assert "memmon.service: stopped" in memmon.logs()
