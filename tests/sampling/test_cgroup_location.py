"""Finding a memory cgroup: from /proc/<pid>/cgroup + mountinfo, from --cgroup PATH, and from --unit NAME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memmon.sampling import CgroupLocation, SourceUnavailable, cgroup_at, cgroup_of_unit, locate_cgroup_of

from .support import FIXTURES, proc_tree

CGROUP_V2 = FIXTURES / "cgroup_v2"
CGROUP_V1 = FIXTURES / "cgroup_v1"
DOCKER_ID = "3f0a9c2d8e41b7a65c09d2e4f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f3a5"
SELF_MOUNTINFO = Path("/proc/self/mountinfo")


def _real_v1_memory_path() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return None


def test_v2_process_is_found_in_the_unified_hierarchy(tmp_path: Path) -> None:
    """A "0::/path" line under a cgroup2 mount whose cgroup has memory.current gives a v2 location."""
    proc = proc_tree(tmp_path, "v2", {"/sys/fs/cgroup": CGROUP_V2})
    location = locate_cgroup_of(4242, proc_root=proc)
    assert location == CgroupLocation(
        CGROUP_V2 / "system.slice" / "app.service", 2, "/system.slice/app.service"
    )


def test_v2_without_memory_controller_is_unavailable(tmp_path: Path) -> None:
    """A v2 cgroup without memory.current (controller not enabled) and no v1 memory is SourceUnavailable."""
    proc = proc_tree(tmp_path, "v2", {"/sys/fs/cgroup": CGROUP_V2})
    with pytest.raises(SourceUnavailable, match=r"nomem\.service has no memory controller"):
        locate_cgroup_of(4243, proc_root=proc)


def test_v1_namespaced_mount_maps_through_the_mount_root(tmp_path: Path) -> None:
    """A Docker v1 mount of root /docker/<id> at /sys/fs/cgroup/memory maps /docker/<id> to that dir."""
    container = CGROUP_V1 / "docker_container"
    proc = proc_tree(tmp_path, "v1_docker", {"/sys/fs/cgroup/memory": container})
    location = locate_cgroup_of(4242, proc_root=proc)
    assert location == CgroupLocation(container, 1, f"/docker/{DOCKER_ID}")


def test_hybrid_host_without_v2_memory_uses_v1(tmp_path: Path) -> None:
    """With v2 mounted but without the memory controller (as on this machine), the v1 memory line is used."""
    proc = proc_tree(
        tmp_path,
        "hybrid",
        {"/sys/fs/cgroup/unified": CGROUP_V2, "/sys/fs/cgroup/memory": CGROUP_V1},
    )
    assert locate_cgroup_of(4242, proc_root=proc) == CgroupLocation(CGROUP_V1 / "unlimited", 1, "/unlimited")


def _container_proc(tmp_path: Path, fstype: str, own_root: str, their_root: str, their_path: str) -> Path:
    """A /proc where memmon's container and the target's container each mount only their own cgroup at the same
    /sys/fs/cgroup[/memory] (podman and Docker do; recorded shape of mountinfo), pid 4242 being the target."""
    mount_point, super_options = (
        ("/sys/fs/cgroup", "rw") if fstype == "cgroup2" else ("/sys/fs/cgroup/memory", "rw,memory")
    )

    def mountinfo(root: str) -> str:
        return (
            "1067 1016 0:74 / / rw,relatime - overlay overlay rw\n"
            f"1080 1067 0:30 {root} {mount_point} ro,nosuid,nodev,noexec,relatime - {fstype} cgroup {super_options}\n"
        )

    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(mountinfo(own_root))
    (proc / "4242").mkdir()
    (proc / "4242" / "mountinfo").write_text(mountinfo(their_root))
    line = f"0::{their_path}" if fstype == "cgroup2" else f"11:memory:{their_path}"
    (proc / "4242" / "cgroup").write_text(line + "\n")
    # The target's root file system, where its own mount shows its own cgroup's files.
    theirs = tmp_path / "their-root"
    (theirs / mount_point.lstrip("/")).mkdir(parents=True)
    usage = "memory.current" if fstype == "cgroup2" else "memory.usage_in_bytes"
    (theirs / mount_point.lstrip("/") / usage).write_text("1048576\n")
    (proc / "4242" / "root").symlink_to(theirs)
    # What memmon's own identical mount point shows (its own container's cgroup) must not be taken for theirs.
    return proc


def _v1_sidecar_proc(tmp_path: Path) -> Path:
    """The v1 layout of podman's containers: each mounts its own ``/libpod_parent/libpod-<id>``."""
    return _container_proc(
        tmp_path,
        "cgroup",
        "/libpod_parent/libpod-sidecar",
        "/libpod_parent/libpod-app",
        "/libpod_parent/libpod-app",
    )


