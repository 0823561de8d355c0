"""Session fixtures of the kernel test tier: one VM booted for the whole session, memmon installed in it as a user
would (venv at /opt/memmon from wheels built on the host, then scripts/install_systemd.sh).

Run with ``make test-kernel`` (builds or reuses the cached image first). Not part of ``make test``: pyproject's
testpaths are tests/ and e2e/. The last session's console log and job outputs stay in .cache/kernel-vm/session/.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel_tests.vm import BUILD_IMAGE, REPO, VM, QemuCannotStart

CACHE = REPO / ".cache" / "kernel-vm"
SESSION = CACHE / "session"
HERE = Path(__file__).resolve().parent
# Boot takes 30-120 s under TCG, installing memmon 1-2 min: far over pyproject's 120 s per test, which covers the
# session fixtures' setup too (pytest-timeout). Each guest job has its own, tighter timeout (VM.run).
ITEM_TIMEOUT = 1200
BOOT_TIMEOUT = 600
INSTALL_TIMEOUT = 600

TIMINGS: dict[str, float] = {}
FACTS: dict[str, str] = {}

Run = Callable[..., tuple[int, str]]


def fields(output: str) -> dict[str, str]:
    """The ``key=value`` lines a guest script printed (the last value of a key wins)."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key.replace("_", "").isalnum():
            found[key] = value
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of this tier may wait for the session's VM to boot: a longer pytest-timeout than the project's."""
    for item in items:
        item.add_marker(pytest.mark.timeout(ITEM_TIMEOUT))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the timings and facts measured in the VM (boot, install, PSI) at the end of the run."""
    if TIMINGS or FACTS:
        terminalreporter.section("kernel VM")
        for key, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{key}: {seconds:.1f} s")
        for key, text in FACTS.items():
            terminalreporter.write_line(f"{key}: {text}")


@pytest.fixture(scope="session")
def image_dir() -> Path:
    """The cached VM image (built by scripts/kernel_vm/build_image.sh when missing: about 2-5 minutes)."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(BUILD_IMAGE)], capture_output=True, text=True, timeout=1500, check=False
    )
    assert done.returncode == 0, f"building the VM image failed:\n{done.stdout}\n{done.stderr}"
    TIMINGS["image (build or cache check)"] = time.monotonic() - started
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def vm(image_dir: Path) -> Iterator[VM]:
    """The booted VM; powered off at the end of the session. Skips only when QEMU itself cannot start here."""
    machine = VM(image_dir, SESSION)
    try:
        machine.start()
        FACTS["guest ready"] = " ".join(machine.wait_ready(BOOT_TIMEOUT).split())
    except QemuCannotStart as exc:
        machine.poweroff(timeout=5)
        pytest.skip(f"QEMU cannot start on this machine: {exc}")
    except BaseException:
        machine.poweroff(timeout=5)
        raise
    assert machine.boot_seconds is not None
    TIMINGS["boot (QEMU start to systemd running)"] = machine.boot_seconds
    try:
        yield machine
    finally:
        started = time.monotonic()
        machine.poweroff()
        TIMINGS["poweroff"] = time.monotonic() - started
        (SESSION / "overlay.qcow2").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def run(vm: VM) -> Run:
    """``run(script, timeout) -> (rc, output)``: a bash script run as root in the guest, with the helpers of
    kernel_tests/guest/lib.sh loaded."""

    def run_script(script: str, timeout: float, *, name: str | None = None) -> tuple[int, str]:
        return vm.run(f"source /mnt/share/kt/guest/lib.sh\n{script}", timeout, name=name)

    # The guest side of the tests, and memmon's configuration files, as the share's kt/ directory.
    shutil.copytree(HERE / "guest", vm.share / "kt" / "guest", dirs_exist_ok=True)
    shutil.copytree(HERE / "configs", vm.share / "kt" / "configs", dirs_exist_ok=True)
    return run_script


def _wheels(share: Path) -> None:
    """memmon's wheel (always fresh) and its dependencies' wheels (cached per pyproject.toml) into share/wheels.
    The guest has no network; the host reaches PyPI."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    deps = CACHE / f"wheels-{hashlib.sha256(pyproject).hexdigest()[:16]}"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    if not deps.is_dir():
        tmp = deps.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([*pip, str(REPO), "-w", str(tmp)], check=True, timeout=900)
        for old in CACHE.glob("wheels-*"):  # wheels for an older pyproject.toml (not the ones just built)
            if old != tmp:
                shutil.rmtree(old)
        tmp.rename(deps)
    target = share / "wheels"
    target.mkdir()
    for wheel in deps.glob("*.whl"):
        if not wheel.name.startswith("memmon-"):
            shutil.copy(wheel, target)
    subprocess.run([*pip, "--no-deps", str(REPO), "-w", str(target)], check=True, timeout=900)


@dataclass(frozen=True)
class Install:
    """What installing memmon in the guest printed, and its exit code."""

    rc: int
    output: str


INSTALL_SCRIPT = """
set -e
started=$SECONDS
# README "systemd (VMs)": memmon in a venv where the unit expects it, then the install script. No network in the
# guest: pip installs from the wheels built on the host.
python3 -m venv /opt/memmon
/opt/memmon/bin/pip install -q --disable-pip-version-check --no-index --find-links /mnt/share/wheels memmon
echo "venv_seconds=$((SECONDS - started))"
/mnt/share/repo/scripts/install_systemd.sh
echo "memmon_version=$(/opt/memmon/bin/memmon --version)"
echo "env_mode=$(stat -c %a /etc/default/memmon)"
"""


@pytest.fixture(scope="session")
def installed(vm: VM, run: Run) -> Install:
    """memmon installed in the guest the way the README tells a user to (not started yet)."""
    started = time.monotonic()
    _wheels(vm.share)
    TIMINGS["wheels (host)"] = time.monotonic() - started
    repo = vm.share / "repo"
    shutil.copytree(REPO / "deploy" / "systemd", repo / "deploy" / "systemd")
    (repo / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "install_systemd.sh", repo / "scripts" / "install_systemd.sh")
    started = time.monotonic()
    rc, output = run(INSTALL_SCRIPT, INSTALL_TIMEOUT, name="install")
    TIMINGS["install in the guest (venv, pip, install_systemd.sh)"] = time.monotonic() - started
    return Install(rc, output)
