"""The node's pods and containers from the cgroup tree: real cgroup v1 memory cgroups built in the kubelet's layouts
(systemd and cgroupfs drivers, kind's prefix), real processes for the main pid, a tmp tree for odd names."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memmon.sampling.kubepods import ContainerCgroup, PodCgroup, discover_pods, kubepods_root, main_pids
from tests.cgroups import V1_MEMORY, v1_memory_cgroup

UID_A, UID_B, UID_C, UID_D = (str(uuid.uuid4()) for _ in range(4))
ID1, ID2, ID3, ID4, ID5 = (uuid.uuid4().hex + uuid.uuid4().hex for _ in range(5))

Make = Callable[[str], Path]
"""``make("a/b/c")``: that cgroup (and its parents) created under the test's top cgroup."""


def _remove_tree(top: Path) -> None:
    """Every cgroup under ``top`` (not ``top``), bottom-up; their processes are moved to the hierarchy's root
    first (a cgroup with members cannot be removed: EBUSY)."""
    directories = sorted((Path(dirpath) for dirpath, _, _ in os.walk(top)), key=lambda p: len(p.parts))
    for directory in reversed(directories[1:]):
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (V1_MEMORY / "cgroup.procs").write_text(pid)
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def top() -> Iterator[Path]:
    """A fresh real v1 memory cgroup; everything made under it is removed bottom-up afterwards."""
    with v1_memory_cgroup(1 << 30, prefix="memmon-kubepods") as directory:
        try:
            yield directory
        finally:
            _remove_tree(directory)


@pytest.fixture
def make(top: Path) -> Make:
    """Create ``top/<relative>`` as real cgroups."""

    def create(relative: str) -> Path:
        directory = top / relative
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    return create


def _systemd_tree(make: Make, base: str = "systemd", prefix: str = "kubepods") -> Path:
    """A systemd-driver tree (containerd, CRI-O with its conmon scope, Docker; all three QoS classes; a pod with
    no container yet; names that are not pods or containers). Returns the kubepods slice."""
    root = f"{base}/{prefix}.slice" if prefix == "kubepods" else f"{base}/kubelet.slice/{prefix}.slice"
    burstable = f"{root}/{prefix}-burstable.slice"
    besteffort = f"{root}/{prefix}-besteffort.slice"
    a = f"{burstable}/{prefix}-burstable-pod{UID_A.replace('-', '_')}.slice"
    make(
        f"{a}/cri-containerd-{ID1}.scope/container"
    )  # a runtime's sub-cgroup: part of the container, not one
    make(f"{a}/cri-containerd-{ID2}.scope")
    make(f"{a}/something-else")
    b = f"{besteffort}/{prefix}-besteffort-pod{UID_B.replace('-', '_')}.slice"
    make(f"{b}/crio-{ID3}.scope")
    make(f"{b}/crio-conmon-{ID3}.scope")
    c = f"{root}/{prefix}-pod{UID_C.replace('-', '_')}.slice"
    make(f"{c}/docker-{ID4}.scope")
    make(f"{burstable}/{prefix}-burstable-pod{UID_D.replace('-', '_')}.slice")
    make(f"{root}/init.scope")
    make(f"{root}/{prefix}-system.slice")
    make(f"{burstable}/unrelated.slice")
    return make(root)


def _cgroupfs_tree(make: Make) -> Path:
    """The same pods in cgroupfs-driver names (containerd/Docker as bare ids, CRI-O as crio-<id>)."""
    root = "cgroupfs/kubepods"
    make(f"{root}/burstable/pod{UID_A}/{ID1}")
    make(f"{root}/burstable/pod{UID_A}/{ID2}")
    make(f"{root}/burstable/pod{UID_A}/{ID5[:12]}")  # a short hex name is not a container id
    make(f"{root}/besteffort/pod{UID_B}/crio-{ID3}")
    make(f"{root}/besteffort/pod{UID_B}/crio-conmon-{ID3}")
    make(f"{root}/pod{UID_C}/{ID4}")
    make(f"{root}/burstable/pod{UID_D}")
    make(f"{root}/guaranteed")
    make(f"{root}/besteffort/not-a-pod")
    return make(root)


def _expected(root: Path, names: dict[str, tuple[str, list[tuple[str, str, str]]]]) -> tuple[PodCgroup, ...]:
    """The pods ``discover_pods`` must give: uid -> (pod dir relative to root, [(container dir, id, runtime)])."""
    pods = []
    for uid, (pod_dir, containers) in names.items():
        qos = (
            "burstable"
            if "burstable" in pod_dir
            else "besteffort"
            if "besteffort" in pod_dir
            else "guaranteed"
        )
        directory = root / pod_dir
        rows = tuple(
            sorted(
                (
                    ContainerCgroup(container_id=cid, runtime=rt, directory=directory / d)
                    for d, cid, rt in containers
                ),
                key=lambda c: str(c.directory),
            )
        )
        pods.append(PodCgroup(uid=uid, qos=qos, directory=directory, containers=rows))
    return tuple(sorted(pods, key=lambda p: p.uid))