def test_a_process_of_another_container_is_found_through_its_own_root_v1(tmp_path: Path) -> None:
    """Sidecar, v1: the app's cgroup is under none of memmon's mounts, so it is read at /proc/<pid>/root plus the
    app's own mount point, never at that mount point in memmon's namespace (memmon's own container there)."""
    proc = _v1_sidecar_proc(tmp_path)
    location = locate_cgroup_of(4242, proc_root=proc)
    assert location == CgroupLocation(
        proc / "4242" / "root" / "sys" / "fs" / "cgroup" / "memory", 1, "/libpod_parent/libpod-app"
    )


def test_a_process_of_another_cgroup_namespace_is_found_through_its_own_root_v2(tmp_path: Path) -> None:
    """Sidecar, v2 with private cgroup namespaces: the app's path reads ``/../libpod-app`` from memmon's namespace
    and its own mount's root the same; the match gives the app's /sys/fs/cgroup through /proc/<pid>/root."""
    proc = _container_proc(tmp_path, "cgroup2", "/", "/../libpod-app", "/../libpod-app")
    location = locate_cgroup_of(4242, proc_root=proc)
    assert location == CgroupLocation(proc / "4242" / "root" / "sys" / "fs" / "cgroup", 2, "/libpod-app")


def test_another_containers_process_without_a_reachable_root_is_unavailable(tmp_path: Path) -> None:
    """When /proc/<pid>/root cannot be reached (another user's process, or gone), the app's cgroup is unavailable
    rather than memmon's own container's cgroup mistaken for it."""
    proc = _v1_sidecar_proc(tmp_path)
    (proc / "4242" / "root").unlink()
    with pytest.raises(SourceUnavailable, match=r"libpod-app is under no cgroup v1 memory mount"):
        locate_cgroup_of(4242, proc_root=proc)


def test_unknown_pid_is_unavailable(tmp_path: Path) -> None:
    """A pid without /proc/<pid>/cgroup raises SourceUnavailable naming the file."""
    with pytest.raises(SourceUnavailable, match=r"cgroup of pid 999: .*No such file or directory"):
        locate_cgroup_of(999, proc_root=tmp_path)


def test_own_process_on_this_machine() -> None:
    """memmon's own cgroup is auto-detected from the real /proc/self files (a v1 memory path here)."""
    path = _real_v1_memory_path()
    if path is None or Path("/sys/fs/cgroup/memory.current").exists():
        pytest.skip("this machine has no cgroup v1 memory hierarchy")
    location = locate_cgroup_of()
    assert location.version == 1
    assert location.name == path
    assert (location.directory / "memory.usage_in_bytes").is_file()
    assert locate_cgroup_of(os.getpid()) == location


def test_cgroup_at_directory_under_a_mount(tmp_path: Path) -> None:
    """--cgroup with a directory: the version comes from its files, the name from the mount it lies under."""
    proc = proc_tree(tmp_path, "v2", {"/sys/fs/cgroup": CGROUP_V2})
    directory = CGROUP_V2 / "system.slice" / "limited.service"
    location = cgroup_at(directory, mountinfo=proc / "4242" / "mountinfo")
    assert location == CgroupLocation(directory, 2, "/system.slice/limited.service")


def test_cgroup_at_hierarchy_path_uses_the_memory_mount(tmp_path: Path) -> None:
    """--cgroup /system.slice/x goes under the memory-capable mount (v2: cgroup.controllers has memory)."""
    proc = proc_tree(tmp_path, "v2", {"/sys/fs/cgroup": CGROUP_V2})
    location = cgroup_at("/system.slice/app.service", mountinfo=proc / "4242" / "mountinfo")
    assert location == CgroupLocation(
        CGROUP_V2 / "system.slice" / "app.service", 2, "/system.slice/app.service"
    )


