#!/usr/bin/env python3
"""The guide's entry point: ``python scripts/start_production_monitoring.py --config ... --health-port 8080``.

Runs the same agent as the ``memmon`` command (every flag of ``memmon --help`` works), from an installed memmon
or straight from a checkout. Started by an interpreter that lacks memmon's dependencies (the system ``python3`` of
a fresh machine), it runs itself again with the checkout's ``.venv/bin/python``, creating that venv first with
``make install`` (what ``make run`` does: memmon's runtime dependencies only) when it does not exist yet.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
VENV_PYTHON = CHECKOUT / ".venv" / "bin" / "python"
# Set before re-running with the venv's python, so that a broken venv is reported instead of looping.
REEXEC_MARK = "START_PRODUCTION_MONITORING_REEXEC"


def dependencies_missing() -> str | None:
    """The first of memmon's runtime dependencies this interpreter cannot import, or None."""
    for module in ("aiohttp", "psutil", "prometheus_client", "pydantic", "pydantic_settings"):
        try:
            __import__(module)
        except ModuleNotFoundError:
            return module
    return None


def run_in_checkout_venv(missing: str) -> None:
    """Replace this process by the same command under the checkout's venv (made with ``make install`` if absent)."""
    if os.environ.get(REEXEC_MARK) or not (CHECKOUT / "Makefile").is_file():
        sys.exit(
            f"error: {sys.executable} cannot import {missing!r} (a memmon dependency): install memmon "
            f"(pip install {CHECKOUT}) or run `make install` in {CHECKOUT}"
        )
    if not VENV_PYTHON.exists():
        if shutil.which("make") is None:
            sys.exit(
                f"error: {sys.executable} cannot import {missing!r} and `make` is missing: pip install {CHECKOUT}"
            )
        print(f"memmon: {missing!r} is not installed for {sys.executable}: make install", file=sys.stderr)
        setup = subprocess.run(["make", "-C", str(CHECKOUT), "--no-print-directory", "install"], check=False)
        if setup.returncode != 0:
            sys.exit(
                f"error: `make install` in {CHECKOUT} failed (exit {setup.returncode}); see its output above"
            )
    os.environ[REEXEC_MARK] = "1"
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])


if __name__ == "__main__":
    missing_module = dependencies_missing()
    if missing_module is not None:
        run_in_checkout_venv(missing_module)
    try:
        from memmon.cli import main
    except ModuleNotFoundError:  # a venv or interpreter with the dependencies but without memmon installed
        sys.path.insert(0, str(CHECKOUT / "agent"))
        from memmon.cli import main
    raise SystemExit(main())