def test_systemd_driver_tree_gives_every_pod_and_container(make: Make, top: Path) -> None:
    """Systemd names: the three QoS classes, containerd/CRI-O/Docker scopes, UIDs with dashes, conmon and
    unknown names skipped, a pod without containers listed with none."""
    root = _systemd_tree(make)
    assert kubepods_root(top / "systemd") == root

    def slug(uid: str) -> str:
        return uid.replace("-", "_")

    expected = _expected(
        root,
        {
            UID_A: (
                f"kubepods-burstable.slice/kubepods-burstable-pod{slug(UID_A)}.slice",
                [
                    (f"cri-containerd-{ID1}.scope", ID1, "containerd"),
                    (f"cri-containerd-{ID2}.scope", ID2, "containerd"),
                ],
            ),
            UID_B: (
                f"kubepods-besteffort.slice/kubepods-besteffort-pod{slug(UID_B)}.slice",
                [(f"crio-{ID3}.scope", ID3, "crio")],
            ),
            UID_C: (f"kubepods-pod{slug(UID_C)}.slice", [(f"docker-{ID4}.scope", ID4, "docker")]),
            UID_D: (f"kubepods-burstable.slice/kubepods-burstable-pod{slug(UID_D)}.slice", []),
        },
    )
    assert discover_pods(top / "systemd") == expected


def test_cgroupfs_driver_tree_gives_the_same_pods(make: Make, top: Path) -> None:
    """cgroupfs names: bare 64-hex ids (runtime ""), crio-<id> without .scope, guaranteed pods under kubepods;
    a short hex name, crio-conmon and non-pod directories are skipped."""
    root = _cgroupfs_tree(make)
    assert kubepods_root(top / "cgroupfs") == root
    expected = _expected(
        root,
        {
            UID_A: (f"burstable/pod{UID_A}", [(ID1, ID1, ""), (ID2, ID2, "")]),
            UID_B: (f"besteffort/pod{UID_B}", [(f"crio-{ID3}", ID3, "crio")]),
            UID_C: (f"pod{UID_C}", [(ID4, ID4, "")]),
            UID_D: (f"burstable/pod{UID_D}", []),
        },
    )
    assert discover_pods(top / "cgroupfs") == expected


def test_kind_prefixed_tree_is_found_and_read(make: Make, top: Path) -> None:
    """kind's ``cgroupRoot: /kubelet``: kubelet.slice/kubelet-kubepods.slice with kubelet-kubepods-* names."""
    root = _systemd_tree(make, base="kind", prefix="kubelet-kubepods")
    assert kubepods_root(top / "kind") == root
    pods = discover_pods(top / "kind")
    assert [(p.uid, p.qos, len(p.containers)) for p in pods] == sorted(
        [(UID_A, "burstable", 2), (UID_B, "besteffort", 1), (UID_C, "guaranteed", 1), (UID_D, "burstable", 0)]
    )


def test_a_directory_without_kubepods_gives_none_and_no_pods(make: Make) -> None:
    """kubepods_root is None (and discover_pods empty) where there is no kubepods cgroup, real or plain dir."""
    empty = make("nothing/kubepods-lookalike.slice").parent
    assert kubepods_root(empty) is None
    assert discover_pods(empty) == ()
    assert kubepods_root(empty / "missing") is None


def test_kubepods_root_looks_at_the_unified_place_then_the_memory_controller(tmp_path: Path) -> None:
    """v1 puts kubepods under root/memory; root/kubepods.slice (v2 unified) wins when both exist."""
    (tmp_path / "memory" / "kubepods").mkdir(parents=True)
    assert kubepods_root(tmp_path) == tmp_path / "memory" / "kubepods"
    (tmp_path / "kubepods.slice").mkdir()
    assert kubepods_root(tmp_path) == tmp_path / "kubepods.slice"


