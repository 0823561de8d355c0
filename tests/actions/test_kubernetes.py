"""The Kubernetes client, PodReporter and EvictRestart against the strict API server stand-in on 127.0.0.1."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from memmon.actions.eviction import EvictRestart
from memmon.actions.pod_reporter import PodReporter
from memmon.kits.kubeconfig import KubeConfig, why_not_in_cluster
from memmon.kits.kubernetes_client import KubeError, KubernetesClient
from memmon.model import Level
from tests.actions.kube_standin import NAMESPACE, POD, POD_UID, TOKEN, KubeStandin
from tests.alerting.receivers import make_self_signed_cert

T0 = 1705314600.0
"""2024-01-15T10:30:00Z"""
T0_TEXT = "2024-01-15T10:30:00Z"
EVENT_NAME = re.compile(rf"^{re.escape(POD)}\.[0-9a-f]+$")


class FakeSleep:
    """Records the delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_token(directory: Path, token: str) -> Path:
    path = directory / "token"
    path.write_text(token + "\n")
    return path


def config_for(api: KubeStandin, tmp_path: Path, *, token: str = TOKEN, pod: str = POD) -> KubeConfig:
    token_file = write_token(tmp_path, token)
    return KubeConfig(
        host=api.url, token=token, ca_file=None, namespace=NAMESPACE, pod=pod, token_file=str(token_file)
    )


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Callable[..., KubernetesClient]]:
    """Builds clients (wall clock fixed at T0) and closes them after the test."""
    made: list[KubernetesClient] = []

    def make(config: KubeConfig, *, monotonic: Callable[[], float] = time.monotonic) -> KubernetesClient:
        client = KubernetesClient(config, monotonic=monotonic, wall_clock=lambda: T0)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- configuration ---------------------------------------------------------------------------------------------


def service_account_dir(tmp_path: Path, *, namespace: str | None = "shop") -> Path:
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    write_token(sa_dir, "sa-token-1")
    (sa_dir / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n")
    if namespace is not None:
        (sa_dir / "namespace").write_text(namespace)
    return sa_dir


def test_in_cluster_reads_the_service_account_and_the_downward_api(tmp_path: Path) -> None:
    """In a pod: host from KUBERNETES_SERVICE_*, token/ca.crt/namespace from the SA dir, POD_NAME/POD_UID from env."""
    sa_dir = service_account_dir(tmp_path)
    environ = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "POD_NAME": POD,
        "POD_UID": POD_UID,
    }
    config = KubeConfig.in_cluster(environ, sa_dir)
    assert config == KubeConfig(
        host="https://10.96.0.1:443",
        token="sa-token-1",
        ca_file=str(sa_dir / "ca.crt"),
        namespace="shop",
        pod=POD,
        token_file=str(sa_dir / "token"),
        pod_uid=POD_UID,
    )
    assert why_not_in_cluster(environ, sa_dir) == ""

    ipv6 = {**environ, "KUBERNETES_SERVICE_HOST": "fd00::1", "POD_NAMESPACE": "other"}
    config = KubeConfig.in_cluster(ipv6, sa_dir)
    assert config is not None
    assert (config.host, config.namespace) == ("https://[fd00::1]:443", "other")


def test_override_env_reaches_an_api_server_from_outside(tmp_path: Path) -> None:
    """MEMMON_KUBE_API + MEMMON_KUBE_TOKEN_FILE work without KUBERNETES_SERVICE_HOST; no CA = system CAs."""
    token_file = write_token(tmp_path, "outside-token")
    environ = {
        "MEMMON_KUBE_API": "http://127.0.0.1:6443/",
        "MEMMON_KUBE_TOKEN_FILE": str(token_file),
        "POD_NAMESPACE": "shop",
        "POD_NAME": POD,
    }
    config = KubeConfig.in_cluster(environ, tmp_path / "no-such-dir")
    assert config is not None
    assert (config.host, config.token, config.ca_file, config.token_file) == (
        "http://127.0.0.1:6443",
        "outside-token",
        None,
        str(token_file),
    )


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_HOST is not set"),
        ("token", "no service-account token"),
        ("POD_NAME", "POD_NAME is not set"),
        ("namespace", "namespace is unknown"),
    ],
)
def test_not_in_a_cluster_gives_none_and_a_reason(tmp_path: Path, drop: str, expected: str) -> None:
    """Without the service host, the token file, POD_NAME or any namespace: None, and why_not_in_cluster says why."""
    sa_dir = service_account_dir(tmp_path)
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "POD_NAME": POD}
    environ.pop(drop, None)
    if drop in ("token", "namespace"):
        (sa_dir / drop).unlink()
    assert KubeConfig.in_cluster(environ, sa_dir) is None
    assert expected in why_not_in_cluster(environ, sa_dir)