def test_cgroup_at_hierarchy_path_through_a_namespaced_mount(tmp_path: Path) -> None:
    """A hierarchy path below a v1 mount root /docker/<id> lands under that mount point."""
    container = CGROUP_V1 / "docker_container"
    proc = proc_tree(tmp_path, "v1_docker", {"/sys/fs/cgroup/memory": container})
    location = cgroup_at(f"/docker/{DOCKER_ID}/worker", mountinfo=proc / "4242" / "mountinfo")
    assert location == CgroupLocation(container / "worker", 1, f"/docker/{DOCKER_ID}/worker")
    with pytest.raises(SourceUnavailable, match="no memory-capable cgroup mount"):
        cgroup_at("/system.slice/other.service", mountinfo=proc / "4242" / "mountinfo")


def test_cgroup_at_not_yet_created_directory_takes_the_mounts_version() -> None:
    """A directory that does not exist yet under the real v1 memory mount is a v1 location."""
    if _real_v1_memory_path() is None:
        pytest.skip("this machine has no cgroup v1 memory hierarchy")
    location = cgroup_at("/sys/fs/cgroup/memory/memmon-not-created/app")
    assert location == CgroupLocation(
        Path("/sys/fs/cgroup/memory/memmon-not-created/app"), 1, "/memmon-not-created/app"
    )


def test_cgroup_at_non_memory_v1_mount_is_unavailable() -> None:
    """A directory under a v1 hierarchy without the memory controller is refused with the reason."""
    if _real_v1_memory_path() is None or not Path("/sys/fs/cgroup/cpu").is_dir():
        pytest.skip("this machine has no cgroup v1 cpu hierarchy")
    with pytest.raises(SourceUnavailable, match="without the memory controller"):
        cgroup_at("/sys/fs/cgroup/cpu/memmon-not-created")


def test_unit_without_systemd_falls_back_to_system_slice() -> None:
    """Without systemctl, --unit NAME is /system.slice/NAME.service (a suffix already given is kept)."""
    if _real_v1_memory_path() is None:
        pytest.skip("this machine has no cgroup v1 memory hierarchy")
    missing = "memmon-test-no-such-systemctl"
    assert cgroup_of_unit("app", systemctl=missing).name == "/system.slice/app.service"
    assert cgroup_of_unit("app.service", systemctl=missing).name == "/system.slice/app.service"
    assert cgroup_of_unit("batch.slice", systemctl=missing).name == "/system.slice/batch.slice"
    assert cgroup_of_unit("my.app", systemctl=missing).name == "/system.slice/my.app.service"
    location = cgroup_of_unit("app", systemctl=missing)
    assert location.directory == Path("/sys/fs/cgroup/memory/system.slice/app.service")
    assert location.version == 1


def test_unit_asks_systemctl_when_present(tmp_path: Path) -> None:
    """With systemctl answering, its ControlGroup path is used (here a fake systemctl script)."""
    proc = proc_tree(tmp_path, "v2", {"/sys/fs/cgroup": CGROUP_V2})
    systemctl = tmp_path / "systemctl"
    systemctl.write_text('#!/bin/sh\n[ "$4" = "web" ] && echo /system.slice/app.service\n')
    systemctl.chmod(0o755)
    location = cgroup_of_unit("web", systemctl=str(systemctl), mountinfo=proc / "4242" / "mountinfo")
    assert location.name == "/system.slice/app.service"
    assert location.version == 2
    # An empty answer (the unit is not running) falls back to the system.slice guess.
    other = cgroup_of_unit("idle", systemctl=str(systemctl), mountinfo=proc / "4242" / "mountinfo")
    assert other.name == "/system.slice/idle.service"


def test_unit_name_with_a_slash_is_rejected() -> None:
    """A unit name cannot smuggle a path."""
    with pytest.raises(ValueError, match="not a systemd unit name"):
        cgroup_of_unit("../etc")
