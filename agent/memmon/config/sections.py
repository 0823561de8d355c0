"""The sections of the settings tree (see ``memmon.config.settings`` for the root and the loading).

Every section is frozen and rejects unknown keys; every field has a docstring (the generated docs use them).
Cross-field rules are ``rule_problems`` methods (``memmon.config.rules``): several problems of one section come
out as several lines, in the same run as the field errors. Numbers are finite (``allow_inf_nan=False`` on every
section: JSON's ``1e309`` parses to infinity) and never booleans (``Float``/``Int``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
)
from pydantic_settings import NoDecode

from memmon.config.file import MAX_NESTING, too_deep_at
from memmon.config.rules import RuleChecked, Unsure, problem, problems_error
from memmon.model import ALERT_LEVELS, Level

LOAD_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("memmon_load_environ", default=None)
"""The environment the current ``load_settings`` call reads (defaults that depend on it look here)."""

CHANNELS = ("log", "slack", "webhook", "email", "alertmanager")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def split_list(value: Any) -> Any:
    """A list from a comma-separated string or a JSON array string (env values); anything else unchanged."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            if too_deep_at(text) is not None:
                raise problems_error(problem(f"nested deeper than {MAX_NESTING} levels"))
            try:
                return json.loads(text)
            except ValueError:
                return value
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _http_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise problems_error(
                problem("not an http(s) URL", got=value, expected="http://... or https://...")
            )
    return value


def _email(value: str) -> str:
    local, at, domain = value.strip().partition("@")
    if not (at and local and domain) or "@" in domain or any(ch.isspace() for ch in value.strip()):
        raise problems_error(
            problem("not an email address", got=value, expected="one address like ops@example.com")
        )
    return value.strip()


def _level_name(value: str) -> str:
    name = value.strip().lower()
    if name not in {level.label for level in ALERT_LEVELS}:
        allowed = ", ".join(level.label for level in ALERT_LEVELS)
        raise problems_error(problem(f"unknown level {value!r}", expected=f"one of {allowed}"))
    return name


def _channel(value: str) -> str:
    name = value.strip().lower()
    if name not in CHANNELS:
        raise problems_error(problem(f"unknown channel {value!r}", expected=f"one of {', '.join(CHANNELS)}"))
    return name


def _alert_level(value: Any) -> Any:
    if isinstance(value, str):
        return Level[_level_name(value).upper()]
    if value == Level.OK:
        raise problems_error(
            problem("'ok' cannot be used here", got=value, expected="warning, critical or emergency")
        )
    return value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise problems_error(problem("empty", expected="a non-empty value, or null"))
    return value


def _not_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true as 1 for int and float fields: "check_interval": true ran at 1 s.
    if isinstance(value, bool):
        raise problems_error(problem("a boolean is not a number", got=value, expected="a number"))
    return value


def _path_given(value: Any) -> Any:
    # Path("") is ".": an empty state_dir wrote into the working directory.
    if isinstance(value, str) and not value.strip():
        raise problems_error(
            problem("empty path", got=value, expected="a path, or leave it out for the default")
        )
    return value


Float = Annotated[float, BeforeValidator(_not_boolean)]
"""A float of the settings: finite (every section's ``allow_inf_nan=False``), a boolean refused."""
Int = Annotated[int, BeforeValidator(_not_boolean)]
"""An int of the settings: a boolean refused."""
Email = Annotated[str, AfterValidator(_email)]
LevelName = Annotated[str, AfterValidator(_level_name)]
Channel = Annotated[str, AfterValidator(_channel)]
AlertLevel = Annotated[Level, BeforeValidator(_alert_level)]
Port = Annotated[Int, Field(ge=0, le=65535)]
PositiveMb = Annotated[Float, Field(gt=0)]
Percent = Annotated[Float, Field(gt=0, le=100)]
Seconds = Annotated[Float, Field(gt=0)]


