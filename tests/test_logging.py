"""Log destinations, formats, rotation, and secrets kept out of logs and API output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from memmon.kits.logsetup import configure_logging
from tests.test_cli import clean_env, free_port, get_json, memmon, stop, wait_ready


def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    """--log-file writes to the file (creating its directory) and rotates it at max_bytes."""
    log_file = tmp_path / "logs" / "production.log"
    handler = configure_logging("INFO", file=log_file, max_bytes=2048, backup_count=2)
    try:
        logger = logging.getLogger("memmon.test")
        for index in range(200):
            logger.info("line %d %s", index, "x" * 40)
    finally:
        logging.getLogger("memmon").removeHandler(handler)
        handler.close()
    assert log_file.is_file() and (tmp_path / "logs" / "production.log.1").is_file()
    assert not (tmp_path / "logs" / "production.log.3").exists()
    assert log_file.stat().st_size <= 2048


def test_json_format_carries_extra_fields(tmp_path: Path) -> None:
    """--log-format json writes one object per line with the record's extra fields."""
    log_file = tmp_path / "memmon.log"
    handler = configure_logging("INFO", file=log_file, fmt="json")
    try:
        logging.getLogger("memmon.alerts").warning("alert firing", extra={"severity": "warning"})
    finally:
        logging.getLogger("memmon").removeHandler(handler)
        handler.close()
    record = json.loads(log_file.read_text().splitlines()[0])
    assert record["message"] == "alert firing" and record["severity"] == "warning"
    assert record["level"] == "warning" and record["ts"].endswith("Z")


def test_secrets_never_reach_logs_or_api(tmp_path: Path) -> None:
    """Webhook URLs and the API token given by env never appear in debug logs or any API answer."""
    port = free_port()
    secrets = {
        "SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/services/T000/B000/SECRETSLACK",
        "MEMMON_ALERTING__WEBHOOK_URL": "https://user:SECRETPASS@hooks.invalid/alerts",
        "MEMMON_API_TOKEN": "SECRETTOKEN",
    }
    proc = memmon("--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(tmp_path),
                  "--check-interval", "0.2", "--log-level", "DEBUG", env=clean_env(**secrets))  # fmt: skip
    wait_ready(port, proc)
    answers = [
        get_json(f"http://127.0.0.1:{port}{path}") for path in ("/health", "/health/memory", "/health/alerts")
    ]
    code, _seconds, err = stop(proc)
    assert code == 0
    for secret in ("SECRETSLACK", "SECRETPASS", "SECRETTOKEN"):
        assert secret not in err
        assert all(secret not in json.dumps(body) for _status, body in answers)
