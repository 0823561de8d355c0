"""kind end-to-end fixtures: a throwaway kind cluster, the memmon image loaded into it, and the demo pod from
deploy/ (an app container with the memmon sidecar) running in it.

Everything here needs ``docker`` (a working daemon), ``kind`` and ``kubectl``; where they are missing every e2e
test is skipped at collection with the reason, and likewise while deploy/ has no manifests. Every command runs
with a time limit, and the cluster is deleted after the session whatever happened.

Settings (environment): ``MEMMON_E2E_IMAGE`` (default ``memmon:e2e``: used when present locally, else built from
the repository's Dockerfile), ``MEMMON_E2E_KEEP_CLUSTER=1`` (do not delete the cluster, for debugging).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
E2E_DIR = Path(__file__).resolve().parent
MANIFESTS = REPO / "deploy" / "k8s"
DOCKERFILES = (REPO / "Dockerfile", REPO / "deploy" / "docker" / "Dockerfile")
IMAGE = os.environ.get("MEMMON_E2E_IMAGE", "memmon:e2e")
SIDECAR = "memmon"
"""The name of the memmon container in the demo pod."""
NAMESPACE = "memmon-e2e"
"""Where manifests without a namespace of their own go."""

NO_RUNTIME = "kind end-to-end tests need a container runtime; none on this machine"
NO_KUBECTL = "kind end-to-end tests need kubectl; it is not on the PATH"
NO_MANIFESTS = "deploy/ has no Kubernetes manifests yet (expected deploy/k8s/*.yaml with the memmon sidecar)"


def run(
    *command: str,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with a time limit; with ``check``, a failure fails the test showing its output."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, input=input, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} did not finish within {timeout:g}s")
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _succeeds(*command: str, timeout: float) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def skip_reason() -> str | None:
    """Why the kind tests cannot run here (checked once: ``docker info``, ``kind version``, kubectl, deploy/)."""
    if shutil.which("docker") is None or shutil.which("kind") is None:
        return NO_RUNTIME
    if not _succeeds("docker", "info", timeout=30) or not _succeeds("kind", "version", timeout=15):
        return NO_RUNTIME
    if shutil.which("kubectl") is None:
        return NO_KUBECTL
    if not manifests():
        return NO_MANIFESTS
    return None


def manifests() -> list[Path]:
    """The demo manifests: deploy/k8s/*.yaml (and *.yml)."""
    if not MANIFESTS.is_dir():
        return []
    return sorted([*MANIFESTS.glob("*.yaml"), *MANIFESTS.glob("*.yml")])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every e2e test, with the reason, where kind cannot run."""
    ours = [item for item in items if E2E_DIR in Path(str(item.path)).resolve().parents]
    if not ours:
        return
    reason = skip_reason()
    if reason is not None:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass(frozen=True)
class Cluster:
    """A kind cluster and kubectl pointed at it."""

    name: str
    kubeconfig: Path

    def kubectl(
        self, *args: str, timeout: float = 60, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return run("kubectl", *args, timeout=timeout, check=check, input=input, env=env)

    def json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)


@dataclass(frozen=True)
class DemoPod:
    """The running demo pod that has the memmon sidecar."""

    name: str
    namespace: str
    service_account: str
    labels: dict[str, str]


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh kind cluster (``memmon-e2e-<random>``), deleted after the session."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    name = f"memmon-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    run(
        "kind",
        "create",
        "cluster",
        "--name",
        name,
        "--kubeconfig",
        str(kubeconfig),
        "--wait",
        "180s",
        timeout=420,
    )
    try:
        yield Cluster(name, kubeconfig)
    finally:
        if os.environ.get("MEMMON_E2E_KEEP_CLUSTER") != "1":
            run("kind", "delete", "cluster", "--name", name, timeout=180, check=False)


@pytest.fixture(scope="session")
def sidecar_image(kind_cluster: Cluster) -> str:
    """The memmon image (local ``MEMMON_E2E_IMAGE``, or built from the Dockerfile), loaded into the cluster."""
    if not _succeeds("docker", "image", "inspect", IMAGE, timeout=30):
        dockerfile = next((path for path in DOCKERFILES if path.is_file()), None)
        if dockerfile is None:
            pytest.skip(
                f"no {IMAGE} image and no Dockerfile to build it (looked for {', '.join(map(str, DOCKERFILES))})"
            )
        run("docker", "build", "-t", IMAGE, "-f", str(dockerfile), str(REPO), timeout=900)
    run("kind", "load", "docker-image", IMAGE, "--name", kind_cluster.name, timeout=300)
    return IMAGE


def _has_sidecar(spec: dict[str, Any]) -> bool:
    return any(container.get("name") == SIDECAR for container in spec.get("containers", []))


@pytest.fixture(scope="session")
def demo_pod(kind_cluster: Cluster, sidecar_image: str) -> DemoPod:
    """deploy/k8s applied (the memmon container switched to the e2e image), and its sidecar pod Ready."""
    cluster = kind_cluster
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("config", "set-context", "--current", f"--namespace={NAMESPACE}")
    cluster.kubectl("apply", "-f", str(MANIFESTS), timeout=120)

    workloads = cluster.json("get", "deployments,statefulsets,daemonsets,pods", "--all-namespaces")["items"]
    rollouts: list[tuple[str, str]] = []
    for item in workloads:
        metadata = item["metadata"]
        if metadata.get("ownerReferences"):
            continue  # a controller's pod: its owner is updated instead
        spec = item["spec"] if item["kind"] == "Pod" else item["spec"]["template"]["spec"]
        if not _has_sidecar(spec):
            continue
        target = f"{item['kind'].lower()}/{metadata['name']}"
        cluster.kubectl("set", "image", target, f"{SIDECAR}={sidecar_image}", "-n", metadata["namespace"])
        if item["kind"] != "Pod":
            rollouts.append((target, metadata["namespace"]))
    for target, namespace in rollouts:
        cluster.kubectl("rollout", "status", target, "-n", namespace, "--timeout=240s", timeout=260)

    deadline = time.monotonic() + 240
    while True:
        pods = cluster.json("get", "pods", "--all-namespaces")["items"]
        for pod in pods:
            conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if (
                _has_sidecar(pod["spec"])
                and conditions.get("Ready") == "True"
                and not pod["metadata"].get("deletionTimestamp")
            ):
                return DemoPod(
                    name=pod["metadata"]["name"],
                    namespace=pod["metadata"]["namespace"],
                    service_account=pod["spec"].get("serviceAccountName", "default"),
                    labels=dict(pod["metadata"].get("labels", {})),
                )
        if time.monotonic() > deadline:
            pytest.fail(f"no Ready pod with a {SIDECAR!r} container within 240 s of applying {MANIFESTS}")
        time.sleep(3)