class Section(RuleChecked, BaseModel):
    """Base of every section: frozen, unknown keys rejected, no inf/nan, field docstrings become descriptions;
    cross-field rules go in ``rule_problems``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


class LeakDetectionSettings(Section):
    """Flags steady growth of the target's memory (the guide's ``monitoring.leak_detection``)."""

    enabled: bool = False
    """Run leak detection."""
    threshold_growth_rate: Annotated[Float, Field(gt=0)] = 0.1
    """Growth over the window, as a fraction of the memory at its start, that counts as a suspected leak."""
    monitoring_window: Seconds = 300
    """Seconds of history the growth is measured over."""
    min_growth_mb: Annotated[Float, Field(ge=0)] = 16
    """Growth below this many MB over the window is never a leak (tiny processes do not page people)."""
    confirm_checks: Annotated[Int, Field(ge=1)] = 3
    """Consecutive checks the growth must hold before a leak is reported."""
    tracemalloc_window_seconds: Seconds = 60
    """Library mode with ``enable_tracemalloc``: the longest allocations are traced once a leak is confirmed (the
    window ends earlier once its top line holds a quarter of the detected growth)."""
    tracemalloc_frames: Annotated[Int, Field(ge=1, le=50)] = 5
    """Frames kept per allocation (cost grows with it: about 7x slower allocation at 1 frame, 14-20x at 10)."""


class UsageWatchSettings(Section):
    """The usage watcher: re-reads the target's usage counter between checks, paced by the headroom left to
    the emergency threshold, and runs a check at once when a threshold is crossed. Needs no write access and
    no kernel notification (cgroup v2, read-only cgroupfs, unprivileged)."""

    enabled: bool = True
    """Run the usage watcher."""
    worst_case_mb_per_second: Annotated[Float, Field(gt=0, le=1_000_000)] = 2000
    """The fastest leak (MiB/s) that must not cross the emergency threshold unseen between two reads."""
    min_interval_seconds: Annotated[Float, Field(ge=0.0005, le=1)] = 0.002
    """The shortest pause between two reads (near the threshold)."""
    max_interval_seconds: Annotated[Float, Field(ge=0.01, le=60)] = 1.0
    """The longest pause between two reads (far from the threshold)."""

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """max_interval_seconds >= min_interval_seconds."""
        if unsure("min_interval_seconds") or unsure("max_interval_seconds"):
            return []
        if self.min_interval_seconds > self.max_interval_seconds:
            text = f"must be at least min_interval_seconds ({_num(self.min_interval_seconds)})"
            return [problem(text, at="max_interval_seconds")]
        return []


class MonitoringSettings(Section):
    """How often and how deeply memory is sampled."""

    check_interval: Annotated[Float, Field(ge=0.05, le=3600)] = 5.0
    """Seconds between two checks, 0.05 to 3600: below 0.05 s the checks alone busy a core (the usage watcher,
    not the check loop, is what reacts within milliseconds); above an hour memory is not being watched."""
    enable_tracemalloc: bool = False
    """Trace Python allocations of memmon's own process (precise, but costs memory and CPU)."""
    prometheus_port: Port = 9091
    """Port of the separate Prometheus /metrics listener; 0 = no separate port (served on the health port)."""
    history_size: Annotated[Int, Field(ge=10)] = 2000
    """Checks kept in memory for /health/metrics/history."""
    gc_objects_every: Annotated[Int, Field(ge=1)] = 10
    """Count gc objects (O(heap)) at most every N checks."""
    leak_detection: LeakDetectionSettings = Field(default_factory=LeakDetectionSettings)
    """Leak detection (also accepted as a top-level ``leak_detection`` section)."""
    kernel_events: bool = True
    """Arm kernel memory notifications on the watched cgroup (v1 usage thresholds and OOM eventfds, v2
    ``memory.events`` inotify and PSI triggers): each one runs a check at once. Off: polling and the usage
    watcher alone."""
    usage_watch: UsageWatchSettings = Field(default_factory=UsageWatchSettings)
    """The usage watcher between checks."""
    forget_missing_targets_seconds: Seconds = 300
    """A match of a ``targets`` glob pattern missing this long (its unit stopped, its cgroup removed) is
    forgotten: its series leave /metrics and /health/targets (its history and alert log stay in the store)."""


