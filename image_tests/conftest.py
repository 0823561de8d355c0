"""The container tier (`make test-image`): memmon's image built from the unchanged Dockerfile with podman and run
the way the README and the Helm chart run it.

scripts/image/setup.sh installs podman and builds the local stand-in for the Dockerfile's base image (it runs
first, from the session fixture too, so ``pytest image_tests`` alone works on a machine where root may install
packages). Every container a test starts is removed afterwards; a failing test's report carries each container's
log and state.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.prefork.servers import free_port

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "scripts" / "image" / "setup.sh"
CONTAINERS_CONF = REPO / "scripts" / "image" / "containers.conf"
IMAGE = "localhost/memmon:test"
USER = "65532:65532"
"""The image's numeric user (the Dockerfile's USER, the chart's runAsUser/runAsGroup)."""
RUN_AS_THE_CHART_DOES = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--user",
    USER,
    "--cap-drop=all",
    "--security-opt",
    "no-new-privileges",
)
"""The chart's containerSecurityContext as podman flags: read-only root (and no extra writable tmpfs podman would
add by default), uid/gid 65532, no capabilities, no privilege escalation."""

os.environ["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
PODMAN_CWD = Path(tempfile.mkdtemp(prefix="memmon-podman-"))
"""podman's working directory: conmon (podman 4.3) leaves an empty file named ``oom`` in the directory it was started
from when a container is OOM-killed (seen here: one in the checkout after each run of the control test)."""
atexit.register(shutil.rmtree, PODMAN_CWD, True)


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman; fail the test naming the command and its stderr when ``check`` and it fails."""
    try:
        done = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=PODMAN_CWD
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"podman {' '.join(args)} did not finish within {timeout:g} s")
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


@dataclass(frozen=True)
class BuiltImage:
    """The memmon image of this checkout and what building it took."""

    name: str
    build_seconds: float
    size_bytes: int


@pytest.fixture(scope="session")
def image() -> BuiltImage:
    """podman and the base ready (scripts/image/setup.sh), then the unchanged Dockerfile built as ``IMAGE``."""
    if shutil.which("podman") is None and os.geteuid() != 0:
        pytest.skip(
            "the container tier needs podman, which only root can install here (scripts/image/setup.sh)"
        )
    setup = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900, check=False)
    if setup.returncode != 0:
        pytest.fail(f"scripts/image/setup.sh exited {setup.returncode}:\n{setup.stderr}")
    revision = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    started = time.monotonic()
    # --network host: pip inside the builder reaches PyPI the way the host does (through its proxy and CA).
    podman(
        "build", "--pull=never", "--network", "host", "--build-arg", f"REVISION={revision or 'unknown'}",
        "-t", IMAGE, str(REPO), timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - started
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    return BuiltImage(IMAGE, seconds, size)


@dataclass
class Container:
    """One running container of a test: its name, host-side pid, published health port."""

    name: str
    health_port: int | None = None
    logs_seen: list[str] = field(default_factory=list)

    def inspect(self) -> dict[str, Any]:
        """``podman inspect`` of the container."""
        answer: list[dict[str, Any]] = json.loads(podman("inspect", self.name).stdout)
        return answer[0]

    @property
    def pid(self) -> int:
        """The container's first process as the host sees it."""
        return int(self.inspect()["State"]["Pid"])

    def logs(self) -> str:
        """stdout and stderr of the container so far."""
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def get(self, path: str = "/health", timeout: float = 5) -> Any:
        """GET a JSON endpoint of memmon's health API through the published port."""
        assert self.health_port is not None, f"{self.name} publishes no health port"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=timeout) as answer:
            return json.load(answer)

    def wait_healthy(self, timeout: float = 60) -> dict[str, Any]:
        """Poll /health until it answers 200; fail with the container's log after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer: dict[str, Any] = self.get("/health", timeout=2)
                return answer
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    pytest.fail(f"{self.name}: /health did not answer within {timeout:g} s:\n{self.logs()}")
                if not self.inspect()["State"]["Running"]:
                    pytest.fail(f"{self.name} exited before /health answered:\n{self.logs()}")
                time.sleep(0.2)


class Containers:
    """Starts containers for one test and removes them (and its volumes) at the end, logs attached on failure."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.prefix = f"memmon-it-{uuid.uuid4().hex[:8]}"
        self.started: list[Container] = []
        self.volumes: list[str] = []

    def volume(self, name: str) -> str:
        """A fresh named volume (removed at the end)."""
        full = f"{self.prefix}-{name}"
        podman("volume", "create", full)
        self.volumes.append(full)
        return full

    def run(
        self, name: str, options: Sequence[str], command: Sequence[str] = (), *, health: bool = True
    ) -> Container:
        """``podman run -d`` of ``IMAGE`` with ``options`` and ``command``; publishes 8080 on a free loopback port
        when ``health`` (and the options do not choose the network)."""
        container = Container(f"{self.prefix}-{name}")
        publish: list[str] = []
        if health and not any(option.startswith("--network") for option in options):
            container.health_port = free_port()
            publish = ["-p", f"127.0.0.1:{container.health_port}:8080"]
        self.started.append(container)
        podman("run", "-d", "--name", container.name, *publish, *options, IMAGE, *command)
        return container

    def remove(self) -> None:
        """Remove every container and volume of the test, attaching logs when the test failed."""
        failed = getattr(self.request.node, "rep_call", None)
        for container in self.started:
            if failed is not None and failed.failed:
                state = podman("inspect", "--format", "{{json .State}}", container.name, check=False).stdout
                self.request.node.add_report_section("call", container.name, f"{state}\n{container.logs()}")
            podman("rm", "-f", "-t", "0", container.name, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "-f", volume, check=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item (the containers fixture attaches logs when the call failed)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def containers(image: BuiltImage, request: pytest.FixtureRequest) -> Iterator[Containers]:
    """A container starter for the test; everything it started is removed afterwards."""
    starter = Containers(request)
    try:
        yield starter
    finally:
        starter.remove()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, *, log: Callable[[], str] | None = None
) -> None:
    """Poll ``condition`` every 0.2 s; fail naming ``what`` (and the log, if given) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached in {timeout:g} s: {what}" + (f"\n{log()}" if log else ""))
        time.sleep(0.2)


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Seconds the ``with`` body took, in the yielded list's only element once it ends."""
    elapsed: list[float] = []
    started = time.monotonic()
    try:
        yield elapsed
    finally:
        elapsed.append(time.monotonic() - started)
