"""The settings tree: the guide's keys and env vars, validation messages, precedence, secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from memmon.config import GUIDE_ENV, ConfigError, Settings, check_config_file, load_settings
from memmon.model import Level

GUIDE = Path(__file__).parent / "fixtures" / "config" / "guide-full.json"
HOME = {"HOME": "/home/ops"}


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "memmon.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def problems(config: dict[str, Any] | None = None, tmp_path: Path | None = None, **kwargs: Any) -> list[str]:
    """The problem lines of loading ``config`` as the file (or only ``kwargs`` when no config)."""
    path = write(tmp_path, config) if config is not None and tmp_path is not None else None
    kwargs.setdefault("environ", HOME)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, **kwargs)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def test_guide_full_example_lands_where_expected() -> None:
    """Every key of the guide's merged example (with // comments) is accepted and lands in its field."""
    s = check_config_file(GUIDE)
    assert (s.monitoring.check_interval, s.monitoring.enable_tracemalloc) == (30, True)
    assert (s.monitoring.prometheus_port, s.monitoring.history_size) == (9091, 2000)
    leak = s.monitoring.leak_detection
    assert (leak.enabled, leak.threshold_growth_rate, leak.monitoring_window) == (True, 0.1, 300)
    assert s.thresholds.mb_thresholds() == {Level.WARNING: 1024, Level.CRITICAL: 2048, Level.EMERGENCY: 4096}
    assert s.thresholds.percent_thresholds() == {Level.WARNING: 70, Level.CRITICAL: 85, Level.EMERGENCY: 95}
    assert s.alerting.webhook_url is not None
    assert s.alerting.webhook_url.get_secret_value() == "https://your-webhook.com/alerts"
    assert s.alerting.slack_webhook is not None
    assert (
        s.alerting.slack_webhook.get_secret_value() == "https://hooks.slack.com/services/YOUR/SLACK/WEBHOOK"
    )
    assert s.alerting.alert_levels["critical"].channels == ["log", "slack"]
    assert s.alerting.alert_levels["emergency"].channels == ["log", "slack", "email"]
    assert s.alerting.rate_limit_seconds == 300
    assert s.auto_response.enabled is True
    critical = s.auto_response.critical_actions
    assert (critical.force_gc, critical.clear_caches, critical.throttle_operations) == (True, True, True)
    emergency = s.auto_response.emergency_actions
    assert (emergency.multiple_gc_cycles, emergency.clear_all_caches, emergency.emergency_throttle) == (
        3,
        True,
        True,
    )
    assert emergency.send_immediate_alert is True
    assert (s.experimental.predictive_alerting, s.experimental.prediction_window) == (True, 600)
    assert s.experimental.trend_threshold == 0.05
    perf = s.performance
    assert (perf.monitoring_overhead_limit_percent, perf.max_monitoring_time_seconds) == (5, 2)
    assert (perf.async_processing, perf.batch_processing) == (True, True)


def test_defaults_without_file() -> None:
    """With no file and no environment every field has its documented default."""
    s = load_settings(environ=HOME)
    assert (s.monitoring.check_interval, s.server.health_port, s.server.bind) == (5.0, 8080, "127.0.0.1")
    assert s.server.ready_fail_level_set == frozenset({Level.CRITICAL, Level.EMERGENCY})
    assert s.thresholds.system_thresholds() == s.thresholds.percent_thresholds()
    assert s.thresholds.swap_thresholds() == {Level.WARNING: 50, Level.CRITICAL: 80, Level.EMERGENCY: 95}
    assert (s.logging.level, s.logging.format, s.logging.max_bytes) == ("INFO", "text", 10485760)
    assert s.target.kind == "process"
    assert s.live_stale_seconds == 3 * 5.0 + 2


def test_every_field_is_documented() -> None:
    """Every field of every section has a description (the docs are generated from them)."""
    undocumented = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            if not info.description:
                undocumented.append(prefix + name)
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                walk(sub, f"{prefix}{name}.")

    walk(Settings, "")
    assert undocumented == []


