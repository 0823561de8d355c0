"""bench/history_load.py run once at smoke sizes: it must keep working; its figures are not judged here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_history_load_benchmark_prints_its_table() -> None:
    """bench/history_load.py --quick prints the burst, abandoned-request, gc-count and SIGTERM rows and a median."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "history_load.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT / "bench",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"\| history burst: checks done / expected in \d+ s \| \d+ / \d+ \|", out), out
    assert re.search(r"\| RSS before / peak / after \(MiB\) \| \d+ / \d+ / \d+ \|", out), out
    assert re.search(r"\| CPU after 10 abandoned requests .* \| [\d.]+ \|", out), out
    assert re.search(r"\| SIGTERM under load: exit code, seconds to exit \| -?\d+, [\d.]+ \|", out), out
    assert re.search(r"median share of expected checks done under load: [\d.]+", out), out
