"""PodWatch against the strict API stand-in over real 127.0.0.1 sockets: list, watch, bookmarks, 410, drops."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from memmon.kits.kubeconfig import KubeConfig
from memmon.kits.kubernetes_client import KubeError, KubernetesClient
from memmon.kits.pod_info import PodInfo, parse_quantity
from memmon.kits.pod_watch import PodWatch
from tests.actions.kube_standin import NODE, POD_UID, TOKEN, KubeStandin, make_pod
from tests.waiting import wait_until

CID = "containerd://" + "c3" * 32


def config_for(url: str) -> KubeConfig:
    return KubeConfig(host=url, token=TOKEN, ca_file=None, namespace="memmon", pod="memmon-abc12")


@pytest.fixture
async def api() -> AsyncIterator[KubeStandin]:
    """The stand-in with bookmarks rare enough not to show unless a test asks for them."""
    async with KubeStandin(bookmark_interval=3600) as standin:
        yield standin


@asynccontextmanager
async def running(watch: PodWatch) -> AsyncIterator[PodWatch]:
    """``watch.run()`` in a task, closed (and the task finished) on leaving."""
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        await watch.close()
        await asyncio.wait_for(task, 5)


class GatedSleep:
    """A sleep that records its delays and, once ``hold`` is set, waits until ``release()``."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.hold = False
        self.gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.hold:
            await self.gate.wait()
        else:
            await asyncio.sleep(0.01)

    def release(self) -> None:
        self.hold = False
        self.gate.set()


def shop_pod(name: str, uid: str, node: str = NODE, **extra: Any) -> dict[str, Any]:
    return make_pod("shop", name, uid, node, [("app", CID, "256Mi"), ("sidecar", None, None)], **extra)


async def test_initial_list_holds_only_the_nodes_pods_with_their_containers(api: KubeStandin) -> None:
    """The first list gives the node's pods (not other nodes'), with container ids, limits, owner and labels."""
    api.add_pod(shop_pod("web-1", "uid-web-1", owner="ReplicaSet/web-5f7"))
    api.add_pod(shop_pod("elsewhere", "uid-elsewhere", node="node-b"))
    async with running(PodWatch(config_for(api.url), NODE)) as watch:
        await wait_until(lambda: watch.synced and watch.watches == 1)
        pods = watch.pods()
        assert set(pods) == {POD_UID, "uid-web-1"}
        web = pods["uid-web-1"]
        assert (web.namespace, web.name, web.node, web.phase, web.owner) == (
            "shop",
            "web-1",
            NODE,
            "Pending",
            "ReplicaSet/web-5f7",
        )
        assert [(c.name, c.container_id, c.memory_limit_bytes) for c in web.containers] == [
            ("app", "c3" * 32, 256 * 2**20),
            ("sidecar", None, None),
        ]
        assert dict(web.labels) == {"app": "web"}
        assert (watch.lists, watch.relists, watch.failures, watch.last_error) == (1, 0, 0, None)
        assert watch.bytes_received > 0


async def test_the_requests_select_exactly_the_node(api: KubeStandin) -> None:
    """List and watch send fieldSelector=spec.nodeName=<node>; the watch starts at the list's resourceVersion."""
    async with running(PodWatch(config_for(api.url), "node-a", timeout_seconds=45)) as watch:
        await wait_until(lambda: watch.watches == 1 and len(api.watch_requests) == 1)
        assert api.list_requests == [{"fieldSelector": "spec.nodeName=node-a"}]
        assert api.watch_requests == [
            {
                "watch": "1",
                "resourceVersion": str(api.resource_version),
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "45",
                "fieldSelector": "spec.nodeName=node-a",
            }
        ]


async def test_added_modified_and_deleted_pods_are_seen(api: KubeStandin) -> None:
    """ADDED, MODIFIED and DELETED events change the map (and call on_change) without a new list."""
    changes: list[int] = []
    watch = PodWatch(config_for(api.url), NODE, on_change=lambda: changes.append(1))
    async with running(watch):
        await wait_until(lambda: watch.watches == 1)
        api.add_pod(shop_pod("web-2", "uid-web-2"))
        await wait_until(lambda: "uid-web-2" in watch.pods())

        def started(pod: dict[str, Any]) -> None:
            pod["status"]["containerStatuses"][1]["containerID"] = "cri-o://" + "d4" * 32
            pod["metadata"]["annotations"]["memmon.io/threshold"] = "90"

        api.update_pod("shop", "web-2", started)
        await wait_until(lambda: watch.pods()["uid-web-2"].containers[1].container_id == "d4" * 32)
        assert watch.pods()["uid-web-2"].annotations["memmon.io/threshold"] == "90"
        api.delete_pod("shop", "web-2")
        await wait_until(lambda: "uid-web-2" not in watch.pods())
        assert set(watch.pods()) == {POD_UID}
        assert (watch.events, watch.lists, watch.relists, watch.failures) == (3, 1, 0, 0)
        assert watch.resource_version == str(api.resource_version)
        assert len(changes) == 4  # the first list, then each event