def test_odd_names_on_a_plain_tree(tmp_path: Path) -> None:
    """Underscores become dashes; a static pod's hex UID is kept; files, dotted or empty UIDs are not pods."""
    root = tmp_path / "kubepods.slice"
    static = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    (root / f"kubepods-pod{static}.slice").mkdir(parents=True)
    (root / "kubepods-besteffort.slice" / "kubepods-besteffort-poda_b_c.slice").mkdir(parents=True)
    (root / "kubepods-besteffort.slice" / "kubepods-besteffort-pod.slice").mkdir()
    (root / "kubepods-besteffort.slice" / "kubepods-besteffort-poda.b.slice").mkdir()
    (root / "kubepods-pod1234.slice").write_text("a file is not a cgroup")
    (root / f"kubepods-pod{static}.slice" / f"cri-containerd-{ID1}.scope").write_text("nor here")
    pods = discover_pods(tmp_path)
    assert [(p.uid, p.qos, p.containers) for p in pods] == [
        (static, "guaranteed", ()),
        ("a-b-c", "besteffort", ()),
    ]


def _start_in(directory: Path) -> tuple[subprocess.Popen[str], int]:
    """A python process that joins ``directory`` and starts a child (which inherits the cgroup); (parent, child)."""
    code = (
        "import os, subprocess, sys, time\n"
        "open(os.path.join(sys.argv[1], 'cgroup.procs'), 'w').write(str(os.getpid()))\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    ready, _, _ = select.select([parent.stdout], [], [], 10)
    line = parent.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        parent.kill()
        parent.wait()
        raise RuntimeError(f"the process in {directory} did not start its child: {line!r}")
    return parent, int(line)


@contextlib.contextmanager
def _running_in(directory: Path) -> Iterator[tuple[int, int]]:
    """(parent pid, child pid) of a parent+child pair in ``directory``; both killed and reaped afterwards."""
    parent, child = _start_in(directory)
    try:
        yield parent.pid, child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait(timeout=10)
        assert parent.stdout is not None
        parent.stdout.close()


def test_main_pids_gives_the_process_whose_parent_is_outside(make: Make) -> None:
    """A container cgroup with a parent and its child: the parent (started from outside) is the main process."""
    scope = make(f"systemd/kubepods.slice/kubepods-pod{UID_A}.slice/cri-containerd-{ID1}.scope")
    with _running_in(scope) as (parent, child):
        members = {int(pid) for pid in (scope / "cgroup.procs").read_text().split()}
        assert members == {parent, child}
        assert main_pids(scope) == (parent,)


def test_main_pids_counts_the_members_of_sub_cgroups(make: Make) -> None:
    """Processes in ``<scope>/container`` (crun under systemd) are the container's: the scope has no member."""
    scope = make(f"systemd/kubepods.slice/kubepods-pod{UID_A}.slice/crio-{ID3}.scope")
    inner = make(f"systemd/kubepods.slice/kubepods-pod{UID_A}.slice/crio-{ID3}.scope/container")
    with _running_in(inner) as (parent, _child):
        assert (scope / "cgroup.procs").read_text().split() == []
        assert main_pids(scope) == (parent,)


def test_main_pids_of_an_empty_or_removed_cgroup_is_empty(make: Make) -> None:
    """No member, or no cgroup at all: no main process, no error."""
    scope = make(f"cgroupfs/kubepods/pod{UID_B}/{ID2}")
    assert main_pids(scope) == ()
    scope.rmdir()
    assert main_pids(scope) == ()


def test_a_pod_removed_between_walks_is_gone_from_the_next(make: Make, top: Path) -> None:
    """Removing a pod's cgroups (the kubelet deleting it) drops it from the next walk; the others stay."""
    _systemd_tree(make)
    before = discover_pods(top / "systemd")
    gone = next(p for p in before if p.uid == UID_A)
    _remove_tree(gone.directory)
    gone.directory.rmdir()
    after = discover_pods(top / "systemd")
    assert [p.uid for p in after] == [p.uid for p in before if p.uid != UID_A]
    assert after == tuple(p for p in before if p.uid != UID_A)


def test_pods_created_and_removed_during_walks_never_raise(make: Make, top: Path) -> None:
    """A thread creating and removing pod and container cgroups while walks run: every walk returns; a pod
    seen is either the steady one or the churning one (with 0 or 1 container), nothing else."""
    root = make("churn/kubepods.slice")
    steady = make(f"churn/kubepods.slice/kubepods-pod{UID_C}.slice/docker-{ID4}.scope").parent
    pod = root / "kubepods-burstable.slice" / f"kubepods-burstable-pod{UID_A}.slice"
    container = pod / f"cri-containerd-{ID1}.scope"
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                container.mkdir(parents=True)
                container.rmdir()
                pod.rmdir()
                pod.parent.rmdir()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    worker = threading.Thread(target=churn)
    worker.start()
    walks = 0
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline or walks < 50:
            for found in discover_pods(top / "churn"):
                if found.uid == UID_C:
                    assert found.directory == steady and len(found.containers) == 1
                else:
                    assert found.uid == UID_A and len(found.containers) <= 1
            walks += 1
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not errors, errors
