"""The root of the settings tree and how it is loaded: overrides > environment > config file > defaults.

``load_settings`` merges the layers (pydantic-settings sources, ``memmon.config.sources``), validates once and
raises one ``ConfigError`` listing every problem, one line each, with the dotted field path and, for a value from
the environment, the variable it came from (``memmon.config.problems``). Environment: the guide's names
(``GUIDE_ENV``) and ``MEMMON_<SECTION>__<FIELD>``. Secrets (``SecretStr`` fields, and anything named like a
token, password or webhook) never appear in errors, in ``repr`` or in ``redacted_dict``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from memmon.config.actions import AutoResponseSettings
from memmon.config.alerting import AlertingSettings
from memmon.config.file import ConfigError, read_config_file
from memmon.config.node import NODE_NAME_ENV, NodeSettings
from memmon.config.problems import redact, validation_problems
from memmon.config.restart import restart_problems, with_server_preset
from memmon.config.rules import RuleChecked, Unsure, problem, problems_error
from memmon.config.runtime import LoggingSettings, ServerSettings, StorageSettings
from memmon.config.sections import (
    ExperimentalSettings,
    LeakDetectionSettings,
    MonitoringSettings,
    PerformanceSettings,
    TargetSettings,
    ThresholdSettings,
)
from memmon.config.sources import (
    GUIDE_ENV,
    NONE_STR,
    Load,
    env_and_file_sources,
    reading,
    unknown_env_sections,
)
from memmon.config.targets import TargetEntry, merged, override_problems

__all__ = ["GUIDE_ENV", "ConfigError", "Settings", "check_config_file", "load_settings"]


class _BothLeakDetections:
    """Marks a top-level ``leak_detection`` given together with ``monitoring.leak_detection``."""


class Settings(RuleChecked, BaseSettings):
    """The whole configuration. Load it with ``load_settings``; every section is frozen. The rules across
    sections are ``rule_problems`` (reported together with the field errors)."""

    model_config = SettingsConfigDict(
        env_prefix="MEMMON_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        env_parse_none_str=NONE_STR,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        allow_inf_nan=False,
    )

    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    """Sampling: interval, depth, metrics port, leak detection."""
    leak_detection: LeakDetectionSettings | None = None
    """Alias of monitoring.leak_detection (the issue lists it as a section); moved there by validation, so it
    is always None afterwards: read ``monitoring.leak_detection``."""
    thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    """Level thresholds and hysteresis."""
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    """Alert channels and rate limit."""
    auto_response: AutoResponseSettings = Field(default_factory=AutoResponseSettings)
    """Automatic actions per level."""
    experimental: ExperimentalSettings = Field(default_factory=ExperimentalSettings)
    """Experimental features."""
    performance: PerformanceSettings = Field(default_factory=PerformanceSettings)
    """Limits on memmon's own cost."""
    target: TargetSettings = Field(default_factory=TargetSettings)
    """What is watched (one target; ``targets`` for several)."""
    targets: list[TargetEntry] = Field(default_factory=list)
    """Several targets in one agent, each with its own overrides (see ``memmon.config.targets``); empty = the one
    ``target``."""
    node: NodeSettings = Field(default_factory=NodeSettings)
    """Kubernetes node mode: every pod and container of the node as a target (see the ``node`` section)."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """The health/API server."""
    storage: StorageSettings = Field(default_factory=StorageSettings)
    """History and alert store."""
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    """memmon's own log."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides (init kwargs) > guide env names > MEMMON_* env > config file > defaults."""
        return (init_settings, *env_and_file_sources(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _mark_both_leak_detections(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("leak_detection") is not None:
            nested = data.get("monitoring")
            if (isinstance(nested, Mapping) and "leak_detection" in nested) or (
                isinstance(nested, BaseModel) and "leak_detection" in nested.model_fields_set
            ):
                return {**data, "leak_detection": _BothLeakDetections()}
        return data

    @field_validator("leak_detection", mode="before")
    @classmethod
    def _one_leak_detection(cls, value: Any) -> Any:
        if isinstance(value, _BothLeakDetections):
            raise problems_error(
                problem("given both at top level and under monitoring", expected="one of them")
            )
        return value

    @model_validator(mode="after")
    def _move_leak_detection(self) -> Settings:
        if self.leak_detection is not None:
            monitoring = self.monitoring.model_copy(update={"leak_detection": self.leak_detection})
            object.__setattr__(self, "monitoring", monitoring)
            object.__setattr__(self, "leak_detection", None)
        return self

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """Distinct ports; a unit for the systemd strategy; a pre-fork server for recycle."""
        problems = []
        port = self.server.health_port
        ports_known = not (unsure("server.health_port") or unsure("monitoring.prometheus_port"))
        if ports_known and port and port == self.monitoring.prometheus_port:
            expected = (
                "a port other than monitoring.prometheus_port (or prometheus_port 0: /metrics on this port)"
            )
            message = "same port as monitoring.prometheus_port"
            problems.append(problem(message, at="server.health_port", got=port, expected=expected))
        if self.node.enabled and not unsure("node.enabled"):
            for section in ("target", "targets"):
                if section in self.model_fields_set and getattr(self, section) and not unsure(section):
                    problems.append(
                        problem(
                            "cannot be combined with node mode",
                            at=section,
                            expected="node.enabled: false, or no target/targets (node mode finds the pods)",
                        )
                    )
            return problems
        if not self.targets:
            return problems + restart_problems(self.auto_response, self.target, unsure)
        if self.target.model_fields_set and not unsure("target"):
            problems.append(
                problem(
                    "cannot be combined with targets",
                    at="target",
                    expected="the target as an entry of targets",
                )
            )
        names: dict[str, int] = {}
        for index, entry in enumerate(self.targets):
            at = f"targets.{index}"
            if unsure(at):
                continue
            overrides = override_problems(self.thresholds, self.auto_response, entry, at)
            problems += overrides
            if entry.server is not None and entry.is_pattern:
                expected = "one cgroup or unit (no glob) for a server"
                problems.append(
                    problem(
                        "a pre-fork server needs one target, not a pattern",
                        at=f"{at}.server",
                        expected=expected,
                    )
                )
            name = entry.default_name()
            if name is not None and name in names:
                problems.append(
                    problem(
                        f"the name {name!r} is also targets.{names[name]}'s",
                        at=f"{at}.name",
                        expected="a distinct name per target (targets.N.name)",
                    )
                )
            names.setdefault(name or "", index)
            if not overrides:
                own = self.for_target(entry)
                found = restart_problems(own.auto_response, own.target, lambda _path: False)
                problems += [{**item, "at": f"{at}.{item['at']}"} for item in found]
        return problems

    @model_validator(mode="after")
    def _server_preset(self) -> Settings:
        """``target.server`` picks the strategy (when none is configured) and the worker signal."""
        object.__setattr__(self, "auto_response", with_server_preset(self.auto_response, self.target.server))
        return self

    def target_entries(self) -> list[TargetEntry]:
        """The targets to watch: ``targets``, or the one ``target`` as an entry of its own."""
        if self.targets:
            return list(self.targets)
        return [TargetEntry.model_validate(self.target.model_dump())]

    @property
    def multi_target(self) -> bool:
        """Whether ``targets`` lists the targets (the host is then judged once, on its own, as ``host``)."""
        return bool(self.targets) or self.node.enabled

    def for_target(self, entry: TargetEntry) -> Settings:
        """These settings as one target sees them: its ``target`` section, and its thresholds, auto_response and
        routing over the global ones (entries were validated with the rest at start-up)."""
        thresholds, response = merged(self.thresholds, self.auto_response, entry)
        # Built, not validated again: the entry was validated at start-up, and a pattern's match carries both the
        # cgroup it found and its unit (what the systemd strategy restarts), which the config itself may not.
        target = TargetSettings.model_construct(**entry.model_dump(include=set(TargetSettings.model_fields)))
        update: dict[str, Any] = {
            "target": target,
            "targets": [],
            "thresholds": thresholds,
            "auto_response": with_server_preset(response, target.server),
        }
        if entry.alert_levels is not None:
            update["alerting"] = self.alerting.model_copy(update={"alert_levels": entry.alert_levels})
        return self.model_copy(update=update)

    @property
    def live_stale_seconds(self) -> float:
        """Seconds without a finished check after which /health/live fails (see server.live_stale_seconds)."""
        return self.server.live_stale_after(
            self.monitoring.check_interval, self.performance.max_monitoring_time_seconds
        )

    def redacted_dict(self) -> dict[str, Any]:
        """The effective config as JSON-ready data; secrets "***" when set, None when unset."""
        redacted = redact(self.model_dump(exclude={"leak_detection"}))
        assert isinstance(redacted, dict)
        return redacted


def _without_none(data: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides with None leaves dropped: a command-line option that was not given."""
    return {
        key: _without_none(value) if isinstance(value, Mapping) else value
        for key, value in data.items()
        if value is not None
    }


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The settings from ``overrides`` > environment > the config file > defaults; ``ConfigError`` lists every
    problem. ``overrides`` is nested like the file (``{"server": {"health_port": 8081}}``; None values are
    ignored); ``environ`` defaults to ``os.environ``."""
    environ = os.environ if environ is None else environ
    file_data = read_config_file(config_path) if config_path is not None else {}
    load = Load(environ=environ, file_data=file_data, problems=[], layers={})
    init = _without_none(overrides or {})
    load.problems = unknown_env_sections(environ, Settings.model_fields)
    with reading(load):
        try:
            settings = Settings(**init)
        except ValidationError as exc:
            raise ConfigError(
                (load.problems or []) + validation_problems(exc, Settings, load, init)
            ) from None
    if load.problems:
        raise ConfigError(load.problems)
    return settings


def check_config_file(
    path: str | os.PathLike[str] | None, *, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """The settings of the file (and flags) alone, defaults, no environment variables (but where defaults come
    from: the home directory, and the node's name a DaemonSet gives node mode); ``ConfigError`` if invalid."""
    kept = ("HOME", "XDG_STATE_HOME", NODE_NAME_ENV)
    environ = {name: os.environ[name] for name in kept if name in os.environ}
    return load_settings(path, overrides=overrides, environ=environ)
