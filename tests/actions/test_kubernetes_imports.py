"""A configuration that does not use Kubernetes does not load its client (footprint): the wiring imports the
Kubernetes modules only when kubernetes_events or the kubernetes-evict restart is chosen."""

from __future__ import annotations

import subprocess
import sys

KUBERNETES_MODULES = ("memmon.kits.kubernetes_client", "memmon.kits.kubeconfig", "memmon.actions.pod_reporter",
                      "memmon.actions.eviction")  # fmt: skip


def loaded_after(code: str) -> set[str]:
    """The Kubernetes modules loaded after running ``code`` in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {KUBERNETES_MODULES!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


def test_importing_the_wiring_loads_no_kubernetes_module() -> None:
    """memmon.app, memmon.assembly and memmon.actions.restarts import none of the Kubernetes modules."""
    assert loaded_after("import memmon.app, memmon.assembly, memmon.actions.restarts") == set()


def test_choosing_kubernetes_evict_loads_the_client() -> None:
    """Building the kubernetes-evict strategy imports the eviction module and the client (outside a cluster
    it then says why it is unavailable)."""
    code = (
        "from memmon.actions.restarts import build_restart\n"
        "from memmon.actions.targets import TargetProcesses\n"
        "from memmon.config import Settings\n"
        "s = Settings.model_validate({'auto_response': {'emergency_actions': {'graceful_restart': "
        "{'strategy': 'kubernetes-evict'}}}})\n"
        "build_restart(s.auto_response.emergency_actions.graceful_restart, TargetProcesses(pids=tuple))"
    )
    assert loaded_after(code) == {
        "memmon.kits.kubernetes_client",
        "memmon.kits.kubeconfig",
        "memmon.actions.eviction",
    }