def test_unknown_key_suggests_the_close_name(tmp_path: Path) -> None:
    """A misspelt key is "<path>: unknown key" with a difflib suggestion; its (secret) value is not shown."""
    lines = problems({"alerting": {"slak_webhook": "https://hooks.slack.com/T0/SECRET"}}, tmp_path)
    assert lines == ["alerting.slak_webhook: unknown key; did you mean 'slack_webhook'?"]


def test_thresholds_must_increase(tmp_path: Path) -> None:
    """warning < critical < emergency within each family; the message names both fields and values."""
    config = {
        "thresholds": {"memory_critical_mb": 500, "swap_percent_emergency": 80, "system_percent_warning": 90}
    }
    assert problems(config, tmp_path) == [
        "thresholds.memory_critical_mb: 500 must be greater than memory_warning_mb (1024)",
        "thresholds.system_percent_critical: 85 (from memory_percent_critical, as system_percent_critical"
        " is null) must be greater than system_percent_warning (90)",
        "thresholds.swap_percent_emergency: 80 must be greater than swap_percent_critical (80)",
    ]


def test_null_threshold_levels_are_left_out(tmp_path: Path) -> None:
    """A null level has no threshold: helpers omit it and the order is checked over the others."""
    config = {
        "thresholds": {
            "memory_critical_mb": None,
            "system_percent_emergency": 99,
            "swap_percent_warning": None,
        }
    }
    s = load_settings(write(tmp_path, config), environ=HOME)
    assert s.thresholds.mb_thresholds() == {Level.WARNING: 1024, Level.EMERGENCY: 4096}
    assert s.thresholds.system_thresholds() == {Level.WARNING: 70, Level.CRITICAL: 85, Level.EMERGENCY: 99}
    assert s.thresholds.swap_thresholds() == {Level.CRITICAL: 80, Level.EMERGENCY: 95}


def test_negative_interval_is_rejected(tmp_path: Path) -> None:
    """check_interval must be >= 0.05: the line shows the path, pydantic's expectation and the value."""
    lines = problems({"monitoring": {"check_interval": -5}}, tmp_path)
    assert lines == ["monitoring.check_interval: Input should be greater than or equal to 0.05; got -5"]


def test_bad_regex_shows_the_re_error(tmp_path: Path) -> None:
    """target.match must compile; the message carries re.error's explanation."""
    lines = problems({"target": {"match": "worker(["}}, tmp_path)
    assert lines == [
        "target.match: invalid regular expression: unterminated character set at position 7; got 'worker(['"
    ]


def test_target_exclusive_fields_and_kind(tmp_path: Path) -> None:
    """pids/match and cgroup/unit are mutually exclusive; a cgroup or unit makes the target kind "cgroup"."""
    config = {"target": {"pids": [1], "match": "x", "cgroup": "/a", "unit": "b.service"}}
    assert problems(config, tmp_path) == [
        "target.match: cannot be combined with target.pids; expected pids or match",
        "target.unit: cannot be combined with target.cgroup; expected cgroup or unit",
    ]
    s = load_settings(overrides={"target": {"unit": "app.service"}}, environ=HOME)
    assert s.target.kind == "cgroup"


def test_alert_levels_reject_unknown_level_and_channel(tmp_path: Path) -> None:
    """alert_levels keys are warning/critical/emergency and channels a known set; errors name the bad one."""
    config = {
        "alerting": {"alert_levels": {"severe": {"channels": ["log"]}, "critical": {"channels": ["pager"]}}}
    }
    assert problems(config, tmp_path) == [
        "alerting.alert_levels.severe: unknown level 'severe'; expected one of warning, critical, emergency",
        "alerting.alert_levels.critical.channels.0: unknown channel 'pager';"
        " expected one of log, slack, webhook, email, alertmanager",
    ]


