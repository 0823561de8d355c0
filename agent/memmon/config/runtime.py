"""The sections of memmon's own running: its health/API server, its store and its log.

Their path defaults and ``~`` read ``HOME`` and ``XDG_STATE_HOME`` from the environment the ``load_settings`` call
was given (``load_environ``), which need not be the process's.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_serializer
from pydantic_settings import NoDecode

from memmon.config.fields import AlertLevel, Float, Int, Port, Seconds, Section, path_given, split_list
from memmon.config.rules import problem, problems_error
from memmon.config.sources import load_environ
from memmon.model import Level

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


def _not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise problems_error(problem("empty", expected="a non-empty value, or null"))
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


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/memmon`` (when set and absolute), else ``~/.local/state/memmon``."""
    environ = load_environ()
    xdg = environ.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "memmon"
    return _home(environ) / ".local" / "state" / "memmon"


def _expand_home(value: Any) -> Any:
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if text is not None and (text == "~" or text.startswith("~/")):
        return _home(load_environ()) / text[2:]
    return value


class StorageSettings(Section):
    """Where history and alerts are kept (SQLite), and for how long."""

    state_dir: Annotated[Path, BeforeValidator(_expand_home), BeforeValidator(path_given)] = Field(
        default_factory=default_state_dir
    )
    """Directory of the store; default $XDG_STATE_HOME/memmon, else ~/.local/state/memmon."""
    retention_hours: Annotated[Float, Field(gt=0)] = 24
    """Hours of check history kept."""
    alert_retention_hours: Annotated[Float, Field(gt=0)] = 168
    """Hours of alert history kept."""
    flush_interval_seconds: Seconds = 5
    """Seconds between two batched writes."""


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class LoggingSettings(Section):
    """memmon's own log."""

    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)] = (
        "INFO"
    )
    """Log level (case-insensitive; stored upper-case)."""
    file: Annotated[Path | None, BeforeValidator(_expand_home), BeforeValidator(path_given)] = None
    """Log file (the guide uses logs/production.log); null = standard error."""
    format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    """``text`` or ``json`` (one object per line)."""
    max_bytes: Annotated[Int, Field(ge=1024)] = 10 * 1024 * 1024
    """Size at which the log file is rotated."""
    backup_count: Annotated[Int, Field(ge=0)] = 5
    """Rotated log files kept."""
