"""Where a memory cgroup (v1 or v2) is: for a pid, for a path, for a systemd unit.

The limit that kills a container or a systemd unit is its cgroup's, not the host's memory. Finding the
directory takes two files (Documentation/admin-guide/cgroup-v2.rst, "Processes" and "Namespace"):

- ``/proc/<pid>/cgroup`` has one ``hierarchy-ID:controller-list:cgroup-path`` line per hierarchy. The v2
  (unified) hierarchy is the ``0::/path`` line; a v1 hierarchy lists its controllers, e.g. ``4:memory:/x``.
- ``/proc/<pid>/mountinfo`` (Documentation/filesystems/proc.rst, "/proc/<pid>/mountinfo") says where each
  hierarchy is mounted: field 4 (root) is the cgroup the mount shows, field 5 the mount point, and after
  the ``-`` separator come the filesystem type (``cgroup2`` or ``cgroup``) and the super options (which name a
  v1 hierarchy's controllers). A container with a cgroup namespace, or an old Docker bind mount, mounts a
  sub-tree: cgroup path ``/docker/abc/x`` under a mount with root ``/docker/abc`` is ``<mount point>/x``.

A v2 hierarchy is used when the memory controller is enabled for the cgroup (``memory.current`` exists, which
it does in every non-root cgroup of a hierarchy with the controller); otherwise the v1 memory hierarchy.
On a hybrid host (v2 mounted at ``/sys/fs/cgroup/unified`` without controllers) that is v1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memmon.sampling.base import SourceUnavailable

_MOUNTINFO = Path("/proc/self/mountinfo")
_UNIT_SUFFIXES = frozenset(
    {"service", "socket", "slice", "scope", "mount", "automount", "swap", "target", "timer", "path", "device"}
)


@dataclass(frozen=True)
class CgroupLocation:
    """A memory cgroup: its directory here, its hierarchy version, and its hierarchy-relative name."""

    directory: Path
    version: int
    name: str
    """The path inside the hierarchy, e.g. ``/system.slice/x.service`` (what ``/proc/<pid>/cgroup`` shows)."""


@dataclass(frozen=True)
class _Mount:
    """One cgroup line of mountinfo."""

    root: str
    mount_point: Path
    fstype: str
    super_options: frozenset[str]

    @property
    def v1_memory(self) -> bool:
        """A cgroup v1 hierarchy with the memory controller (``memory`` among the super options)."""
        return self.fstype == "cgroup" and "memory" in self.super_options

    def v2_memory(self) -> bool:
        """A cgroup2 mount whose top cgroup offers the memory controller (cgroup-v2.rst, "Enabling")."""
        if self.fstype != "cgroup2":
            return False
        if (self.mount_point / "memory.current").is_file():
            return True
        try:
            controllers = (self.mount_point / "cgroup.controllers").read_text().split()
        except OSError:
            return False
        return "memory" in controllers

    def directory_of(self, cgroup_path: str) -> Path | None:
        """The directory of ``cgroup_path`` under this mount, or None when the mount does not show it.

        A path with ``..`` lies outside the reader's cgroup namespace (cgroup-v2.rst, "Namespace"): no mount
        shows it.
        """
        if ".." in cgroup_path.split("/"):
            return None
        path = _normalize(cgroup_path)
        root = _normalize(self.root)
        if root == "/":
            rel = path.lstrip("/")
        elif path == root:
            rel = ""
        elif path.startswith(root + "/"):
            rel = path[len(root) + 1 :]
        else:
            return None
        return self.mount_point / rel if rel else self.mount_point


def _normalize(path: str) -> str:
    """``/a/b`` form: one leading slash, no trailing slash, no ``.``/``..`` left."""
    return os.path.normpath("/" + path.strip("/"))


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo`` octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _cgroup_mounts(mountinfo: Path) -> list[_Mount]:
    """The cgroup and cgroup2 mounts listed in a mountinfo file."""
    try:
        text = mountinfo.read_text(errors="replace")
    except OSError as exc:
        raise SourceUnavailable(f"cgroup: {mountinfo}: {exc.strerror or exc}") from exc
    mounts: list[_Mount] = []
    for line in text.splitlines():
        fields = line.split()
        # id parent major:minor root mount-point options [optional fields...] - fstype source super-options
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) <= sep + 1 or fields[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        super_options = fields[sep + 3] if len(fields) > sep + 3 else ""
        mounts.append(
            _Mount(
                root=_unescape(fields[3]),
                mount_point=Path(_unescape(fields[4])),
                fstype=fields[sep + 1],
                super_options=frozenset(super_options.split(",")),
            )
        )
    return mounts


def _place(cgroup_path: str, mounts: list[_Mount]) -> Path | None:
    """Where ``cgroup_path`` lies under the mount with the deepest matching root (existing dirs first)."""
    candidates = [
        (directory, len(_normalize(mount.root)))
        for mount in mounts
        if (directory := mount.directory_of(cgroup_path)) is not None
    ]
    candidates.sort(key=lambda item: (item[0].is_dir(), item[1]), reverse=True)
    return candidates[0][0] if candidates else None


def locate_cgroup_of(pid: int | str = "self", *, proc_root: Path = Path("/proc")) -> CgroupLocation:
    """The memory cgroup of ``pid`` from its ``cgroup`` file; v2 if it has memory.

    The path is placed under memmon's own cgroup mounts (``/proc/self/mountinfo``): right for memmon itself, for
    processes in its container, and for host processes when memmon runs on the host. A process in *another*
    container seen through a shared PID namespace (a sidecar) lies under none of memmon's mounts, which show only
    memmon's own container; its cgroup is then reached through that process's own mounts, as
    ``/proc/<pid>/root/<its mount point>`` (reading it needs ptrace read access to the process: the same user and
    no capability it lacks, proc(5) "/proc/pid/root"). The target's mount points are never read as paths in
    memmon's namespace: the same ``/sys/fs/cgroup/memory`` is a different cgroup there. Raises
    ``SourceUnavailable`` naming what is missing (the process, a memory hierarchy, a mount).
    """
    base = proc_root / str(pid)
    try:
        lines = (base / "cgroup").read_text(errors="replace").splitlines()
    except OSError as exc:
        raise SourceUnavailable(f"cgroup of pid {pid}: {base / 'cgroup'}: {exc.strerror or exc}") from exc
    own = _cgroup_mounts(proc_root / "self" / "mountinfo")
    v2_path: str | None = None
    v1_path: str | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    reasons: list[str] = []
    if v2_path is not None:
        directory = _place(v2_path, [m for m in own if m.fstype == "cgroup2"])
        if directory is None or not (directory / "memory.current").is_file():
            directory = _through_its_root(base, v2_path, lambda m: m.fstype == "cgroup2") or directory
        if directory is not None and (directory / "memory.current").is_file():
            return CgroupLocation(directory, 2, _normalize(v2_path))
        where = f"{directory}" if directory is not None else "no cgroup2 mount shows it"
        reasons.append(f"v2 cgroup {v2_path} has no memory controller ({where})")
    if v1_path is not None:
        directory = _place(v1_path, [m for m in own if m.v1_memory])
        if directory is None or not directory.is_dir():
            directory = _through_its_root(base, v1_path, lambda m: m.v1_memory) or directory
        if directory is not None:
            return CgroupLocation(directory, 1, _normalize(v1_path))
        reasons.append(f"v1 memory cgroup {v1_path} is under no cgroup v1 memory mount")
    if v2_path is None and v1_path is None:
        reasons.append("no memory hierarchy in /proc/<pid>/cgroup")
    raise SourceUnavailable(f"cgroup of pid {pid}: " + "; ".join(reasons))


def _through_its_root(base: Path, cgroup_path: str, wanted: Callable[[_Mount], bool]) -> Path | None:
    """``cgroup_path`` under the process's own mounts, reached through ``<base>/root``; None when no mount of the
    process shows it or the directory cannot be reached (another user's process, a process that has exited).

    A path outside the reader's cgroup namespace (``/../x``, cgroup-v2.rst "Namespace") is shown the same way in
    the process's mountinfo root, so a container at the root of its own mount matches it exactly.
    """
    if base.name == "self":
        return None
    try:
        mounts = [m for m in _cgroup_mounts(base / "mountinfo") if wanted(m)]
    except SourceUnavailable:
        return None
    for mount in mounts:
        inside = mount.mount_point if mount.root == cgroup_path else mount.directory_of(cgroup_path)
        if inside is None:
            continue
        directory = base / "root" / inside.relative_to("/")
        try:
            if directory.is_dir():
                return directory
        except OSError:  # EACCES: no ptrace read access to the process
            continue
    return None


def cgroup_at(path: str | Path, *, mountinfo: Path = _MOUNTINFO) -> CgroupLocation:
    """``--cgroup PATH``: a directory under a cgroup mount, or a hierarchy path (``/system.slice/x``).

    The version comes from the directory's files (``memory.current`` => 2, ``memory.usage_in_bytes`` => 1),
    or, when it does not exist yet, from the mount it lies under. A hierarchy-relative path is placed under
    the memory-capable mount (v2 preferred). Raises ``SourceUnavailable`` when no mount fits.
    """
    text = str(path)
    mounts = _cgroup_mounts(mountinfo)
    if text.startswith("/"):
        directory = Path(os.path.normpath(text))
        under = [m for m in mounts if directory == m.mount_point or m.mount_point in directory.parents]
        if under:
            mount = max(under, key=lambda m: len(m.mount_point.parts))
            return _location_in(directory, mount)
    name = _normalize(text)
    for version, candidates in (
        (2, [m for m in mounts if m.v2_memory()]),
        (1, [m for m in mounts if m.v1_memory]),
    ):
        placed = _place(name, candidates)
        if placed is not None:
            return CgroupLocation(placed, version, name)
    raise SourceUnavailable(f"cgroup {name}: no memory-capable cgroup mount in {mountinfo} shows it")


def _location_in(directory: Path, mount: _Mount) -> CgroupLocation:
    """The location of a directory under a known cgroup mount."""
    rel = directory.relative_to(mount.mount_point).as_posix()
    name = _normalize(_normalize(mount.root) + "/" + ("" if rel == "." else rel))
    if (directory / "memory.current").is_file():
        return CgroupLocation(directory, 2, name)
    if (directory / "memory.usage_in_bytes").is_file():
        return CgroupLocation(directory, 1, name)
    if mount.fstype == "cgroup2":
        return CgroupLocation(directory, 2, name)
    if mount.v1_memory:
        return CgroupLocation(directory, 1, name)
    raise SourceUnavailable(
        f"cgroup {directory}: lies under {mount.mount_point}, a cgroup v1 mount without the memory controller"
    )


def cgroup_of_unit(
    unit: str, *, systemctl: str = "systemctl", mountinfo: Path = _MOUNTINFO
) -> CgroupLocation:
    """``--unit NAME``: the unit's ControlGroup as systemd reports it, else ``/system.slice/NAME[.service]``.

    ``systemctl show --property=ControlGroup --value NAME`` is asked (5 s timeout) when ``systemctl`` is on
    PATH; it answers an empty string for a unit that is not running, which also falls back to the guess.
    """
    if not unit or "/" in unit:
        raise ValueError(f"not a systemd unit name: {unit!r}")
    path = _systemd_control_group(unit, systemctl)
    if path is None:
        suffix = unit.rpartition(".")[2]
        path = "/system.slice/" + (unit if "." in unit and suffix in _UNIT_SUFFIXES else f"{unit}.service")
    return cgroup_at(path, mountinfo=mountinfo)


def _systemd_control_group(unit: str, systemctl: str) -> str | None:
    """systemd's cgroup path for the unit; None when systemctl is absent, fails or says nothing."""
    executable = shutil.which(systemctl)
    if executable is None:
        return None
    try:
        completed = subprocess.run(
            [executable, "show", "--property=ControlGroup", "--value", unit],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    answer = completed.stdout.strip()
    return answer if completed.returncode == 0 and answer.startswith("/") else None


def cgroups_matching(pattern: str, *, unit: bool = False, mountinfo: Path = _MOUNTINFO) -> list[str]:
    """Hierarchy paths of the memory cgroups matching a glob, sorted, in the memory-capable hierarchy (v2
    preferred, as ``cgroup_at``).

    ``pattern`` is a hierarchy path with ``fnmatch`` wildcards (``/system.slice/*.service``; ``*`` does not cross
    ``/``). ``unit=True``: a unit-name pattern (``app-*.service``) matched against the last component of every
    cgroup in the tree (units nest in slices); a pattern without a unit suffix gets ``.service``. Empty when
    nothing matches or no mount shows the hierarchy.
    """
    mounts = _cgroup_mounts(mountinfo)
    mount = next((m for m in mounts if m.v2_memory()), None) or next((m for m in mounts if m.v1_memory), None)
    if mount is None:
        return []
    root = _normalize(mount.root)
    if unit:
        suffix = pattern.rpartition(".")[2]
        name = pattern if "." in pattern and suffix in _UNIT_SUFFIXES else f"{pattern}.service"
        found = [path for path in mount.mount_point.rglob(name) if path.is_dir()]
    else:
        relative = _normalize(pattern).lstrip("/")
        if pattern.startswith(f"{mount.mount_point}/"):  # a directory pattern (``/sys/fs/cgroup/app-*``)
            relative = pattern[len(f"{mount.mount_point}/") :]
        elif root != "/" and _normalize(pattern).startswith(root + "/"):
            relative = _normalize(pattern)[len(root) + 1 :]
        found = [path for path in mount.mount_point.glob(relative) if path.is_dir()] if relative else []
    names = {_normalize(root + "/" + path.relative_to(mount.mount_point).as_posix()) for path in found}
    return sorted(names)