def test_outside_any_cluster_by_default(tmp_path: Path) -> None:
    """An empty environment (this machine) is not a cluster, and the reason names the override variables."""
    assert KubeConfig.in_cluster({}, tmp_path) is None
    reason = why_not_in_cluster({}, tmp_path)
    assert "KUBERNETES_SERVICE_HOST" in reason and "MEMMON_KUBE_API" in reason


# -- the client and the reporter -------------------------------------------------------------------------------


async def test_level_change_annotates_the_pod_and_emits_an_event(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """A change to warning PATCHes three annotations (merge patch) and POSTs a Warning MemoryWarning Event."""
    client = make_client(config_for(kube_api, tmp_path))
    sleep = FakeSleep()
    reporter = PodReporter(client, clock=lambda: T0, sleep=sleep)

    assert await reporter.level_changed(Level.WARNING, Level.OK, "rss 812 MB >= warning 800 MB") is True

    patch, post = kube_api.requests
    assert (patch.method, patch.path, patch.content_type) == (
        "PATCH",
        f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}",
        "application/merge-patch+json",
    )
    assert patch.body == {
        "metadata": {
            "annotations": {
                "memmon.io/level": "warning",
                "memmon.io/since": T0_TEXT,
                "memmon.io/reason": "rss 812 MB >= warning 800 MB",
            }
        }
    }
    assert (post.method, post.path, post.content_type) == (
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/events",
        "application/json",
    )
    name = post.body["metadata"]["name"]
    assert EVENT_NAME.match(name)
    assert post.body == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": NAMESPACE,
            "name": POD,
            "uid": POD_UID,  # learnt from the PATCH's answer
        },
        "reason": "MemoryWarning",
        "message": "Memory level ok -> warning. rss 812 MB >= warning 800 MB",
        "type": "Warning",
        "source": {"component": "memmon"},
        "firstTimestamp": T0_TEXT,
        "lastTimestamp": T0_TEXT,
        "count": 1,
    }
    assert all(request.token == TOKEN for request in kube_api.requests)
    pod = await client.get_pod()
    assert pod["metadata"]["annotations"]["memmon.io/level"] == "warning"
    assert (
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "app"
    )  # merged, not replaced

    assert await reporter.level_changed(Level.OK, Level.CRITICAL, "rss 300 MB below every threshold") is True
    event = kube_api.events[-1]
    assert (event["reason"], event["type"]) == ("MemoryRecovered", "Normal")
    assert event["message"] == "Memory recovered: critical -> ok. rss 300 MB below every threshold"
    assert kube_api.annotations["memmon.io/level"] == "ok"
    assert (reporter.failures, reporter.last_error, sleep.delays) == (0, None, [])


@pytest.mark.parametrize(
    ("level", "reason"),
    [(Level.CRITICAL, "MemoryCritical"), (Level.EMERGENCY, "MemoryEmergency")],
)
async def test_event_reason_per_level(
    kube_api: KubeStandin,
    tmp_path: Path,
    make_client: Callable[..., KubernetesClient],
    level: Level,
    reason: str,
) -> None:
    """Critical and emergency emit Warning Events named MemoryCritical and MemoryEmergency."""
    reporter = PodReporter(make_client(config_for(kube_api, tmp_path)), clock=lambda: T0, sleep=FakeSleep())
    assert await reporter.level_changed(level, Level.WARNING, "rising") is True
    assert [(event["reason"], event["type"]) for event in kube_api.events] == [(reason, "Warning")]