def test_equal_ports_are_rejected(tmp_path: Path) -> None:
    """The metrics port and the health port cannot be the same non-zero port; the line names both."""
    lines = problems({"server": {"health_port": 9091}}, tmp_path)
    assert lines == [
        "server.health_port: same port as monitoring.prometheus_port; got 9091; expected a port other than"
        " monitoring.prometheus_port (or prometheus_port 0: /metrics on this port)"
    ]
    s = load_settings(
        overrides={"server": {"health_port": 0}, "monitoring": {"prometheus_port": 0}}, environ=HOME
    )
    assert (s.server.health_port, s.monitoring.prometheus_port) == (0, 0)


def test_precedence_overrides_env_file_defaults(tmp_path: Path) -> None:
    """overrides > environment > file > defaults, field by field, all four layers at once."""
    path = write(
        tmp_path,
        {
            "server": {"health_port": 8000},
            "alerting": {"rate_limit_seconds": 100},
            "monitoring": {"check_interval": 30, "history_size": 500},
        },
    )
    environ = {
        **HOME,
        "MEMORY_HEALTH_PORT": "8001",
        "MEMMON_SERVER__HEALTH_PORT": "8002",
        "MEMMON_ALERTING__RATE_LIMIT_SECONDS": "200",
    }
    overrides = {"server": {"health_port": 8003}, "monitoring": {"history_size": 700, "check_interval": None}}
    s = load_settings(path, overrides=overrides, environ=environ)
    assert s.server.health_port == 8003  # override beats both env names and the file
    assert s.monitoring.history_size == 700  # override beats the file
    assert s.alerting.rate_limit_seconds == 200  # env beats the file
    assert s.monitoring.check_interval == 30  # file beats the default (a None override means "not given")
    assert s.logging.backup_count == 5  # default
    s = load_settings(path, environ=environ)
    assert s.server.health_port == 8001  # the guide's name beats MEMMON_SERVER__HEALTH_PORT


GUIDE_ENV_CASES = [
    ("MEMORY_HEALTH_PORT", "8181", "server.health_port", 8181),
    ("PROMETHEUS_PORT", "9191", "monitoring.prometheus_port", 9191),
    ("MONITORING_LOG_LEVEL", "debug", "logging.level", "DEBUG"),
    ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/x", "alerting.slack_webhook", "https://hooks.slack.com/x"),
    (
        "ALERT_EMAIL",
        "alerts@yourcompany.com, ops@x.org",
        "alerting.email",
        ["alerts@yourcompany.com", "ops@x.org"],
    ),
    ("MEMMON_API_TOKEN", "t0k3n", "server.api_token", "t0k3n"),
]


@pytest.mark.parametrize(("name", "value", "path", "expected"), GUIDE_ENV_CASES)
def test_guide_env_vars(name: str, value: str, path: str, expected: Any) -> None:
    """Each of the guide's environment variables (and MEMMON_API_TOKEN) sets its field."""
    assert name in GUIDE_ENV
    result: Any = load_settings(environ={**HOME, name: value})
    for part in path.split("."):
        result = getattr(result, part)
    if isinstance(result, SecretStr):
        result = result.get_secret_value()
    assert result == expected


def test_memmon_nested_env_vars() -> None:
    """MEMMON_<SECTION>__<FIELD> reaches any field: numbers, null, comma lists, nested sections."""
    environ = {
        **HOME,
        "MEMMON_THRESHOLDS__MEMORY_WARNING_MB": "512",
        "MEMMON_THRESHOLDS__MEMORY_EMERGENCY_MB": "null",
        "MEMMON_TARGET__PIDS": "12,34",
        "MEMMON_SERVER__READY_FAIL_LEVELS": "emergency",
        "MEMMON_MONITORING__LEAK_DETECTION__ENABLED": "true",
        "MEMMON_ALERTING__ALERT_LEVELS__WARNING__CHANNELS": '["log", "webhook"]',
    }
    s = load_settings(environ=environ)
    assert s.thresholds.mb_thresholds() == {Level.WARNING: 512, Level.CRITICAL: 2048}
    assert s.target.pids == [12, 34]
    assert s.server.ready_fail_level_set == frozenset({Level.EMERGENCY})
    assert s.monitoring.leak_detection.enabled is True
    assert s.alerting.alert_levels["warning"].channels == ["log", "webhook"]


