"""Footprint: a real agent imports nothing its configuration does not use (issue 14, item 5).

The agent's own account of what it imported is CPython's import-time report (``PYTHONPROFILEIMPORTTIME=1``, the
environment form of ``-X importtime``): one ``import time:`` line on stderr per module, written when the module is
first imported, whenever that is. So a module missing from the report was never loaded, and a module imported on
first use shows up at that use. No endpoint is added for this.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.config import GUIDE_ENV

NOT_LOADED_WHEN_UNUSED = (
    "smtplib",
    "memmon.alerting.email",
    "memmon.alerting.alertmanager",
    "memmon.alerting.slack",
    "memmon.alerting.webhook",
    "memmon.sampling.allocations",
    "memmon.sampling.mappings",
    "tracemalloc",
    "memmon.exposition.livepage",
)
"""Modules an agent with only the log channel, no tracemalloc and nobody on its page must not import."""
LOADED_ALWAYS = ("aiohttp.web", "memmon.exposition.server", "memmon.alerting.routing", "memmon.leakwatch")
"""Modules every agent imports: their presence shows the report was read, so an absence above means something."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _imported(report: Path) -> set[str]:
    """Module names in an import-time report (``import time: self | cumulative | <indent>name``)."""
    names = set()
    for line in report.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name)
    return names


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait(condition: object, what: str, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        assert proc.poll() is None, f"the agent exited with {proc.returncode} while waiting for {what}"
        try:
            if condition():  # type: ignore[operator]
                return
        except (OSError, urllib.error.URLError):
            pass
        assert time.monotonic() < deadline, f"no {what} within {within:g} s"
        time.sleep(0.1)


@pytest.fixture
def log_only_agent(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """A real ``python -m memmon`` on 127.0.0.1 with the defaults (log channel only, host target, no
    Kubernetes, no tracemalloc), its stderr (the import-time report) in a file; stopped with SIGTERM."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MEMMON_") and k not in GUIDE_ENV}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    report = tmp_path / "stderr.txt"
    argv = [sys.executable, "-m", "memmon", "--bind", "127.0.0.1", "--health-port", str(port),
            "--prometheus-port", "0", "--state-dir", str(tmp_path / "state"), "--check-interval", "1"]  # fmt: skip
    with open(report, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        yield port, report, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_log_only_agent_does_not_import_unused_channels_tracing_or_the_page(
    log_only_agent: tuple[int, Path, subprocess.Popen[bytes]],
) -> None:
    """Serving and scraped, an agent with only the log channel has not imported email/smtplib, Alertmanager,
    Slack, webhook, the tracemalloc profiler, the mappings reader or the live page; the page loads on its first
    request."""
    port, report, proc = log_only_agent
    _wait(lambda: _get(f"http://127.0.0.1:{port}/health")[0] == 200, "answer on /health", proc)
    assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    assert _get(f"http://127.0.0.1:{port}/health/memory")[0] in (200, 503)
    imported = _imported(report)
    assert set(LOADED_ALWAYS) <= imported, f"the report lacks {set(LOADED_ALWAYS) - imported}"
    assert sorted(set(NOT_LOADED_WHEN_UNUSED) & imported) == []

    status, body = _get(f"http://127.0.0.1:{port}/")
    assert status == 200 and b'<script type="application/json" id="state">' in body
    _wait(lambda: "memmon.exposition.livepage" in _imported(report), "live page import after GET /", proc)


def test_configured_channels_still_import_their_modules() -> None:
    """A configured email or Alertmanager channel is built (its module imported then), in a fresh interpreter
    where nothing had imported it before."""
    code = (
        "import sys\n"
        "from memmon.alerting.routing import build_channels\n"
        "from memmon.config import load_settings\n"
        "assert 'memmon.alerting.email' not in sys.modules and 'smtplib' not in sys.modules\n"
        "channels = build_channels(load_settings(environ={'ALERT_EMAIL': 'ops@example.invalid',\n"
        "    'MEMMON_ALERTING__SMTP__HOST': '127.0.0.1',\n"
        "    'MEMMON_ALERTING__ALERTMANAGER_URL': 'http://127.0.0.1:9093'}).alerting)\n"
        "print(sorted(channels), type(channels['email']).__module__, 'smtplib' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['alertmanager',", "'email']", "memmon.alerting.email", "True"]
