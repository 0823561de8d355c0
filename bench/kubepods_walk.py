"""One walk of a node's kubepods tree: ``discover_pods`` over 110 pods x 2 containers of real cgroups.

The kubelet's default maximum is 110 pods a node (``maxPods``). The script builds that many pods as real cgroup v1
memory cgroups under ``/sys/fs/cgroup/memory/memmon-bench-kubepods-<id>/``, in the systemd driver's names (a third
of the pods in each QoS class, ``cri-containerd-<id>.scope`` containers) and in the cgroupfs driver's
(``kubepods/<qos>/pod<uid>/<id>``), then times ``discover_pods`` (200 walks each, after 5 untimed ones) and prints
the median and p99 (nearest rank) per layout. The cgroups hold no process (the walk only lists directories, so
members change nothing). Everything it creates is removed at the end, on error and on Ctrl-C or SIGTERM too.

Usage: ``python bench/kubepods_walk.py [--pods 110] [--containers 2] [--walks 200]`` (root; a v1 memory mount).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from benchlib import percentile
from memmon.sampling.kubepods import discover_pods

V1_MEMORY = Path("/sys/fs/cgroup/memory")
QOS = ("guaranteed", "burstable", "besteffort")


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so the ``finally`` blocks clean up as on Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def _pod_paths(layout: str, pods: int, containers: int) -> Iterator[str]:
    """The container cgroups (relative paths) of ``pods`` pods in ``layout`` (``systemd`` or ``cgroupfs``)."""
    for i in range(pods):
        qos = QOS[i % len(QOS)]
        uid = str(uuid.uuid4())
        ids = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(containers)]
        if layout == "systemd":
            slug = uid.replace("-", "_")
            pod = (
                f"kubepods.slice/kubepods-pod{slug}.slice"
                if qos == "guaranteed"
                else f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{slug}.slice"
            )
            yield from (f"{pod}/cri-containerd-{cid}.scope" for cid in ids)
        else:
            pod = f"kubepods/pod{uid}" if qos == "guaranteed" else f"kubepods/{qos}/pod{uid}"
            yield from (f"{pod}/{cid}" for cid in ids)


def _remove(top: Path) -> None:
    """``top`` and every cgroup under it, bottom-up (empty cgroups: rmdir is all it takes)."""
    if not top.exists():
        return
    directories = sorted((Path(dirpath) for dirpath, _, _ in os.walk(top)), key=lambda p: len(p.parts))
    for directory in reversed(directories):
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()


@contextlib.contextmanager
def _tree(layout: str, pods: int, containers: int) -> Iterator[tuple[Path, float]]:
    """(the directory holding the kubepods tree, seconds it took to create) for one layout; removed afterwards."""
    top = V1_MEMORY / f"memmon-bench-kubepods-{uuid.uuid4().hex[:8]}"
    try:
        began = time.perf_counter()
        top.mkdir()
        for relative in _pod_paths(layout, pods, containers):
            (top / relative).mkdir(parents=True)
        yield top, time.perf_counter() - began
    finally:
        _remove(top)


def why_not_runnable() -> str | None:
    """None when this machine can run the benchmark, else the reason."""
    if os.geteuid() != 0:
        return "needs root (it creates cgroups)"
    if not (V1_MEMORY / "memory.usage_in_bytes").is_file() or not os.access(V1_MEMORY, os.W_OK):
        return f"{V1_MEMORY} is not a writable cgroup v1 memory mount"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--pods", type=int, default=110, help="pods on the node (default 110, maxPods' default)"
    )
    parser.add_argument("--containers", type=int, default=2, help="container cgroups a pod (default 2)")
    parser.add_argument("--walks", type=int, default=200, help="timed walks per layout (default 200)")
    args = parser.parse_args()
    reason = why_not_runnable()
    if reason:
        print(f"# kubepods_walk: not run on this machine: {reason}")
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    print(f"# discover_pods: {args.pods} pods x {args.containers} containers, real cgroup v1 memory cgroups")
    print(
        f"# {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, load {os.getloadavg()[0]:.2f}"
    )
    print()
    print("| layout | cgroups | create (s) | walk median (ms) | walk p99 (ms) | per pod median (µs) |")
    print("|---|---|---|---|---|---|")
    for layout in ("systemd", "cgroupfs"):
        with _tree(layout, args.pods, args.containers) as (top, created):
            for _ in range(5):
                found = discover_pods(top)
            if len(found) != args.pods or any(len(p.containers) != args.containers for p in found):
                raise RuntimeError(f"{layout}: found {len(found)} pods, expected {args.pods}")
            cgroups = sum(1 for _ in os.walk(top)) - 1
            times: list[float] = []
            for _ in range(args.walks):
                began = time.perf_counter()
                discover_pods(top)
                times.append(time.perf_counter() - began)
        median = statistics.median(times)
        print(
            f"| {layout} | {cgroups} | {created:.2f} | {median * 1e3:.2f} | {percentile(times, 0.99) * 1e3:.2f} "
            f"| {median / args.pods * 1e6:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