async def test_long_reason_is_cut_to_200_characters_and_same_level_only_annotates(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """memmon.io/reason holds at most 200 characters on one line; level == previous sets annotations, no Event."""
    reporter = PodReporter(make_client(config_for(kube_api, tmp_path)), clock=lambda: T0, sleep=FakeSleep())
    assert await reporter.level_changed(Level.OK, Level.OK, "x" * 150 + "\n" + "y" * 150) is True
    reason = kube_api.annotations["memmon.io/reason"]
    assert len(reason) == 200 and "\n" not in reason and reason.endswith("…")
    assert kube_api.events == []


async def test_annotation_none_removes_the_key(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """A None value is sent as JSON null, which a merge patch turns into a removal."""
    client = make_client(config_for(kube_api, tmp_path))
    await client.annotate_pod({"memmon.io/level": "critical", "memmon.io/reason": "x"})
    await client.annotate_pod({"memmon.io/reason": None})
    assert kube_api.requests[-1].body == {"metadata": {"annotations": {"memmon.io/reason": None}}}
    assert "memmon.io/reason" not in kube_api.annotations
    assert kube_api.annotations["memmon.io/level"] == "critical"


async def test_restart_event_is_a_warning_graceful_restart(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """restart_event emits a Warning Event with reason GracefulRestart and the message given."""
    reporter = PodReporter(make_client(config_for(kube_api, tmp_path)), sleep=FakeSleep())
    assert await reporter.restart_event("evicting: emergency for 30 s") is True
    (event,) = kube_api.events
    assert (event["reason"], event["type"], event["message"]) == (
        "GracefulRestart",
        "Warning",
        "evicting: emergency for 30 s",
    )


async def test_event_retry_with_the_same_name_counts_as_created(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """Re-sending an Event by name (its first answer lost) meets 409 AlreadyExists, which counts as created."""
    client = make_client(config_for(kube_api, tmp_path))
    name = client.new_event_name()
    await client.create_event("MemoryWarning", "one", type="Warning", name=name)
    await client.create_event("MemoryWarning", "one", type="Warning", name=name)
    assert kube_api.statuses() == [201, 409]
    assert len(kube_api.events) == 1
    with pytest.raises(ValueError, match="Normal or Warning"):
        await client.create_event("MemoryWarning", "x", type="Error")


async def test_wrong_token_is_401_and_not_retried(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """A token the API server refuses raises KubeError(401, not retryable) after one request; the reporter does
    not retry it either."""
    client = make_client(config_for(kube_api, tmp_path, token="stolen-or-stale"))
    with pytest.raises(KubeError) as caught:
        await client.annotate_pod({"memmon.io/level": "ok"})
    error = caught.value
    assert (error.status, error.retryable, error.reason) == (401, False, "Unauthorized")
    assert "stolen-or-stale" not in str(error)
    assert kube_api.statuses() == [401]

    sleep = FakeSleep()
    reporter = PodReporter(client, sleep=sleep)
    assert await reporter.level_changed(Level.WARNING, Level.OK, "rising") is False
    assert kube_api.statuses() == [401, 401, 401]  # one PATCH, one POST, no retries
    assert (reporter.failures, sleep.delays) == (2, [])
    assert reporter.last_error is not None and "401" in reporter.last_error


async def test_unknown_pod_is_404_not_retryable(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """A pod the API server does not know gives KubeError 404 NotFound with its Status message."""
    client = make_client(config_for(kube_api, tmp_path, pod="app-gone"))
    with pytest.raises(KubeError) as caught:
        await client.annotate_pod({"memmon.io/level": "ok"})
    assert (caught.value.status, caught.value.retryable, caught.value.reason) == (404, False, "NotFound")
    assert 'pods "app-gone" not found' in str(caught.value)


async def test_reporter_retries_a_500_then_succeeds(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """A 500 on the PATCH is retried after 0.5 s; the second attempt lands and nothing counts as failed."""
    kube_api.fail_next = [500]
    sleep = FakeSleep()
    reporter = PodReporter(make_client(config_for(kube_api, tmp_path)), clock=lambda: T0, sleep=sleep)
    assert await reporter.level_changed(Level.CRITICAL, Level.WARNING, "rss 950 MB") is True
    assert kube_api.statuses() == [500, 200, 201]
    assert sleep.delays == [0.5]
    assert (reporter.failures, reporter.last_error) == (0, None)


async def test_reporter_counts_failures_without_raising_when_the_api_is_down(
    tmp_path: Path, make_client: Callable[..., KubernetesClient], caplog: pytest.LogCaptureFixture
) -> None:
    """Connection refused: 3 attempts per call (0.5 s, 1 s backoff), failures counted, one warning per streak."""
    config = KubeConfig(
        host=f"http://127.0.0.1:{free_port()}", token=TOKEN, ca_file=None, namespace=NAMESPACE, pod=POD
    )
    sleep = FakeSleep()
    reporter = PodReporter(make_client(config), sleep=sleep)
    caplog.set_level(logging.DEBUG, logger="memmon.kubernetes")

    assert await reporter.level_changed(Level.EMERGENCY, Level.CRITICAL, "rss 990 MB") is False
    assert reporter.failures == 2  # the annotation and the Event
    assert reporter.last_error is not None and "connection refused" in reporter.last_error
    assert sleep.delays == [0.5, 1.0, 0.5, 1.0]
    assert await reporter.restart_event("evicting") is False
    assert reporter.failures == 3
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "connection refused" in warnings[0].getMessage()


async def test_a_success_ends_the_failure_streak(
    kube_api: KubeStandin,
    tmp_path: Path,
    make_client: Callable[..., KubernetesClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a failure streak the next success is logged once, and a new streak warns again."""
    kube_api.fail_next = [503, 503, 503]
    reporter = PodReporter(make_client(config_for(kube_api, tmp_path)), sleep=FakeSleep())
    caplog.set_level(logging.INFO, logger="memmon.kubernetes")
    assert await reporter.level_changed(Level.WARNING, Level.OK, "a") is False  # PATCH fails 3x, Event lands
    assert (reporter.failures, reporter.streak) == (1, 0)
    kube_api.fail_next = [503, 503, 503]
    assert await reporter.restart_event("b") is False
    messages = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert [level for level, _ in messages] == ["WARNING", "INFO", "WARNING"]
    assert "reachable again" in messages[1][1]


# -- token rotation --------------------------------------------------------------------------------------------


async def test_rotated_token_file_is_picked_up(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """The token file is re-read once a minute; a 401 re-reads it at once and the call is repeated once."""
    config = config_for(kube_api, tmp_path)
    clock = Clock()
    client = make_client(config, monotonic=clock)
    await client.annotate_pod({"memmon.io/level": "ok"})

    # The kubelet rotates the token: after a minute the next call sends the new one, with no 401 first.
    kube_api.token = "standin-token-bbbb"
    write_token(tmp_path, "standin-token-bbbb")
    clock.now += 61
    await client.annotate_pod({"memmon.io/level": "warning"})
    assert kube_api.requests[-1].token == "standin-token-bbbb"
    assert kube_api.statuses() == [200, 200]

    # Rotated again within the minute: the 401 makes the client re-read the file and try once more.
    kube_api.token = "standin-token-cccc"
    write_token(tmp_path, "standin-token-cccc")
    clock.now += 5
    await client.annotate_pod({"memmon.io/level": "critical"})
    assert kube_api.requests[-1].token == "standin-token-cccc"
    assert kube_api.statuses() == [200, 200, 401, 200]
    assert kube_api.annotations["memmon.io/level"] == "critical"


# -- the stand-in refuses what the API server refuses ----------------------------------------------------------


async def test_standin_refuses_wrong_patch_types_and_event_shapes(kube_api: KubeStandin) -> None:
    """JSON patch and plain JSON PATCHes get 415, a foreign involvedObject 422, a mismatched Eviction 400."""
    pod_url = f"{kube_api.url}/api/v1/namespaces/{NAMESPACE}/pods/{POD}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for content_type in ("application/json-patch+json", "application/json"):
            async with session.patch(pod_url, data=b"{}", headers={"Content-Type": content_type}) as response:
                status = await response.json()
                assert (response.status, status["kind"], status["reason"]) == (
                    415,
                    "Status",
                    "UnsupportedMediaType",
                )
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "x.1", "namespace": NAMESPACE},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": NAMESPACE, "name": "other"},
            "reason": "MemoryWarning",
            "message": "m",
            "type": "Warning",
            "source": {"component": "memmon"},
        }
        async with session.post(
            f"{kube_api.url}/api/v1/namespaces/{NAMESPACE}/events", json=event
        ) as response:
            assert (response.status, (await response.json())["reason"]) == (422, "Invalid")
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}}
        async with session.post(pod_url + "/eviction", json=eviction) as response:
            assert (response.status, (await response.json())["status"]) == (400, "Failure")
    assert kube_api.requests == []


# -- kubernetes-evict ------------------------------------------------------------------------------------------


async def test_evict_restart_succeeds(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """The policy/v1 Eviction of the own pod is POSTed once; 201 gives success with attempts 1."""
    sleep = FakeSleep()
    action = EvictRestart(make_client(config_for(kube_api, tmp_path)), sleep=sleep)
    result = await action.restart("emergency for 30 s")
    assert (result.action, result.success, result.error) == ("restart:kubernetes-evict", True, None)
    assert (result.detail["attempts"], result.detail["status"]) == (1, 201)
    (request,) = kube_api.requests
    assert (request.method, request.path, request.content_type) == (
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}/eviction",
        "application/json",
    )
    assert request.body == {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": POD, "namespace": NAMESPACE},
    }
    assert sleep.delays == []


async def test_evict_restart_retries_while_a_pdb_blocks(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """Two 429s from a PodDisruptionBudget are retried after 1 s and 2 s; the third attempt evicts."""
    kube_api.pdb_blocks = 2
    sleep = FakeSleep()
    action = EvictRestart(make_client(config_for(kube_api, tmp_path)), sleep=sleep)
    result = await action.restart("emergency")
    assert result.success is True
    assert (result.detail["attempts"], result.detail["status"]) == (3, 201)
    assert kube_api.statuses() == [429, 429, 201]
    assert sleep.delays == [1.0, 2.0]
    assert len(kube_api.evictions) == 1


async def test_evict_restart_blocked_past_its_attempts_fails_for_the_fallback(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """Blocked on every attempt: success False with the PDB message, so the caller can fall back."""
    kube_api.pdb_blocks = 10
    kube_api.retry_after = 3
    sleep = FakeSleep()
    action = EvictRestart(make_client(config_for(kube_api, tmp_path)), attempts=3, sleep=sleep)
    result = await action.restart("emergency")
    assert result.success is False
    assert result.error == "eviction blocked by a PodDisruptionBudget (429) after 3 attempts"
    assert (result.detail["attempts"], result.detail["status"]) == (3, 429)
    assert sleep.delays == [3.0, 3.0]  # Retry-After 3 s outweighs backoff 1 s, 2 s
    assert kube_api.statuses() == [429, 429, 429]
    assert kube_api.evictions == []


async def test_evict_restart_does_not_retry_a_forbidden_eviction(
    kube_api: KubeStandin, tmp_path: Path, make_client: Callable[..., KubernetesClient]
) -> None:
    """403 (no RBAC for pods/eviction) is final at once, and the error says what the API server said."""
    kube_api.fail_next = [403]
    sleep = FakeSleep()
    result = await EvictRestart(make_client(config_for(kube_api, tmp_path)), sleep=sleep).restart("emergency")
    assert result.success is False
    assert result.error is not None and result.error.startswith("eviction failed after 1 attempt: ")
    assert "403 Forbidden" in result.error
    assert (result.detail["attempts"], result.detail["status"], sleep.delays) == (1, 403, [])


# -- TLS -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed ``(cert.pem, key.pem)`` for localhost and 127.0.0.1, standing in for the cluster CA's ca.crt."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line tool is needed to make a test certificate")
    return make_self_signed_cert(tmp_path_factory.mktemp("kube-tls"))


async def test_https_verifies_the_api_server_with_ca_file(
    tmp_path: Path, make_client: Callable[..., KubernetesClient], api_cert: tuple[Path, Path]
) -> None:
    """Over HTTPS the service-account ca.crt verifies the API server; without it the call fails, not retryable."""
    cert, key = api_cert
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with KubeStandin(ssl_context=server_context) as api:
        trusted = KubeConfig(host=api.url, token=TOKEN, ca_file=str(cert), namespace=NAMESPACE, pod=POD)
        await make_client(trusted).annotate_pod({"memmon.io/level": "ok"})
        assert api.annotations["memmon.io/level"] == "ok"

        system_cas = KubeConfig(host=api.url, token=TOKEN, ca_file=None, namespace=NAMESPACE, pod=POD)
        with pytest.raises(KubeError) as caught:
            await make_client(system_cas).annotate_pod({"memmon.io/level": "warning"})
        assert (caught.value.status, caught.value.retryable) == (None, False)
        assert "TLS" in str(caught.value)
        assert api.annotations["memmon.io/level"] == "ok"