async def test_bookmarks_advance_the_resource_version_without_events(api: KubeStandin) -> None:
    """A BOOKMARK moves the resourceVersion past changes the watch does not select, and changes no pod."""
    api.bookmark_interval = 0.2
    async with running(PodWatch(config_for(api.url), NODE)) as watch:
        await wait_until(lambda: watch.watches == 1)
        listed = watch.resource_version
        api.add_pod(shop_pod("other-node", "uid-other", node="node-b"))  # bumps the resourceVersion only
        await wait_until(lambda: watch.resource_version == str(api.resource_version))
        assert watch.resource_version != listed
        assert watch.bookmarks >= 1 and api.bookmarks_sent >= 1
        assert (watch.events, set(watch.pods())) == (0, {POD_UID})


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
async def test_an_expired_resource_version_lists_again(api: KubeStandin, as_http: bool) -> None:
    """After compaction the re-watch gets 410 Gone (ERROR event or HTTP); one relist, no stale or double pods."""
    api.expired_as_http = as_http
    api.add_pod(shop_pod("web-1", "uid-web-1"))
    api.add_pod(shop_pod("web-2", "uid-web-2"))
    sleep = GatedSleep()
    async with running(PodWatch(config_for(api.url), NODE, timeout_seconds=1, sleep=sleep)) as watch:
        await wait_until(lambda: watch.watches == 1)
        sleep.hold = True
        api.fail_next = [503]  # the next watch fails, and the watch waits in its backoff
        await wait_until(lambda: watch.failures == 1)
        api.delete_pod("shop", "web-1")  # changes the watch misses while it waits
        api.add_pod(shop_pod("web-3", "uid-web-3"))
        api.update_pod("shop", "web-2", lambda pod: pod["metadata"]["labels"].update(tier="gold"))
        api.compact()
        sleep.release()
        await wait_until(lambda: watch.relists == 1 and watch.lists == 2)
        assert set(watch.pods()) == {POD_UID, "uid-web-2", "uid-web-3"}
        assert watch.pods()["uid-web-2"].labels["tier"] == "gold"
        assert watch.resource_version == str(api.resource_version)
    assert api.watch_requests[-1]["resourceVersion"] == str(api.resource_version)


async def test_a_dropped_connection_rewatches_from_the_last_resource_version(api: KubeStandin) -> None:
    """A connection cut mid-stream is watched again from the last resourceVersion seen: no list, no failure."""
    api.drop_after_events = 1
    async with running(PodWatch(config_for(api.url), NODE)) as watch:
        await wait_until(lambda: watch.watches == 1)
        versions = [api.add_pod(shop_pod(f"web-{n}", f"uid-web-{n}")) for n in range(3)]
        await wait_until(lambda: len(watch.pods()) == 4 and watch.watches == 4)
        assert (watch.lists, watch.relists, watch.failures) == (1, 0, 0)
        assert [query["resourceVersion"] for query in api.watch_requests[1:4]] == versions