def _check_increasing(
    model: BaseModel, unsure: Unsure, names: list[str], fallbacks: list[str] | None = None
) -> list[dict[str, Any]]:
    """Problems of one threshold family (``names`` in level order) that does not strictly increase; a level
    whose value is unsure (it was invalid) is left out of the comparison."""
    problems = []
    previous: tuple[str, float] | None = None
    for index, name in enumerate(names):
        value, origin, source = getattr(model, name), "", name
        if value is None and fallbacks is not None:
            value, source = getattr(model, fallbacks[index]), fallbacks[index]
            origin = f" (from {fallbacks[index]}, as {name} is null)"
        if value is None or unsure(name) or unsure(source):
            continue
        if previous is not None and value <= previous[1]:
            text = f"{_num(value)}{origin} must be greater than {previous[0]} ({_num(previous[1])})"
            problems.append(problem(text, at=name))
        previous = (name, value)
    return problems


class ThresholdSettings(Section):
    """Each family must increase warning < critical < emergency; null = that level has no threshold."""

    memory_warning_mb: PositiveMb | None = 1024
    """Target memory (MiB) at which the warning level starts."""
    memory_critical_mb: PositiveMb | None = 2048
    """Target memory (MiB) at which the critical level starts."""
    memory_emergency_mb: PositiveMb | None = 4096
    """Target memory (MiB) at which the emergency level starts."""
    memory_percent_warning: Percent | None = 70
    """Target memory as percent of its effective limit (cgroup limit or host RAM) for the warning level."""
    memory_percent_critical: Percent | None = 85
    """Target memory as percent of its effective limit for the critical level."""
    memory_percent_emergency: Percent | None = 95
    """Target memory as percent of its effective limit for the emergency level."""
    system_percent_warning: Percent | None = None
    """Host used-memory percent for the warning level; null = same as memory_percent_warning."""
    system_percent_critical: Percent | None = None
    """Host used-memory percent for the critical level; null = same as memory_percent_critical."""
    system_percent_emergency: Percent | None = None
    """Host used-memory percent for the emergency level; null = same as memory_percent_emergency."""
    swap_percent_warning: Percent | None = 50
    """Host swap used percent for the warning level."""
    swap_percent_critical: Percent | None = 80
    """Host swap used percent for the critical level."""
    swap_percent_emergency: Percent | None = 95
    """Host swap used percent for the emergency level."""
    resolve_margin_ratio: Annotated[Float, Field(ge=0, lt=0.5)] = 0.05
    """Hysteresis: a level resolves only below threshold * (1 - margin)."""
    min_duration_seconds: Annotated[Float, Field(ge=0)] = 0
    """A level must hold this long before it is reported (0 = at once)."""

    def _family(self, prefix: str, suffix: str = "") -> dict[Level, float | None]:
        return {level: getattr(self, f"{prefix}{level.label}{suffix}") for level in ALERT_LEVELS}

    @staticmethod
    def _set(values: Mapping[Level, float | None]) -> dict[Level, float]:
        return {level: float(value) for level, value in values.items() if value is not None}

    def mb_thresholds(self) -> dict[Level, float]:
        """``memory_*_mb`` by level, unset levels left out."""
        return self._set({level: getattr(self, f"memory_{level.label}_mb") for level in ALERT_LEVELS})

    def percent_thresholds(self) -> dict[Level, float]:
        """``memory_percent_*`` by level, unset levels left out."""
        return self._set(self._family("memory_percent_"))

    def system_thresholds(self) -> dict[Level, float]:
        """``system_percent_*`` by level, null ones taken from ``memory_percent_*``; unset levels left out."""
        own, fallback = self._family("system_percent_"), self._family("memory_percent_")
        return self._set({level: fallback[level] if value is None else value for level, value in own.items()})

    def swap_thresholds(self) -> dict[Level, float]:
        """``swap_percent_*`` by level, unset levels left out."""
        return self._set(self._family("swap_percent_"))

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """Each family strictly increases with the level."""
        labels = [level.label for level in ALERT_LEVELS]
        problems = _check_increasing(self, unsure, [f"memory_{x}_mb" for x in labels])
        problems += _check_increasing(self, unsure, [f"memory_percent_{x}" for x in labels])
        fallbacks = [f"memory_percent_{x}" for x in labels]
        problems += _check_increasing(self, unsure, [f"system_percent_{x}" for x in labels], fallbacks)
        problems += _check_increasing(self, unsure, [f"swap_percent_{x}" for x in labels])
        return problems


