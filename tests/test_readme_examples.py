"""The README's commands run as written from a checkout (issue 13, item 3): shipped configs, the start script under
a Python without memmon's dependencies, `make run ARGS=...`, `make install-systemd ARGS=--dry-run`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import clean_env, free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SHIPPED_CONFIGS = ("monitoring/monitoring_config.json", "config/production.json")


def readme_config_paths() -> set[str]:
    """Relative *.json paths the README passes to memmon, the start script or ProductionMemoryMonitor."""
    return set(re.findall(r"(?:--config |check-config |ProductionMemoryMonitor\(\")([\w./-]+\.json)", README))


def test_every_config_path_the_readme_uses_is_shipped() -> None:
    """Each relative config path in the README's examples exists in the checkout (no missing example files)."""
    paths = {path for path in readme_config_paths() if not path.startswith("/")}
    assert set(SHIPPED_CONFIGS) <= paths, paths
    assert [path for path in paths if not (ROOT / path).is_file()] == []


@pytest.mark.parametrize("path", SHIPPED_CONFIGS)
def test_shipped_example_configs_pass_check_config(path: str) -> None:
    """`memmon check-config` accepts each shipped example config (comments included) with exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "memmon", "check-config", str(ROOT / path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{ROOT / path}: ok" in result.stdout
    assert "None" not in result.stdout  # a threshold family switched off is left out, not printed as None


def test_check_config_leaves_out_a_threshold_family_that_is_off() -> None:
    """The summary of config/production.json (MiB thresholds null) shows only the percent thresholds."""
    result = subprocess.run(
        [sys.executable, "-m", "memmon", "check-config", str(ROOT / "config" / "production.json")],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert "warning/critical/emergency at 75/85/92 % of the limit\n" in result.stdout, result.stdout


def test_start_script_runs_under_a_python_without_the_dependencies(tmp_path: Path) -> None:
    """The guide's start script, run by an interpreter that cannot import aiohttp (-S: no site-packages), re-runs
    itself with the checkout's .venv and serves /health with the README's flags and config/production.json."""
    bare = subprocess.run([sys.executable, "-S", "-c", "import aiohttp"], capture_output=True, check=False)
    assert bare.returncode != 0, "python -S can import aiohttp: the test would not exercise the re-run"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-S",
            str(ROOT / "scripts" / "start_production_monitoring.py"),
            "--config",
            str(ROOT / "config" / "production.json"),
            "--health-port",
            str(port),
            "--prometheus-port",
            "0",
            "--log-level",
            "INFO",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    body = wait_ready(port, proc, timeout=60)
    assert body["monitoring_active"] is True
    assert stop(proc)[0] == 0


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make -s ARGS` in the checkout (the venv exists already: make test created it)."""
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_make_run_passes_args_to_memmon() -> None:
    """`make run ARGS=--version` runs the venv's memmon with those flags (how the README's examples run)."""
    result = make("run", "ARGS=--version")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^memmon \d+\.\d+", result.stdout, re.MULTILINE), result.stdout


def test_make_install_systemd_dry_run_is_the_scripts_dry_run(tmp_path: Path) -> None:
    """`make install-systemd ARGS=--dry-run` prints the install script's steps and writes nothing."""
    result = make("install-systemd", "ARGS=--dry-run --root " + str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "would install" in result.stdout
    assert list(tmp_path.iterdir()) == []
