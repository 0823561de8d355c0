"""memmon as a sidecar in a real (kind) cluster: the pod annotations, the Events, RBAC, and the eviction API.

The demo manifests in deploy/k8s are expected to run an app container next to the memmon sidecar with a warning
threshold low enough that memmon reports a level change soon after it starts. Without a container runtime (or
while deploy/ has no manifests) every test here is skipped at collection, with the reason (see conftest.py).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from memmon.actions.kubernetes import EVENT_REASONS, EvictRestart, KubeConfig, KubernetesClient
from memmon.model import Level

if (
    TYPE_CHECKING
):  # the fixtures' types, from e2e/conftest.py (only for annotations: nothing imports conftest)
    from conftest import Cluster, DemoPod

pytestmark = pytest.mark.timeout(1200)  # cluster creation and image build count against the first test

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 180, every: float = 3) -> T:
    """Poll ``probe`` until it gives something other than None; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def pod_object(cluster: Cluster, pod: DemoPod) -> dict[str, Any]:
    found: dict[str, Any] = cluster.json("get", "pod", pod.name, "-n", pod.namespace)
    return found


def pod_events(cluster: Cluster, pod: DemoPod) -> list[dict[str, Any]]:
    listed = cluster.json(
        "get",
        "events",
        "-n",
        pod.namespace,
        f"--field-selector=involvedObject.kind=Pod,involvedObject.name={pod.name}",
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


def test_sidecar_annotates_its_pod_and_emits_the_level_event(
    kind_cluster: Cluster, demo_pod: DemoPod
) -> None:
    """The sidecar sets memmon.io/level, /since (RFC 3339) and /reason on its pod, and a change emits its Event."""

    def annotations() -> dict[str, str] | None:
        found = pod_object(kind_cluster, demo_pod)["metadata"].get("annotations", {})
        return found if "memmon.io/level" in found else None

    found = wait_for("memmon.io/level on the demo pod", annotations)
    level = Level.parse(found["memmon.io/level"])
    assert RFC3339.match(found["memmon.io/since"]), found
    assert 0 < len(found["memmon.io/reason"]) <= 200
    if level == Level.OK:
        return  # no change yet: nothing to emit

    def level_event() -> dict[str, Any] | None:
        for event in pod_events(kind_cluster, demo_pod):
            if (
                event.get("reason") == EVENT_REASONS[level]
                and event.get("source", {}).get("component") == "memmon"
            ):
                return event
        return None

    event = wait_for(f"a {EVENT_REASONS[level]} Event on the demo pod", level_event, timeout=60)
    assert event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == pod_object(kind_cluster, demo_pod)["metadata"]["uid"]


@pytest.mark.parametrize(
    ("verb", "resource", "subresource"),
    [("patch", "pods", ""), ("create", "events", ""), ("create", "pods", "eviction")],
)
def test_service_account_may_make_the_three_calls(
    kind_cluster: Cluster, demo_pod: DemoPod, verb: str, resource: str, subresource: str
) -> None:
    """The chart's RBAC lets the pod's service account patch pods, create events and create pods/eviction."""
    subject = f"system:serviceaccount:{demo_pod.namespace}:{demo_pod.service_account}"
    command = ["auth", "can-i", verb, resource, "-n", demo_pod.namespace, f"--as={subject}"]
    if subresource:
        command.append(f"--subresource={subresource}")  # "pods/eviction" would name a pod called eviction
    answer = kind_cluster.kubectl(*command, check=False)
    what = f"{verb} {resource}" + (f"/{subresource}" if subresource else "")
    assert answer.stdout.strip() == "yes", f"{subject} may not {what}: {answer.stdout}{answer.stderr}"


def client_config(cluster: Cluster, pod: DemoPod, directory: Path) -> KubeConfig:
    """A KubeConfig for the demo pod from outside: the kind API server, its CA, a token of the pod's SA."""
    view = cluster.json("config", "view", "--raw", "--minify")
    server = view["clusters"][0]["cluster"]["server"]
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(base64.b64decode(view["clusters"][0]["cluster"]["certificate-authority-data"]))
    token = cluster.kubectl(
        "create", "token", pod.service_account, "-n", pod.namespace, "--duration=15m"
    ).stdout.strip()
    token_file = directory / "token"
    token_file.write_text(token)
    return KubeConfig(
        host=server,
        token=token,
        ca_file=str(ca_file),
        namespace=pod.namespace,
        pod=pod.name,
        token_file=str(token_file),
    )


PDB = """\
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: memmon-e2e-block
  namespace: {namespace}
spec:
  maxUnavailable: 0
  selector:
    matchLabels:
{labels}
"""


async def test_client_against_the_real_api_server(
    kind_cluster: Cluster, demo_pod: DemoPod, tmp_path: Path
) -> None:
    """Annotate, emit an Event and evict (blocked by a PDB, then allowed) with the pod's own service account.

    Runs last: it evicts the demo pod.
    """
    client = KubernetesClient(client_config(kind_cluster, demo_pod, tmp_path), timeout=10)
    try:
        await client.annotate_pod({"memmon.io/e2e": "checked"})
        assert pod_object(kind_cluster, demo_pod)["metadata"]["annotations"]["memmon.io/e2e"] == "checked"
        await client.annotate_pod({"memmon.io/e2e": None})
        assert "memmon.io/e2e" not in pod_object(kind_cluster, demo_pod)["metadata"].get("annotations", {})
        assert client.pod_uid == pod_object(kind_cluster, demo_pod)["metadata"]["uid"]

        await client.create_event("E2ECheck", "memmon e2e: an Event from the client", type="Normal")
        checks = [event for event in pod_events(kind_cluster, demo_pod) if event.get("reason") == "E2ECheck"]
        assert len(checks) == 1 and checks[0]["source"]["component"] == "memmon"

        if not demo_pod.labels:
            pytest.skip("the demo pod has no labels for a PodDisruptionBudget to select")
        labels = "\n".join(f"      {key}: {value!r}" for key, value in demo_pod.labels.items())
        kind_cluster.kubectl(
            "apply", "-f", "-", input=PDB.format(namespace=demo_pod.namespace, labels=labels)
        )
        try:
            blocked = await EvictRestart(client, attempts=2, backoff=0.5).restart("e2e: blocked")
            assert blocked.success is False
            assert blocked.error == "eviction blocked by a PodDisruptionBudget (429) after 2 attempts"
        finally:
            kind_cluster.kubectl(
                "delete", "pdb", "memmon-e2e-block", "-n", demo_pod.namespace, "--wait=true", timeout=60
            )

        evicted = await EvictRestart(client, attempts=5, backoff=1.0).restart("e2e: allowed")
        assert evicted.success is True, evicted.error
        assert evicted.detail["status"] in (200, 201)

        def gone_or_terminating() -> bool | None:
            answer = kind_cluster.kubectl(
                "get", "pod", demo_pod.name, "-n", demo_pod.namespace, "-o", "json", check=False
            )
            if answer.returncode != 0:
                return True  # already deleted
            return True if '"deletionTimestamp"' in answer.stdout else None

        wait_for("the evicted demo pod to terminate", gone_or_terminating, timeout=60)
    finally:
        await client.close()
