"""The node's pods and containers, found in the cgroup tree the kubelet and the container runtime build.

The kubelet puts every pod in a cgroup under one "kubepods" cgroup, one level per QoS class except
Guaranteed, whose pods sit directly under it (kubernetes/kubernetes pkg/kubelet/cm/pod_container_manager_linux.go:
``podCgroupNamePrefix = "pod"``; qos_container_manager_linux.go: ``burstable``, ``besteffort``). The name depends
on the kubelet's cgroup driver (pkg/kubelet/cm/cgroup_manager_linux.go):

- cgroupfs: the names as they are: ``kubepods/burstable/pod<uid>``, ``kubepods/besteffort/pod<uid>``,
  ``kubepods/pod<uid>``.
- systemd: each level is a slice whose name repeats its parents' joined by ``-``, because systemd reads ``-`` as
  a step in the hierarchy; so the kubelet turns every ``-`` inside a component into ``_``
  (``ConvertCgroupNameToSystemd``: "systemd treats - as a step in the hierarchy, we convert all - to _"):
  ``kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice``, Guaranteed
  ``kubepods.slice/kubepods-pod<uid>.slice``. With ``cgroupRoot: /kubelet`` (kind's kubelet configuration) the
  same tree is ``kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable-pod<uid>.slice``: the prefix of
  every name is the kubepods slice's own name, so it is read from there.

Each container (the pod sandbox's "pause" container included) is a cgroup directly in its pod's, named by the
runtime:

- containerd's CRI plugin: systemd ``cri-containerd-<id>.scope`` (runc's ``slice:cri-containerd:<id>`` cgroups
  path), cgroupfs ``<pod>/<id>`` (containerd internal/cri getCgroupsPath: ``filepath.Join(cgroupsParent, id)``).
- CRI-O: systemd ``crio-<id>.scope``, cgroupfs ``crio-<id>``; beside it ``crio-conmon-<id>[.scope]`` holds the
  runtime's monitor process, not the container (cri-o internal/oci: ``createUnitName("crio-conmon", id)``),
  so it is skipped.
- Docker (cri-dockerd): systemd ``docker-<id>.scope``, cgroupfs ``<pod>/<id>``.

A bare name is a container only when it is 64 lowercase hex digits (the ids containerd and Docker generate: 32
random bytes, hex). Anything else (files, ``init.scope``, unknown directories, a runtime's sub-cgroup inside a
container's) is ignored. cgroup v1 has the same tree under each controller's mount; the memory controller's
(``/sys/fs/cgroup/memory``) is the one memmon reads.

The walk lists directories only (``os.scandir``: the kernel gives each entry's type, no ``stat`` a file) and reads
no file. A cgroup removed while it is walked (a pod deleted) fails with ENOENT (ENODEV for a kernfs node that went
away under an open directory): that part is skipped. Other errors (no permission) are raised.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC = Path("/proc")
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENODEV})
"""What a directory (or a process) that went away mid-walk fails with."""
_KUBEPODS_NAMES = ("kubepods.slice", "kubepods", "kubelet.slice/kubelet-kubepods.slice")
"""Where the kubepods cgroup is under a hierarchy's top: systemd driver, cgroupfs driver, kind's ``/kubelet``."""
_QOS_CLASSES = ("burstable", "besteffort")
"""The QoS classes that have their own level; Guaranteed pods sit directly under kubepods."""
_BARE_ID = re.compile(r"[0-9a-f]{64}")
_UID = re.compile(r"[0-9A-Za-z-]+")
"""A UUID, or the 32-hex md5 a static pod gets (pkg/kubelet/config/common.go ``applyDefaults``); nothing else."""
_SCOPE = re.compile(r"(cri-containerd|crio|docker)-([0-9A-Za-z]+)(\.scope)?")
_RUNTIMES = {"cri-containerd": "containerd", "crio": "crio", "docker": "docker"}


@dataclass(frozen=True)
class ContainerCgroup:
    """One container's cgroup directory in its pod's."""

    container_id: str
    """The runtime's id, without prefix or suffix (64 hex digits with the common runtimes)."""
    runtime: str
    """``containerd``, ``crio`` or ``docker`` from the name's prefix; ``""`` for a bare id (cgroupfs driver)."""
    directory: Path


@dataclass(frozen=True)
class PodCgroup:
    """One pod's cgroup directory and its containers' (the sandbox's included)."""

    uid: str
    """The pod UID as the API's ``metadata.uid`` (the systemd driver's ``_`` turned back into ``-``). A static
    pod's is the kubelet's hash of its manifest: its mirror pod in the API has another ``metadata.uid`` and this
    one in the ``kubernetes.io/config.mirror`` annotation (pkg/kubelet/pod/mirror_client.go)."""
    qos: str
    """``guaranteed``, ``burstable`` or ``besteffort``: the level the pod's cgroup is in."""
    directory: Path
    containers: tuple[ContainerCgroup, ...]
    """Sorted by directory. Includes the sandbox ("pause") container: only the API's containerStatuses say which
    id is an app container, so the caller filters by joining with them."""


def kubepods_root(root: Path = _CGROUP_ROOT) -> Path | None:
    """The kubepods directory under a cgroup mount (or under any directory given): v2 unified
    (``root/kubepods.slice`` or ``root/kubepods``), v1 (``root/memory/kubepods.slice`` or ``root/memory/kubepods``),
    kind's ``kubelet.slice/kubelet-kubepods.slice`` in either, or under ``root`` itself when it directly holds one
    (tests pass a sub-directory). None when there is none.

    The unified places come first: on a hybrid host (v1 controllers, an empty v2 at ``root/unified``) they do not
    exist, and on a v2 host ``root/memory`` does not."""
    for base in (root, root / "memory"):
        for name in _KUBEPODS_NAMES:
            candidate = base / name
            if candidate.is_dir():
                return candidate
    return None


