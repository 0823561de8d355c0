"""bench/image_startup.py keeps working: its quick run prints the image size and both start-up rows."""

from __future__ import annotations

import subprocess
import sys

from image_tests.conftest import REPO, BuiltImage


def test_image_benchmark_quick_run_prints_its_figures(image: BuiltImage) -> None:
    """One container and one host run: the size line, the build line and a row for each, ratio last."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "image_startup.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("image localhost/memmon:bench: "), lines
    assert any(line.startswith("| container | ") for line in lines), lines
    assert any(line.startswith("| host | ") for line in lines), lines
    assert lines[-1].startswith("container start / host start: "), lines
