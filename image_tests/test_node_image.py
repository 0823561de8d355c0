"""The node-mode DaemonSet's container (the same image) run the way the chart runs it: the rendered DaemonSet's
arguments and ConfigMap (deploy/k8s/memmon-node.yaml), the host's /sys/fs/cgroup mounted read-only at
/host/sys/fs/cgroup, a read-only root as uid 65532 without capabilities. It finds the test's kubepods-like cgroups
(real v1 memory cgroups with processes) and names them from the API stand-in."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.prefork.servers import free_port
from tests.test_node_mode import CONTAINER_LIMIT, NODE, node_tree, standin

from image_tests.conftest import REPO, RUN_AS_THE_CHART_DOES, Containers, wait_until

MANIFEST = REPO / "deploy" / "k8s" / "memmon-node.yaml"
PODS = 5


def rendered(kind: str, name: str = "memmon") -> dict[str, Any]:
    """The object of ``kind`` named ``name`` in the chart's rendered node-mode manifest."""
    objects = [
        o
        for o in yaml.safe_load_all(MANIFEST.read_text())
        if o and o["kind"] == kind and o["metadata"]["name"] == name
    ]
    assert len(objects) == 1, f"{MANIFEST.name}: {len(objects)} objects {kind}/{name}"
    found: dict[str, Any] = objects[0]
    return found


def test_the_daemonset_container_discovers_the_nodes_pods_through_the_read_only_host_mount(
    containers: Containers, tmp_path: Path
) -> None:
    """Every pod and container of the test's kubepods tree becomes a target named from the API (``shop/web-N``,
    ``shop/web-N/app``), judged against its own cgroup's limit read through the read-only host mount."""
    daemonset = rendered("DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "memmon")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "host-cgroup")
    host_path = next(v for v in spec["volumes"] if v["name"] == "host-cgroup")["hostPath"]["path"]
    assert mount["readOnly"] is True
    config = tmp_path / "config"
    config.mkdir(mode=0o755)
    config_map = next(v for v in spec["volumes"] if v["name"] == "memmon-config")["configMap"]["name"]
    (config / "config.json").write_text(rendered("ConfigMap", config_map)["data"]["config.json"])
    (config / "config.json").chmod(0o644)
    with node_tree(PODS) as node, standin(node.pods()) as api:
        (config / "token").write_text(api.token)
        (config / "token").chmod(0o644)
        # The chart's cgroup_root is the mount itself; the test's tree is one directory of the host's v1 memory
        # hierarchy, so that no real kubepods tree (or another test's) is in the way.
        tree = Path(mount["mountPath"]) / node.root.relative_to(host_path)
        port = free_port()
        state = containers.volume("state")
        options = [
            *RUN_AS_THE_CHART_DOES,
            "--memory", "256m",
            # Host network: the stand-in listens on the host's loopback (a cluster's pod reaches its API server).
            "--network", "host",
            "-v", f"{host_path}:{mount['mountPath']}:ro",
            "-v", f"{config}:/etc/memmon:ro",
            "-v", f"{state}:/var/lib/memmon",
            "--tmpfs", "/tmp:size=16m",
            "-e", f"NODE_NAME={NODE}",
            "-e", f"MEMMON_NODE__CGROUP_ROOT={tree}",
            "-e", f"MEMMON_KUBE_API={api.url}",
            "-e", "MEMMON_KUBE_TOKEN_FILE=/etc/memmon/token",
            "--entrypoint", container["command"][0],
        ]  # fmt: skip
        # The DaemonSet's arguments, then the host network's free ports (later flags win).
        args = [*container["args"], "--health-port", str(port), "--prometheus-port", "0"]
        memmon = containers.run("node", options, args)
        memmon.health_port = port
        memmon.wait_healthy()
        expected = {f"shop/web-{i}" for i in range(PODS)} | {f"shop/web-{i}/app" for i in range(PODS)}

        def targets() -> dict[str, dict[str, Any]]:
            return {t["name"]: t for t in memmon.get("/health/targets")["targets"]}

        wait_until(
            lambda: expected <= {name for name, t in targets().items() if t["status"] == "ok"},
            60,
            "every pod and container watched and ok",
            log=memmon.logs,
        )
        found = targets()
        for index in range(PODS):
            pod, app = found[f"shop/web-{index}"], found[f"shop/web-{index}/app"]
            assert (app["limit_source"], app["limit_mb"]) == ("cgroup", CONTAINER_LIMIT / 2**20), app
            assert (pod["limit_source"], pod["limit_mb"]) == ("cgroup", 2 * CONTAINER_LIMIT / 2**20), pod
        assert not any(name.startswith("pod-") for name in found), sorted(found)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert f'memmon_node_pods{{state="watched"}} {float(PODS)}' in metrics
        assert all(sleeper.poll() is None for sleeper in node.sleepers)
    if "Read-only file system" in memmon.logs():
        pytest.fail(memmon.logs())
    assert json.dumps(found)  # the answer was JSON all along