class AlertLevelSettings(Section):
    """Where alerts of one level are sent."""

    channels: Annotated[list[Channel], NoDecode, BeforeValidator(split_list)] = Field(default_factory=list)
    """Channel names: log, slack, webhook, email, alertmanager."""


class SmtpSettings(Section):
    """The mail server of the ``email`` channel (recipients are ``alerting.email`` / ``ALERT_EMAIL``)."""

    host: str | None = None
    """SMTP server host; null = the email channel is not configured."""
    port: Annotated[Int, Field(ge=1, le=65535)] = 587
    """SMTP port (587 submission with STARTTLS, 465 implicit TLS, 25 plain)."""
    security: Literal["starttls", "ssl", "none"] = "starttls"
    """``starttls`` (upgrade after connecting), ``ssl`` (implicit TLS) or ``none`` (plain text)."""
    username: str | None = None
    """Login user; null = no AUTH."""
    password: SecretStr | None = None
    """Login password (secret)."""
    from_address: Email | None = None
    """Sender address; null = memmon@<host name>."""
    ca_file: Annotated[str | None, BeforeValidator(_path_given)] = None
    """CA bundle that signs the server's certificate (a private CA); null = the system's."""
    verify_tls: bool = True
    """Check the server certificate (switch off only for a throw-away test server)."""


class DeliverySettings(Section):
    """How alert deliveries are attempted and retried."""

    timeout_seconds: Seconds = 10
    """Seconds one delivery attempt may take."""
    backoff_initial_seconds: Seconds = 1
    """Wait before the first retry; doubled after each failure, with +-50 % jitter."""
    backoff_max_seconds: Seconds = 300
    """Longest wait between two retries (a receiver's Retry-After may ask for longer)."""
    degraded_after_failures: Annotated[Int, Field(ge=1)] = 3
    """Consecutive failed attempts after which a channel is reported degraded."""
    spool_max_entries: Annotated[Int, Field(ge=10)] = 10_000
    """Pending deliveries kept per channel; beyond it the oldest warnings go first, never an emergency."""


class AlertingSettings(Section):
    """Alert channels and how often the same alert may repeat."""

    webhook_url: Annotated[SecretStr | None, AfterValidator(_http_url)] = None
    """Generic webhook receiving the alert payload as JSON (secret: may embed a token)."""
    slack_webhook: Annotated[SecretStr | None, AfterValidator(_http_url)] = None
    """Slack incoming-webhook URL (secret)."""
    email: Annotated[list[Email], NoDecode, BeforeValidator(split_list)] = Field(default_factory=list)
    """Alert e-mail addresses (ALERT_EMAIL is a comma-separated list)."""
    rate_limit_seconds: Annotated[Float, Field(ge=0)] = 300
    """Minimum seconds between two notifications of the same alert."""
    alert_levels: dict[LevelName, AlertLevelSettings] = Field(default_factory=dict)
    """Channels per level name (warning, critical, emergency); a level not listed uses every configured channel."""
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    """Mail server of the email channel."""
    alertmanager_url: Annotated[SecretStr | None, AfterValidator(_http_url)] = None
    """Alertmanager base URL, e.g. http://127.0.0.1:9093 (secret: may carry basic-auth credentials)."""
    alertmanager_repush_seconds: Seconds = 60
    """Firing alerts are pushed to Alertmanager again this often (it resolves alerts not re-pushed)."""
    instance: str | None = None
    """The ``instance`` label and the host shown in messages; null = the host name (or POD_NAME)."""
    send_resolved: dict[Channel, bool] = Field(default_factory=dict)
    """Per channel, whether a resolve notification is sent when the level clears (default true)."""
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    """Timeouts, retries and the spool bound."""


