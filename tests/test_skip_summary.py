"""The skip summary at the end of a run: skips counted per reason, most first, with the files they came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUITE = {
    "conftest.py": "from tests.conftest import pytest_terminal_summary  # noqa: F401\n",
    "test_a.py": (
        "import pytest\n"
        "@pytest.mark.parametrize('n', range(3))\n"
        "def test_needs_npm(n):\n"
        "    pytest.skip('npm is not on the PATH')\n"
        "def test_no_psi():\n"
        "    pytest.skip('the kernel was booted with psi=0')\n"
        "def test_runs():\n"
        "    pass\n"
    ),
    "test_b.py": (
        "import pytest\n"
        "@pytest.mark.skipif(True, reason='npm is not on the PATH')\n"
        "def test_helm():\n"
        "    pass\n"
    ),
}


def run_suite(tmp_path: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "agent")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_skips_are_counted_per_reason_with_their_files(tmp_path: Path) -> None:
    """Four skips for one reason across two files and one for another: one line each, with counts and files."""
    out = run_suite(tmp_path, SUITE)
    lines = out[out.index("skipped, by reason") :].splitlines()
    assert lines[1] == "   4  npm is not on the PATH"
    assert lines[2] == "      in test_a.py (3), test_b.py (1)"
    assert lines[3] == "   1  the kernel was booted with psi=0"
    assert lines[4] == "      in test_a.py (1)"
    assert lines[5] == "5 skipped, for 2 reason(s)"


def test_no_summary_when_nothing_skipped(tmp_path: Path) -> None:
    """A run without skips prints no skip section."""
    out = run_suite(
        tmp_path, {"conftest.py": SUITE["conftest.py"], "test_c.py": "def test_ok():\n    pass\n"}
    )
    assert "skipped, by reason" not in out and "1 passed" in out