async def test_an_unreachable_api_server_is_named_and_backed_off(caplog: pytest.LogCaptureFixture) -> None:
    """A closed port: last_error names it, the delay doubles to its cap, one warning for the whole streak."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleep = GatedSleep()
    watch = PodWatch(config_for(f"http://127.0.0.1:{port}"), NODE, backoff=1, max_backoff=8, sleep=sleep)
    with caplog.at_level(logging.DEBUG, logger="memmon.kubernetes.watch"):
        async with running(watch):
            await wait_until(lambda: len(sleep.delays) >= 6)
            sleep.hold = True
    assert sleep.delays[:6] == [1, 2, 4, 8, 8, 8]
    assert watch.last_error is not None
    assert f"127.0.0.1:{port}" in watch.last_error and "connection refused" in watch.last_error
    assert not watch.synced and watch.pods() == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "connection refused" in warnings[0].getMessage()


async def test_the_watch_syncs_once_the_api_server_comes_up() -> None:
    """run() outlives failures: once the API server answers, the list succeeds and last_error clears."""
    standin = KubeStandin(bookmark_interval=3600)
    await standin.start()
    port = standin._port
    await standin.stop()  # the port is closed now
    sleep = GatedSleep()
    async with running(PodWatch(config_for(f"http://127.0.0.1:{port}"), NODE, sleep=sleep)) as watch:
        await wait_until(lambda: watch.failures >= 2)
        assert not watch.synced and watch.last_error is not None
        async with KubeStandin(port=port, bookmark_interval=3600):
            await wait_until(lambda: watch.synced and watch.watches == 1)
            assert watch.last_error is None and set(watch.pods()) == {POD_UID}


async def test_a_mirror_pod_is_keyed_by_its_config_mirror_annotation(api: KubeStandin) -> None:
    """A static pod's mirror pod is known by the kubelet's uid (kubernetes.io/config.mirror), not metadata.uid."""
    mirror_hash = "6d0c9bd0e1c6e5f0a4a16d3b3f7c9a21"
    annotations = {
        "kubernetes.io/config.hash": mirror_hash,
        "kubernetes.io/config.mirror": mirror_hash,
        "kubernetes.io/config.source": "file",
    }
    containers: list[tuple[str, str | None, str | None]] = [("etcd", CID, None)]
    mirror = make_pod(
        "kube-system", f"etcd-{NODE}", "api-uid-of-mirror", NODE, containers, annotations, f"Node/{NODE}"
    )
    api.add_pod(mirror)
    async with running(PodWatch(config_for(api.url), NODE)) as watch:
        await wait_until(lambda: mirror_hash in watch.pods())
        etcd: PodInfo = watch.pods()[mirror_hash]
        assert (etcd.uid, etcd.cgroup_uid, etcd.owner) == ("api-uid-of-mirror", mirror_hash, f"Node/{NODE}")
        api.delete_pod("kube-system", f"etcd-{NODE}")
        await wait_until(lambda: mirror_hash not in watch.pods())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128974848", 128974848),
        ("129e6", 129000000),
        ("129M", 129000000),
        ("128974848000m", 128974848),
        ("123Mi", 128974848),
        ("1.5Gi", 1610612736),
        ("1Ti", 2**40),
        ("2k", 2000),
        ("1E", 10**18),
        ("1E3", 1000),
        ("500m", 1),
        (".5Ki", 512),
    ],
)
def test_quantities_parse_as_kubernetes_does(text: str, value: int) -> None:
    """Binary and decimal suffixes, exponents, fractions (rounded up), plain numbers."""
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Mi", "1.2.3", "1 Gi", "1MB", "1e", "ten", "1gi"])
def test_malformed_quantities_are_refused_by_name(text: str) -> None:
    """A string that is not a quantity raises ValueError quoting it."""
    with pytest.raises(ValueError, match="is not a Kubernetes quantity") as raised:
        parse_quantity(text)
    assert repr(text) in str(raised.value)


async def test_standin_refuses_field_selectors_other_than_the_node(api: KubeStandin) -> None:
    """The stand-in answers 400 for an unsupported or unserved field selector, as the real server would."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for selector, said in (("spec.bogus=1", "field label not supported: spec.bogus"),
                               ("status.phase=Running", "only the field selector spec.nodeName")):  # fmt: skip
            async with session.get(f"{api.url}/api/v1/pods", params={"fieldSelector": selector}) as response:
                body = await response.json()
                assert (response.status, body["reason"]) == (400, "BadRequest") and said in body["message"]


async def test_standin_evicts_and_records_events_for_any_pod(api: KubeStandin) -> None:
    """Evictions and Events work for every pod of the map; an unknown pod is 404."""
    api.add_pod(shop_pod("web-9", "uid-web-9"))

    async def as_pod(name: str, call: Callable[[KubernetesClient], Awaitable[None]]) -> None:
        client = KubernetesClient(KubeConfig(api.url, TOKEN, None, "shop", name, pod_uid=f"uid-{name}"))
        try:
            await call(client)
        finally:
            await client.close()

    await as_pod("web-9", lambda client: client.create_event("MemoryHigh", "web-9 at 91%", type="Warning"))
    await as_pod("web-9", lambda client: client.evict_pod())
    assert api.events[-1]["involvedObject"]["name"] == "web-9"
    assert api.pods[("shop", "web-9")]["metadata"]["deletionTimestamp"]
    assert api.watch_log[-1][1] == "MODIFIED"
    with pytest.raises(KubeError) as raised:
        await as_pod("ghost", lambda client: client.evict_pod())
    assert raised.value.status == 404
