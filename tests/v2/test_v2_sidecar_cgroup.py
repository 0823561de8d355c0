"""cgroup v2 with private cgroup namespaces (what runc, crun and the kubelet give each container on v2): memmon in
a "sidecar" sharing the app's PID namespace finds the *app's* cgroup, not its own. Both sides are made as a runtime
makes a container: a cgroup of its own, a new cgroup and mount namespace with cgroup2 mounted at /sys/fs/cgroup
(showing only that cgroup), run as nobody. The same check with podman on cgroup v1 is in image_tests/."""

from __future__ import annotations

import json

from tests.v2.conftest import Uml
from tests.v2.test_uml_v2 import PROBE, WAIT_FOR

MIB = 1 << 20

# enter.sh CGROUP CMD...: CMD as nobody in CGROUP, with its own cgroup namespace (rooted at CGROUP) and mount
# namespace where a fresh cgroup2 mount at /sys/fs/cgroup (the inherited one unmounted first: mounting the same
# hierarchy over itself is EBUSY) shows that root only; every step execs, so $! of
# `enter.sh ... &` is CMD's pid.
ENTER = r"""#!/bin/bash
set -euo pipefail
cgroup=$1
shift
echo $$ > "$cgroup/cgroup.procs"
inside='umount /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"'
exec unshare --cgroup --mount --propagation private -- bash -euc "$inside" enter "$@"
"""


def test_a_sidecar_in_its_own_cgroup_namespace_judges_the_app_against_the_apps_cgroup(uml: Uml) -> None:
    """The app (64 MiB) and memmon (512 MiB) each in their own container-like namespaces, one PID namespace:
    memmon ``--match``-ing the app reads the app's cgroup through /proc/<pid>/root (its path reads /../app from
    memmon's namespace), so the limit is the app's 64 MiB, not the 512 MiB of memmon's own /sys/fs/cgroup."""
    (uml.workdir / "probe.py").write_text(PROBE)
    (uml.workdir / "enter.sh").write_text(ENTER)
    result = uml(
        WAIT_FOR
        + """
        for name in app sidecar; do mkdir "$CGROUP_ROOT/$name"; done
        echo 64M > "$CGROUP_ROOT/app/memory.max"
        echo 512M > "$CGROUP_ROOT/sidecar/memory.max"
        mkdir -m 1777 /run/state
        bash enter.sh "$CGROUP_ROOT/app" sleep 1000 &
        app=$!
        for _ in $(seq 100); do grep -q '^0::/app$' "/proc/$app/cgroup" 2>/dev/null && break; sleep 0.05; done
        bash enter.sh "$CGROUP_ROOT/sidecar" "$MEMMON" --match '^sleep 1000$' --health-port 18080 \
            --prometheus-port 0 --bind 127.0.0.1 --state-dir /run/state --check-interval 0.5 > memmon.log 2>&1 &
        agent=$!
        "$PYTHON" probe.py 18080 "$CGROUP_ROOT/app" result.json
        cat "/proc/$agent/cgroup" > agent.cgroup
        kill $agent $app
        wait $agent || true
        wait $app || true
        """
    )
    assert result.rc == 0, result.output + (uml.workdir / "memmon.log").read_text()
    assert (uml.workdir / "agent.cgroup").read_text().strip() == "0::/sidecar", "memmon ran in its own cgroup"
    data = json.loads((uml.workdir / "result.json").read_text())
    payload, raw = data["payload"], data["raw"]
    assert raw["memory.max"] == str(64 * MIB)
    assert payload["limit_source"] == "cgroup", payload
    assert payload["cgroup"]["version"] == 2
    assert payload["cgroup"]["limit_mb"] == payload["effective_limit_mb"] == 64.0, payload
