"""The memmon command as operators run it: a real process, real ports, signals and exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE_CONFIG = ROOT / "tests" / "fixtures" / "config" / "guide-full.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NO_EXTERNAL_RECEIVERS = {
    "MEMMON_ALERTING__SLACK_WEBHOOK": "null",
    "MEMMON_ALERTING__WEBHOOK_URL": "null",
}
"""The guide's example config names real Slack and webhook hosts: a test agent must never post there."""


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MEMMON_")
        and k
        not in (
            "MEMORY_HEALTH_PORT",
            "PROMETHEUS_PORT",
            "MONITORING_LOG_LEVEL",
            "SLACK_WEBHOOK_URL",
            "ALERT_EMAIL",
        )
    }
    env.update(extra)
    return env


def memmon(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "memmon", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or clean_env(),
        **kwargs,
    )


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"memmon exited early with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            status, body = get_json(f"http://127.0.0.1:{port}/health")
            if status == 200 and body["status"] != "starting":
                return body
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise AssertionError("memmon did not serve /health in time")


def stop(proc: subprocess.Popen[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, time.monotonic() - started, err


WARNING_FROM_1_MB = {
    "MEMMON_THRESHOLDS__MEMORY_WARNING_MB": "1",
    "MEMMON_THRESHOLDS__MEMORY_CRITICAL_MB": "100000",
    "MEMMON_THRESHOLDS__MEMORY_EMERGENCY_MB": "200000",
}
"""Thresholds that put any process at warning and nothing higher."""


@pytest.fixture
def agent_args(tmp_path: Path) -> tuple[list[str], int, Path]:
    port = free_port()
    state = tmp_path / "state"
    args = [
        "--health-port",
        str(port),
        "--prometheus-port",
        "0",
        "--state-dir",
        str(state),
        "--check-interval",
        "0.2",
    ]
    return args, port, state


def test_runs_serves_and_stops_cleanly_on_sigterm(agent_args) -> None:
    """memmon serves /health, and SIGTERM makes it flush the store and exit 0 within 5 s."""
    args, port, state = agent_args
    proc = memmon(*args)
    body = wait_ready(port, proc)
    assert body["monitoring_active"] is True
    time.sleep(0.5)
    code, seconds, err = stop(proc)
    assert code == 0, err
    assert seconds < 5
    with sqlite3.connect(state / "memmon.db") as db:
        (count,) = db.execute("SELECT COUNT(*) FROM samples").fetchone()
    assert count >= 2


def test_history_and_alerts_survive_a_restart(agent_args) -> None:
    """After a restart, samples and the alert log of the previous run are still served."""
    args, port, _state = agent_args
    env = clean_env(**WARNING_FROM_1_MB)
    first = memmon(*args, env=env)
    wait_ready(port, first)
    time.sleep(0.6)
    first_stop = time.time()
    assert stop(first)[0] == 0
    second = memmon(*args, env=env)
    try:
        wait_ready(port, second)
        _, history = get_json(f"http://127.0.0.1:{port}/health/metrics/history?hours=1")
        _, alerts = get_json(f"http://127.0.0.1:{port}/health/alerts?hours=1")
        _, health = get_json(f"http://127.0.0.1:{port}/health")
    finally:
        assert stop(second)[0] == 0
    from datetime import datetime

    before = [
        s
        for s in history["samples"]
        if datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00")).timestamp() < first_stop
    ]
    assert len(before) >= 2
    # The warning alert of the first run is resumed, not fired a second time.
    assert alerts["total_alerts"] == 1 and alerts["active_alerts"] == 1
    assert health["status"] == "warning"


def test_one_log_line_per_level_change_and_json_logs(agent_args) -> None:
    """A level change is logged once (not every check), and --log-format json writes one JSON object per line."""
    args, port, _state = agent_args
    env = clean_env(**WARNING_FROM_1_MB)
    proc = memmon(*args, "--log-format", "json", env=env)
    wait_ready(port, proc)
    time.sleep(1.0)  # about five more checks at the same level
    code, _seconds, err = stop(proc)
    assert code == 0
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    changes = [r for r in records if r["message"].startswith("memory level ")]
    assert len(changes) == 1
    assert changes[0]["message"].startswith("memory level ok -> warning: process_memory")
    assert changes[0]["level"] == "warning"


def test_port_in_use_exits_2_naming_the_setting(tmp_path: Path) -> None:
    """A health port already taken stops start-up with exit code 2 and a line naming the setting and address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = memmon("--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(tmp_path))
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert f"server.health_port: cannot listen on 127.0.0.1:{port}: address already in use" in err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--check-interval", "-1"], "monitoring.check_interval"),
        (["--match", "(unclosed"], "target.match"),
        (["--health-port", "9091"], "monitoring.prometheus_port"),
        (["--log-level", "LOUD"], "logging.level"),
    ],
)
def test_bad_flags_exit_2_naming_the_field(flags: list[str], expected: str, tmp_path: Path) -> None:
    """A bad value on the command line exits 2 before anything starts, naming the field path."""
    proc = memmon(*flags, "--state-dir", str(tmp_path))
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert expected in err and "config error" in err


def test_check_config_accepts_the_guide_and_rejects_problems(tmp_path: Path) -> None:
    """check-config passes the guide's own example (with // comments) and lists each problem of a bad file."""
    proc = memmon("check-config", str(GUIDE_CONFIG))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "ok" in out
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"monitoring": {"check_interval": -5},\n "thresholds": {"memory_warning_mb": 900,'
        ' "memory_critical_mb": 500}, "alerting": {"slak_webhook": "x"}}'
    )
    proc = memmon("check-config", str(bad))
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    lines = [line for line in err.splitlines() if "config error" in line]
    assert len(lines) == 3
    assert any("monitoring.check_interval" in line for line in lines)
    assert any("memory_critical_mb" in line for line in lines)
    assert any("alerting.slak_webhook" in line for line in lines)
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "monitoring": {\n    "check_interval": 30,,\n  }\n}')
    proc = memmon("check-config", str(broken))
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and f"{broken}:3:" in err


def test_guide_start_script_runs_with_the_guide_flags(tmp_path: Path) -> None:
    """scripts/start_production_monitoring.py accepts the guide's flags (--config, ports, --log-level) and runs."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "start_production_monitoring.py"),
            "--config",
            str(GUIDE_CONFIG),
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
        env=clean_env(**NO_EXTERNAL_RECEIVERS),
    )
    # The guide's config checks every 30 s; the first check runs at once.
    body = wait_ready(port, proc, timeout=45)
    assert body["monitoring_active"] is True
    assert stop(proc)[0] == 0


def test_unusable_state_dir_exits_2(tmp_path: Path) -> None:
    """A state directory that cannot be created stops start-up with exit code 2 naming storage.state_dir."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = memmon("--health-port", "0", "--prometheus-port", "0", "--state-dir", str(blocker / "state"))
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "storage.state_dir" in err and str(blocker) in err