class ExperimentalSettings(Section):
    """Experimental features."""

    predictive_alerting: bool = False
    """Alert when the trend predicts a threshold crossing within the prediction window."""
    prediction_window: Seconds = 600
    """Seconds ahead the trend is extrapolated."""
    trend_threshold: Annotated[Float, Field(ge=0)] = 0.05
    """Relative growth over the window that counts as a trend."""


class PerformanceSettings(Section):
    """Limits on memmon's own cost."""

    monitoring_overhead_limit_percent: Annotated[Float, Field(gt=0, le=100)] = 5
    """Maximum share of wall time spent checking."""
    max_monitoring_time_seconds: Seconds = 2
    """Maximum seconds one check may take."""
    async_processing: bool = True
    """Process alerts and actions off the check loop."""
    batch_processing: bool = True
    """Write history to the store in batches."""


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise problems_error(problem(f"invalid regular expression: {exc}", got=value)) from None
    return value


class TargetSettings(Section):
    """What is watched: processes (pids or a name regex; memmon itself when neither) or a cgroup."""

    pids: Annotated[list[Annotated[Int, Field(gt=0)]], NoDecode, BeforeValidator(split_list)] = Field(
        default_factory=list
    )
    """Process ids to watch (summed)."""
    match: Annotated[str, Field(min_length=1), AfterValidator(_regex)] | None = None
    """Python regular expression matched against process command lines."""
    cgroup: Annotated[str, Field(min_length=1)] | None = None
    """Cgroup path to watch, e.g. /system.slice/app.service."""
    unit: Annotated[str, Field(min_length=1)] | None = None
    """Systemd unit whose cgroup is watched."""
    server: Literal["gunicorn", "uwsgi", "celery", "generic"] | None = None
    """A pre-fork server: the master is ``pids``, the top of ``match``'s process tree, or the main process of
    ``cgroup``/``unit``; its children are the workers, recycled one at a time (see the README's gunicorn/uWSGI
    section for what each preset sets)."""
    worker_budget_mb: PositiveMb | None = None
    """A server's worker whose unique memory (USS, MiB) exceeds this is recycled before any level is reached
    (like uWSGI's ``reload-on-rss``); null = the warning threshold's share of the limit per worker."""
    memory_limit_bytes: Annotated[Int, Field(gt=0)] | None = None
    """The target's memory limit when memmon cannot see its cgroup (a sidecar: the app container's
    ``limits.memory`` from the downward API, ``MEMMON_TARGET__MEMORY_LIMIT_BYTES``); the effective limit is the
    smallest of this, a cgroup limit and host memory."""

    @property
    def kind(self) -> str:
        """``cgroup`` when a cgroup or unit is set, else ``process``."""
        return "cgroup" if self.cgroup or self.unit else "process"

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """pids or match; cgroup or unit; a server needs its master; worker_budget_mb needs a server."""

        def known(*names: str) -> bool:
            return not any(unsure(name) for name in names)

        problems = []
        if self.pids and self.match is not None and known("pids", "match"):
            problems.append(
                problem("cannot be combined with target.pids", at="match", expected="pids or match")
            )
        masterless = not (self.pids or self.match or self.cgroup or self.unit)
        if self.server is not None and masterless and known("server", "pids", "match", "cgroup", "unit"):
            problems.append(
                problem(
                    "a server needs its master",
                    at="server",
                    expected="target.pids (--pid MASTER), target.match, target.cgroup or target.unit",
                )
            )
        if self.worker_budget_mb is not None and self.server is None and known("worker_budget_mb", "server"):
            problems.append(
                problem("only applies to a server", at="worker_budget_mb", expected="target.server")
            )
        if self.cgroup is not None and self.unit is not None and known("cgroup", "unit"):
            problems.append(
                problem("cannot be combined with target.cgroup", at="unit", expected="cgroup or unit")
            )
        return problems


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?", re.IGNORECASE)