def test_env_validation_error_names_the_variable() -> None:
    """A bad value from the environment names the variable it came from, guide name or MEMMON_ name."""
    environ = {**HOME, "MEMORY_HEALTH_PORT": "http", "MEMMON_PERFORMANCE__ASYNC_PROCESSING": "maybe"}
    assert problems(environ=environ) == [
        "performance.async_processing (from MEMMON_PERFORMANCE__ASYNC_PROCESSING): Input should be a valid"
        " boolean, unable to interpret input; got 'maybe'",
        "server.health_port (from MEMORY_HEALTH_PORT): Input should be a valid integer, unable to parse"
        " string as an integer; got 'http'",
    ]


def test_unparsable_env_json_is_reported_with_the_others() -> None:
    """A MEMMON_ variable that is not valid JSON where JSON is needed is one more problem line."""
    environ = {**HOME, "MEMMON_MONITORING": "{check_interval: 5}", "MEMMON_SERVER__HEALTH_PORT": "-1"}
    lines = problems(environ=environ)
    assert lines[0].startswith("monitoring (from MEMMON_MONITORING): cannot parse the environment: Expecting")
    expected = (
        "server.health_port (from MEMMON_SERVER__HEALTH_PORT): Input should be greater than or equal to 0"
    )
    assert lines[1:] == [f"{expected}; got '-1'"]


def test_secrets_never_shown(tmp_path: Path) -> None:
    """Secret values are "<redacted>" in errors, masked in repr, "***"/None in redacted_dict."""
    lines = problems(
        {"alerting": {"webhook_url": "ftp://user:hunter2@example.com"}, "server": {"api_token": 12345}},
        tmp_path,
        environ={**HOME, "SLACK_WEBHOOK_URL": "hunter2-not-a-url"},
    )
    assert lines == [
        "alerting.webhook_url: not an http(s) URL; got <redacted>; expected http://... or https://...",
        "alerting.slack_webhook (from SLACK_WEBHOOK_URL): not an http(s) URL; got <redacted>;"
        " expected http://... or https://...",
        "server.api_token: Input should be a valid string; got <redacted>",
    ]
    s = load_settings(
        overrides={"server": {"api_token": "hunter2"}, "alerting": {"webhook_url": "https://u:hunter2@h/x"}},
        environ=HOME,
    )
    assert "hunter2" not in repr(s)
    assert isinstance(s.server.api_token, SecretStr)
    data = s.redacted_dict()
    assert "hunter2" not in json.dumps(data)
    assert (data["server"]["api_token"], data["alerting"]["webhook_url"]) == ("***", "***")
    assert data["alerting"]["slack_webhook"] is None
    assert data["server"]["ready_fail_levels"] == ["critical", "emergency"]


def test_leak_detection_top_level_alias(tmp_path: Path) -> None:
    """A top-level leak_detection becomes monitoring.leak_detection; giving both places is an error."""
    s = load_settings(
        write(tmp_path, {"leak_detection": {"enabled": True, "monitoring_window": 60}}), environ=HOME
    )
    assert (s.monitoring.leak_detection.enabled, s.monitoring.leak_detection.monitoring_window) == (True, 60)
    assert s.leak_detection is None
    both = {"leak_detection": {"enabled": True}, "monitoring": {"leak_detection": {"enabled": False}}}
    assert problems(both, tmp_path) == [
        "leak_detection: given both at top level and under monitoring; expected one of them"
    ]