def discover_pods(root: Path = _CGROUP_ROOT) -> tuple[PodCgroup, ...]:
    """Every pod and container cgroup under ``kubepods_root(root)``, sorted by uid; ``()`` when there is none.

    One directory walk, no file reads except listing; a directory vanishing mid-walk (a pod deleted) is skipped,
    never raised."""
    top = kubepods_root(root)
    if top is None:
        return ()
    systemd = top.name.endswith(".slice")
    prefix = top.name.removesuffix(".slice") + "-" if systemd else ""
    pods: list[PodCgroup] = []
    for name in _subdirectories(top):
        qos = _qos_slice(name, prefix) if systemd else (name if name in _QOS_CLASSES else None)
        if qos is not None:
            for pod_name in _subdirectories(top / name):
                uid = _pod_uid(pod_name, prefix + qos + "-" if systemd else "", systemd=systemd)
                if uid is not None:
                    pods.append(_pod(uid, qos, top / name / pod_name))
            continue
        uid = _pod_uid(name, prefix, systemd=systemd)
        if uid is not None:
            pods.append(_pod(uid, "guaranteed", top / name))
    pods.sort(key=lambda pod: (pod.uid, str(pod.directory)))
    return tuple(pods)


def main_pids(directory: Path, *, proc_root: Path = _PROC) -> tuple[int, ...]:
    """The container's main process(es), sorted: members of ``directory/cgroup.procs`` whose parent is not a
    member (the one the runtime's shim started). Empty when the cgroup is gone or empty.

    Members of sub-cgroups count too: crun under systemd on cgroup v2 puts the processes in ``<scope>/container``
    (the scope itself may have none). The pids are in the reader's PID namespace (cgroup.procs translates them;
    one it cannot show reads 0 and is dropped), so they are the host's only with ``hostPID``. A member that exits
    between the two reads is dropped; its children, re-parented to the shim (a child subreaper), become main."""
    members: set[int] = set()
    for cgroup in _cgroups_under(directory):
        try:
            text = (cgroup / "cgroup.procs").read_text()
        except OSError as exc:
            if exc.errno in _GONE:
                continue
            raise
        members.update(pid for pid in map(int, text.split()) if pid > 0)
    main: list[int] = []
    for pid in members:
        parent = _parent_pid(proc_root / str(pid) / "stat")
        if parent is not None and parent not in members:
            main.append(pid)
    return tuple(sorted(main))


def _subdirectories(directory: Path) -> list[str]:
    """The names of ``directory``'s sub-directories; ``[]`` when it went away."""
    try:
        with os.scandir(directory) as entries:
            return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError as exc:
        if exc.errno in _GONE:
            return []
        raise


def _cgroups_under(directory: Path) -> list[Path]:
    """``directory`` and every cgroup below it, parents first."""
    found = [directory]
    for current in found:
        found.extend(current / name for name in _subdirectories(current))
    return found


def _qos_slice(name: str, prefix: str) -> str | None:
    """``burstable`` for ``<prefix>burstable.slice`` (and so on), None for any other name."""
    if name.startswith(prefix) and name.endswith(".slice"):
        qos = name[len(prefix) : -len(".slice")]
        if qos in _QOS_CLASSES:
            return qos
    return None


def _pod_uid(name: str, prefix: str, *, systemd: bool) -> str | None:
    """The UID in ``<prefix>pod<uid>.slice`` (systemd; ``_`` back to ``-``) or ``pod<uid>`` (cgroupfs)."""
    if systemd:
        if not (name.startswith(prefix + "pod") and name.endswith(".slice")):
            return None
        uid = name[len(prefix) + 3 : -len(".slice")].replace("_", "-")
    else:
        if not name.startswith("pod"):
            return None
        uid = name[3:]
    return uid if _UID.fullmatch(uid) else None


def _pod(uid: str, qos: str, directory: Path) -> PodCgroup:
    """The pod at ``directory`` with its containers; none when it went away meanwhile."""
    containers = []
    for name in sorted(_subdirectories(directory)):  # sorted names: sorted directories, one parent
        container = _container(name, directory)
        if container is not None:
            containers.append(container)
    return PodCgroup(uid=uid, qos=qos, directory=directory, containers=tuple(containers))


def _container(name: str, pod: Path) -> ContainerCgroup | None:
    """The container whose cgroup is ``pod/name``, None for a name no runtime gives."""
    if _BARE_ID.fullmatch(name):
        return ContainerCgroup(container_id=name, runtime="", directory=pod / name)
    match = _SCOPE.fullmatch(name)
    # crio-conmon-<id> does not match: "conmon-<id>" is not an id (no "-" in ids); it is CRI-O's monitor.
    if match is None:
        return None
    return ContainerCgroup(
        container_id=match.group(2), runtime=_RUNTIMES[match.group(1)], directory=pod / name
    )


def _parent_pid(stat: Path) -> int | None:
    """Field 4 (ppid) of ``/proc/<pid>/stat`` (proc.rst, Table 1-4), after the ``(comm)`` that may hold spaces
    and parentheses; None when the process has gone."""
    try:
        text = stat.read_bytes()
    except OSError as exc:
        if exc.errno in (*_GONE, errno.ESRCH):
            return None
        raise
    return int(text.rsplit(b")", 1)[1].split()[1])
