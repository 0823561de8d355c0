"""The container image: its size, how long it takes to build, and how long memmon in it takes to answer /health
and to stop, next to the same memmon started from the venv on the host (the baseline, measured in the same run).

Needs root and podman (``scripts/image/setup.sh`` installs them and the local stand-in for the base image, the same
as ``make test-image``). Runs the image as the README and the chart do: read-only root, uid 65532, no capabilities,
a 256 MiB limit, a fresh state volume, health port published on 127.0.0.1. Per run, alternating container and host
so the machine's noise hits both alike: time from ``podman run`` (or the host process's spawn) to the first 200 from
/health, memmon's RSS 2 s later, and time from SIGTERM to exit. Prints the medians and the slowest run.

Usage: ``python bench/image_startup.py [--quick] [--runs N] [--cold-build]`` (``--quick``: one run each, for the
smoke test, figures not meaningful; ``--cold-build``: also time one build of the image with no cached layers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import free_port, memmon_argv, status_kib, stop, wait_http

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = REPO / "scripts" / "image" / "containers.conf"
IMAGE = "localhost/memmon:bench"
BASE = "docker.io/library/python:3.11-slim-bookworm"
CHART_FLAGS = ["--read-only", "--read-only-tmpfs=false", "--user", "65532:65532", "--cap-drop=all",
               "--security-opt", "no-new-privileges", "--memory", "256m"]  # fmt: skip


def podman(*args: str, timeout: float = 900) -> str:
    """podman's stdout; RuntimeError with its stderr when it fails."""
    env = {"CONTAINERS_CONF": str(CONTAINERS_CONF), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def build(no_cache: bool) -> float:
    """Seconds to build the unchanged Dockerfile as ``IMAGE``."""
    started = time.monotonic()
    podman("build", "--pull=never", "--network", "host", *(["--no-cache"] if no_cache else []), "-t", IMAGE,
           str(REPO))  # fmt: skip
    return time.monotonic() - started


def container_run(index: int) -> tuple[float, int, float]:
    """One container: (seconds to /health 200, memmon's RSS KiB 2 s later, seconds from SIGTERM to exit)."""
    name, volume, port = f"memmon-bench-{index}", f"memmon-bench-{index}", free_port()
    podman("volume", "create", volume)
    try:
        started = time.monotonic()
        podman("run", "-d", "--name", name, *CHART_FLAGS, "-v", f"{volume}:/var/lib/memmon",
               "-p", f"127.0.0.1:{port}:8080", IMAGE)  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        ready = time.monotonic() - started
        time.sleep(2)
        pid = json.loads(podman("inspect", name))[0]["State"]["Pid"]
        rss = status_kib(int(pid))
        stopping = time.monotonic()
        podman("stop", "--time", "30", name)
        return ready, rss, time.monotonic() - stopping
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False)
        subprocess.run(["podman", "volume", "rm", "-f", volume], capture_output=True, check=False)


def host_run() -> tuple[float, int, float]:
    """The baseline: memmon from this venv on the host, same figures."""
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        started = time.monotonic()
        proc = subprocess.Popen(
            memmon_argv(port, state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=60)
            ready = time.monotonic() - started
            time.sleep(2)
            rss = status_kib(proc.pid)
            stopping = time.monotonic()
            stop(proc, timeout=30)
            return ready, rss, time.monotonic() - stopping
        finally:
            stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run each (smoke test)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--cold-build", action="store_true", help="also time a build without cached layers")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    subprocess.run(["bash", str(REPO / "scripts" / "image" / "setup.sh")], check=True, capture_output=True)
    cold = build(no_cache=True) if args.cold_build and not args.quick else None
    warm = build(no_cache=False)
    image_bytes = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE))
    base_bytes = int(podman("image", "inspect", "--format", "{{.Size}}", BASE))
    figures: dict[str, list[tuple[float, int, float]]] = {"container": [], "host": []}
    for index in range(runs):
        order = ("container", "host") if index % 2 == 0 else ("host", "container")
        for kind in order:
            figures[kind].append(container_run(index) if kind == "container" else host_run())
    print(f"image {IMAGE}: {image_bytes / 1e6:.0f} MB ({(image_bytes - base_bytes) / 1e6:.0f} MB on top of the "
          f"base stand-in {BASE}, {base_bytes / 1e6:.0f} MB)")  # fmt: skip
    print(
        f"build: {warm:.1f} s with cached layers"
        + (f", {cold:.1f} s from scratch" if cold is not None else "")
    )
    print(f"\n{runs} runs each, alternating\n")
    print(
        "| memmon | to /health 200, median | slowest | RSS 2 s later, median | SIGTERM to exit, median | slowest |"
    )
    print("|---|---|---|---|---|---|")
    medians: dict[str, float] = {}
    for kind, rows in figures.items():
        ready = [r[0] for r in rows]
        stops = [r[2] for r in rows]
        medians[kind] = statistics.median(ready)
        print(f"| {kind} | {medians[kind]:.2f} s | {max(ready):.2f} s | "
              f"{statistics.median(r[1] for r in rows) / 1024:.1f} MiB | {statistics.median(stops):.2f} s | "
              f"{max(stops):.2f} s |")  # fmt: skip
    print(f"\ncontainer start / host start: {medians['container'] / medians['host']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