def test_state_dir_default_follows_xdg_state_home() -> None:
    """storage.state_dir defaults to $XDG_STATE_HOME/memmon of the given environ, else ~/.local/state/..."""
    s = load_settings(environ={**HOME, "XDG_STATE_HOME": "/var/state"})
    assert s.storage.state_dir == Path("/var/state/memmon")
    assert load_settings(environ=HOME).storage.state_dir == Path("/home/ops/.local/state/memmon")
    relative = {**HOME, "XDG_STATE_HOME": "state"}  # the XDG spec says to ignore a relative path
    assert load_settings(environ=relative).storage.state_dir == Path("/home/ops/.local/state/memmon")


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    """All problems of one load come out together, one line each (3 problems -> 3 lines)."""
    config = {"monitoring": {"history_size": 5}, "logging": {"level": "LOUD"}}
    lines = problems(config, tmp_path, environ={**HOME, "PROMETHEUS_PORT": "70000"})
    assert len(lines) == 3
    assert lines[0].startswith("monitoring.prometheus_port (from PROMETHEUS_PORT): Input should be less than")
    assert lines[1] == "monitoring.history_size: Input should be greater than or equal to 10; got 5"
    assert lines[2].startswith("logging.level: Input should be 'DEBUG', 'INFO',")


def test_invalid_json_file_through_load_settings(tmp_path: Path) -> None:
    """load_settings reports a broken file with file:line:column before any validation."""
    path = write(tmp_path, '{"monitoring": {"check_interval": 5,}}')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=HOME)
    assert caught.value.problems == [
        f"{path}:1:37: invalid JSON: Expecting property name enclosed in double quotes"
    ]


def test_check_config_file_ignores_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config judges the file and defaults only: environment variables are not applied."""
    monkeypatch.setenv("MEMORY_HEALTH_PORT", "not-a-port")
    monkeypatch.setenv("MEMMON_MONITORING__CHECK_INTERVAL", "-1")
    s = check_config_file(write(tmp_path, {"server": {"health_port": 8088}}))
    assert (s.server.health_port, s.monitoring.check_interval) == (8088, 5.0)


def test_settings_are_frozen() -> None:
    """Settings and sections cannot be changed after loading."""
    s = load_settings(environ=HOME)
    with pytest.raises(ValueError, match="frozen"):
        s.server.health_port = 1  # type: ignore[misc]


def test_unknown_memmon_env_section_is_an_error() -> None:
    """A MEMMON_ variable naming no section (a typo) is reported with a suggestion instead of being ignored."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MEMMON_THRESHOLD__MEMORY_WARNING_MB": "5", "MEMMON_API_TOKEN": "t"})
    (line,) = caught.value.problems
    assert line.startswith("MEMMON_THRESHOLD__MEMORY_WARNING_MB: unknown setting 'threshold'")
    assert "did you mean MEMMON_THRESHOLDS__" in line


def test_kernel_watch_settings_are_validated(tmp_path: Path) -> None:
    """The usage watcher's rate and pauses, and the memory.high guard's mode and margin, reject bad values
    naming the field; min above max is one problem at max_interval_seconds."""
    lines = problems(
        {
            "monitoring": {
                "kernel_events": "sometimes",
                "usage_watch": {"worst_case_mb_per_second": 0, "min_interval_seconds": 0.5,
                                "max_interval_seconds": 0.1},
            },
            "auto_response": {"memory_high_guard": {"enabled": "always", "margin_percent": 60}},
        },
        tmp_path,
    )  # fmt: skip
    joined = "\n".join(lines)
    for field in (
        "monitoring.kernel_events",
        "monitoring.usage_watch.worst_case_mb_per_second",
        "auto_response.memory_high_guard.enabled",
        "auto_response.memory_high_guard.margin_percent",
    ):
        assert field in joined, joined
    lines = problems({"monitoring": {"usage_watch": {"min_interval_seconds": 0.5, "max_interval_seconds": 0.1}}},
                     tmp_path)  # fmt: skip
    assert lines == [
        "monitoring.usage_watch.max_interval_seconds: must be at least min_interval_seconds (0.5)"
    ], lines