def _bind(value: str) -> str:
    value = value.strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            raise problems_error(problem("not an IP address or host name", got=value)) from None
    return value


class ServerSettings(Section):
    """The health/API HTTP server."""

    bind: Annotated[str, AfterValidator(_bind)] = "127.0.0.1"
    """Address to listen on: an IP address or host name."""
    health_port: Port = 8080
    """Port of the health API; 0 = pick a free port."""
    api_token: Annotated[SecretStr, AfterValidator(_not_empty)] | None = None
    """Bearer token required by the action endpoints (secret)."""
    ready_fail_levels: Annotated[tuple[AlertLevel, ...], NoDecode, BeforeValidator(split_list)] = (
        Level.CRITICAL,
        Level.EMERGENCY,
    )
    """Levels at which /health/ready reports not ready."""
    live_stale_seconds: Seconds | None = None
    """Seconds without a finished check after which /health/live fails; null = 3 * check_interval +
    max_monitoring_time_seconds."""

    @property
    def ready_fail_level_set(self) -> frozenset[Level]:
        """``ready_fail_levels`` as a set."""
        return frozenset(self.ready_fail_levels)

    def live_stale_after(self, check_interval: float, max_check_seconds: float) -> float:
        """``live_stale_seconds``, or its default: three check intervals plus the longest a check may take."""
        if self.live_stale_seconds is not None:
            return self.live_stale_seconds
        return 3 * check_interval + max_check_seconds

    @field_serializer("ready_fail_levels")
    def _level_names(self, levels: tuple[Level, ...]) -> list[str]:
        return [level.label for level in levels]


def _home(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME")
    return Path(home) if home else Path.home()


def _environ() -> Mapping[str, str]:
    environ = LOAD_ENVIRON.get()
    return os.environ if environ is None else environ


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/memmon`` (when set and absolute), else ``~/.local/state/memmon``."""
    environ = _environ()
    xdg = environ.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "memmon"
    return _home(environ) / ".local" / "state" / "memmon"


def _expand_home(value: Any) -> Any:
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if text is not None and (text == "~" or text.startswith("~/")):
        return _home(_environ()) / text[2:]
    return value


class StorageSettings(Section):
    """Where history and alerts are kept (SQLite), and for how long."""

    state_dir: Annotated[Path, BeforeValidator(_expand_home), BeforeValidator(_path_given)] = Field(
        default_factory=default_state_dir
    )
    """Directory of the store; default $XDG_STATE_HOME/memmon, else ~/.local/state/memmon."""
    retention_hours: Annotated[Float, Field(gt=0)] = 24
    """Hours of check history kept."""
    alert_retention_hours: Annotated[Float, Field(gt=0)] = 168
    """Hours of alert history kept."""
    flush_interval_seconds: Seconds = 5
    """Seconds between two batched writes."""


class LoggingSettings(Section):
    """memmon's own log."""

    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)] = (
        "INFO"
    )
    """Log level (case-insensitive; stored upper-case)."""
    file: Annotated[Path | None, BeforeValidator(_expand_home), BeforeValidator(_path_given)] = None
    """Log file (the guide uses logs/production.log); null = standard error."""
    format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    """``text`` or ``json`` (one object per line)."""
    max_bytes: Annotated[Int, Field(ge=1024)] = 10 * 1024 * 1024
    """Size at which the log file is rotated."""
    backup_count: Annotated[Int, Field(ge=0)] = 5
    """Rotated log files kept."""
