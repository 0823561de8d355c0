"""The strict Kubernetes API stand-in (tests/actions/kube_standin.py, copied with its packages' empty __init__ files
next to this file in the share, so the import below works in the guest as in the checkout) served inside the kernel
test VM for the node-mode test: the guest has no network, so memmon reaches it on 127.0.0.1.

``kube_standin_serve.py NODE_JSON PORT STATE_DIR`` (run with memmon's venv Python: aiohttp is one of memmon's
dependencies). NODE_JSON holds ``{"node": NAME, "pods": [{"name", "uid", "container_id", "limit"}, ...]}``: each
entry becomes a pod ``shop/<name>`` bound to NAME with one container ``app`` whose status carries
``containerd://<container_id>`` (the pod sandbox's id is not listed, as in the real API). It writes the bearer token
to STATE_DIR/token (mode 0644: memmon may run as another user) and, every 0.5 s, what the server has seen to
STATE_DIR/state.json (by rename, so a reader never sees half a file): evictions (namespace, name), Events
(involved pod, reason, type), and the paths of accepted requests. SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.actions.kube_standin import KubeStandin, make_pod

NAMESPACE = "shop"


def state(api: KubeStandin) -> dict[str, Any]:
    """What the host-side assertions need from the stand-in."""
    return {
        "evictions": [
            [eviction["metadata"]["namespace"], eviction["metadata"]["name"]] for eviction in api.evictions
        ],
        "events": [
            [event["involvedObject"]["name"], event.get("reason"), event.get("type")] for event in api.events
        ],
        "requests": [f"{request.method} {request.path}" for request in api.requests],
        "list_requests": len(api.list_requests),
        "watch_requests": len(api.watch_requests),
    }


def write_state(api: KubeStandin, directory: Path) -> None:
    """STATE_DIR/state.json, atomically."""
    tmp = directory / "state.json.tmp"
    tmp.write_text(json.dumps(state(api)))
    os.replace(tmp, directory / "state.json")


async def serve(node: dict[str, Any], port: int, directory: Path) -> None:
    """Start the stand-in with the node's pods; dump its state until SIGTERM."""
    api = KubeStandin(node=node["node"], port=port, bookmark_interval=5.0)
    await api.start()
    for pod in node["pods"]:
        api.add_pod(
            make_pod(
                NAMESPACE,
                pod["name"],
                pod["uid"],
                node["node"],
                [("app", f"containerd://{pod['container_id']}", pod["limit"])],
                owner="ReplicaSet/web-7d9",
            )
        )
    token = directory / "token"
    token.write_text(api.token)
    token.chmod(0o644)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"serving {len(node['pods'])} pods of {node['node']} at {api.url}", flush=True)
    while not stop.is_set():
        write_state(api, directory)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    write_state(api, directory)
    await api.stop()


if __name__ == "__main__":
    asyncio.run(serve(json.loads(Path(sys.argv[1]).read_text()), int(sys.argv[2]), Path(sys.argv[3])))
