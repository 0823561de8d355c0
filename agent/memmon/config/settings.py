"""The settings tree and how it is loaded: overrides > environment > config file > defaults.

``load_settings`` merges the layers (pydantic-settings sources), validates once and raises one ``ConfigError``
listing every problem, one line each, with the dotted field path and, for a value from the environment, the
variable it came from. Environment: the guide's names (``GUIDE_ENV``) and ``MEMMON_<SECTION>__<FIELD>``.
Secrets (``SecretStr`` fields, and anything named like a token, password or webhook) never appear in errors,
in ``repr`` or in ``redacted_dict``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from memmon.config.actions import SERVER_PRESETS, AutoResponseSettings
from memmon.config.file import MAX_NESTING, ConfigError, read_config_file, too_deep_at
from memmon.config.node import NODE_NAME_ENV, NodeSettings
from memmon.config.rules import PROBLEMS, RuleChecked, Unsure, problem, problems_error
from memmon.config.sections import (
    LOAD_ENVIRON,
    AlertingSettings,
    ExperimentalSettings,
    LeakDetectionSettings,
    LoggingSettings,
    MonitoringSettings,
    PerformanceSettings,
    ServerSettings,
    StorageSettings,
    TargetSettings,
    ThresholdSettings,
)
from memmon.config.targets import TargetEntry, merged, override_problems

__all__ = ["GUIDE_ENV", "ConfigError", "Settings", "check_config_file", "load_settings"]

GUIDE_ENV: Mapping[str, tuple[str, str]] = {
    "MEMORY_HEALTH_PORT": ("server", "health_port"),
    "PROMETHEUS_PORT": ("monitoring", "prometheus_port"),
    "MONITORING_LOG_LEVEL": ("logging", "level"),
    "SLACK_WEBHOOK_URL": ("alerting", "slack_webhook"),
    "ALERT_EMAIL": ("alerting", "email"),
    "MEMMON_API_TOKEN": ("server", "api_token"),
}
"""The guide's environment variables (and ``MEMMON_API_TOKEN``) -> (section, field); they beat MEMMON_*."""

_NONE_STR = "null"
_SECRET_NAME = re.compile(r"passw|secret|token|api_?key|credential|webhook", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")


@dataclass
class _Load:
    """What the current ``load_settings`` call reads, and what its sources saw (for error provenance)."""

    environ: Mapping[str, str]
    file_data: dict[str, Any]
    problems: list[str] | None = None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)


_LOAD: ContextVar[_Load | None] = ContextVar("memmon_load", default=None)


class _GuideEnvSource(PydanticBaseSettingsSource):
    """The guide's environment variables, as a nested dict."""

    def __init__(self, settings_cls: type[BaseSettings], load: _Load) -> None:
        super().__init__(settings_cls)
        self.load = load

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ maps the variables itself

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, (section, key) in GUIDE_ENV.items():
            value = self.load.environ.get(name)
            if value:  # empty = unset
                data.setdefault(section, {})[key] = None if value == _NONE_STR else value
        self.load.layers["guide"] = data
        return data


class _MemmonEnvSource(EnvSettingsSource):
    """pydantic-settings' own env source (MEMMON_<SECTION>__<FIELD>), reading the given environ."""

    def __init__(self, settings_cls: type[BaseSettings], load: _Load) -> None:
        self.load = load
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self.load.environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        prefix = f"MEMMON_{field_name}".upper()
        names = sorted(
            n for n in self.load.environ if n.upper() == prefix or n.upper().startswith(prefix + "__")
        )
        # json.loads recurses once per level: 50,000 '[' in one variable was a RecursionError traceback.
        deep = [name for name in names if too_deep_at(self.load.environ[name]) is not None]
        if deep and self.load.problems is not None:
            for name in deep:
                path = name[len("MEMMON_") :].lower().replace("__", ".")
                self.load.problems.append(f"{path} (from {name}): nested deeper than {MAX_NESTING} levels")
            return None
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            if self.load.problems is None:
                raise
            self.load.problems.append(
                f"{field_name} (from {', '.join(names)}): cannot parse the environment: {exc}; "
                "expected JSON for objects and arrays"
            )
            return None

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        self.load.layers["memmon"] = data
        return data


class _FileSource(PydanticBaseSettingsSource):
    """The config file, already read (``memmon.config.file``)."""

    def __init__(self, settings_cls: type[BaseSettings], load: _Load) -> None:
        super().__init__(settings_cls)
        self.load = load

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: the file is one dict

    def __call__(self) -> dict[str, Any]:
        return dict(self.load.file_data)


class _BothLeakDetections:
    """Marks a top-level ``leak_detection`` given together with ``monitoring.leak_detection``."""


class Settings(RuleChecked, BaseSettings):
    """The whole configuration. Load it with ``load_settings``; every section is frozen. The rules across
    sections are ``rule_problems`` (reported together with the field errors)."""

    model_config = SettingsConfigDict(
        env_prefix="MEMMON_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        env_parse_none_str=_NONE_STR,
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
        load = _LOAD.get() or _Load(environ=os.environ, file_data={})
        return (
            init_settings,
            _GuideEnvSource(settings_cls, load),
            _MemmonEnvSource(settings_cls, load),
            _FileSource(settings_cls, load),
        )

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
            return problems + self._restart_problems(unsure)
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
                own = self.for_target(entry)._restart_problems(lambda _path: False)
                problems += [{**item, "at": f"{at}.{item['at']}"} for item in own]
        return problems

    def _restart_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """A unit for the systemd strategy; a pre-fork server for recycle."""
        problems = []
        restart_path = "auto_response.emergency_actions.graceful_restart"
        restart = self.auto_response.emergency_actions.graceful_restart
        strategy_known = not unsure(f"{restart_path}.strategy")
        unit_known = not (unsure(f"{restart_path}.unit") or unsure("target.unit"))
        if (
            strategy_known
            and unit_known
            and restart.strategy == "systemd"
            and not (restart.unit or self.target.unit)
        ):
            problems.append(
                problem(
                    "the systemd strategy needs a unit",
                    at=f"{restart_path}.unit",
                    expected="graceful_restart.unit, or target.unit / --unit",
                )
            )
        if (
            strategy_known
            and not unsure("target.server")
            and self.target.server is None
            and restart.strategy == "recycle"
        ):
            problems.append(
                problem(
                    "recycle needs a pre-fork server",
                    at=f"{restart_path}.strategy",
                    expected="target.server (--server gunicorn|uwsgi|celery|generic)",
                )
            )
        return problems

    @model_validator(mode="after")
    def _server_preset(self) -> Settings:
        """``target.server`` picks the strategy (when none is configured) and the worker signal."""
        object.__setattr__(self, "auto_response", _with_server_preset(self.auto_response, self.target.server))
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
            "auto_response": _with_server_preset(response, target.server),
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
        redacted = _redact(self.model_dump(exclude={"leak_detection"}))
        assert isinstance(redacted, dict)
        return redacted


def _with_server_preset(response: AutoResponseSettings, server: str | None) -> AutoResponseSettings:
    """A pre-fork server's preset strategy (when none is configured) and worker signal."""
    if server is None:
        return response  # recycle without a server: see rule_problems
    restart = response.emergency_actions.graceful_restart
    preset = SERVER_PRESETS[server]
    update: dict[str, Any] = {}
    if "strategy" not in restart.model_fields_set:
        update["strategy"] = preset.strategy
    if restart.worker_signal is None:
        update["worker_signal"] = preset.worker_signal
    emergency = response.emergency_actions.model_copy(
        update={"graceful_restart": restart.model_copy(update=update)}
    )
    return response.model_copy(update={"emergency_actions": emergency})


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, Mapping):
        return {str(k): _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact(item, key) for item in value]
    if isinstance(value, str) and (_SECRET_NAME.search(key) or _URL_CREDENTIALS.search(value)):
        return "***"
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value


# -- error formatting --------------------------------------------------------------------------------

_UNSET: Any = object()


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _type_at(path: tuple[Any, ...]) -> Any:
    """The annotation of the field at ``path`` (None when the path is not in the tree)."""
    tp: Any = Settings
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            if info is None:
                return None
            tp = info.annotation
        elif get_origin(tp) in (list, tuple, dict):
            tp = get_args(tp)[-1 if get_origin(tp) is dict else 0]
        else:
            return None
    return _unwrap(tp)


def _contains_secret(value: Any, key: str = "") -> bool:
    if isinstance(value, SecretStr) or (isinstance(value, str) and _URL_CREDENTIALS.search(value)):
        return True
    if isinstance(value, Mapping):
        return any(_SECRET_NAME.search(str(k)) or _contains_secret(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_contains_secret(item) for item in value)
    return False


def _show(path: tuple[Any, ...], value: Any) -> str:
    named_secret = any(_SECRET_NAME.search(str(part)) for part in path) or _type_at(path) is SecretStr
    if named_secret or _contains_secret(value):
        return "<redacted>"
    if isinstance(value, bool):
        return "true" if value else "false"  # as the file spells it (Python's True is not JSON)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _has_path(layer: Any, path: tuple[Any, ...]) -> bool:
    for part in path:
        if not isinstance(layer, Mapping):
            return True  # a scalar or list above the path: this layer gave the whole subtree
        if part not in layer:
            return False
        layer = layer[part]
    return True


def _origin(load: _Load, overrides: Mapping[str, Any], path: tuple[Any, ...]) -> str:
    """`` (from VAR)`` when the value at ``path`` came from the environment."""
    for name, layer in (("overrides", overrides), *load.layers.items()):
        if name != "file" and path and _has_path(layer, path):
            if name == "guide":
                return next((f" (from {var})" for var, at in GUIDE_ENV.items() if path[:2] == at), "")
            if name == "memmon":
                upper = {var.upper(): var for var in load.environ}
                names = [
                    "MEMMON_" + "__".join(str(p) for p in path[:size]).upper()
                    for size in range(1, len(path) + 1)
                ]
                found = [upper[var] for var in reversed(names) if var in upper]  # a variable above the path
                found = found[:1] or sorted(v for u, v in upper.items() if u.startswith(names[-1] + "__"))
                return f" (from {', '.join(found)})" if found else ""
            return ""
    return ""


def _unknown_key(path: tuple[Any, ...]) -> str:
    model = _type_at(path[:-1])
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "unknown key"
    names = list(model.model_fields)
    close = difflib.get_close_matches(str(path[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; expected one of {', '.join(names)}"


def _problems(exc: ValidationError, load: _Load, overrides: Mapping[str, Any]) -> list[str]:
    lines = []

    def add(path: tuple[Any, ...], message: str, got: Any = _UNSET, expected: str = "") -> None:
        text = f"{'.'.join(str(p) for p in path) or '(top level)'}{_origin(load, overrides, path)}: {message}"
        if got is not _UNSET:
            text += f"; got {_show(path, got)}"
        lines.append(text + (f"; expected {expected}" if expected else ""))

    for error in exc.errors(include_url=False):
        path = tuple(part for part in error["loc"] if part != "[key]")
        if error["type"] == PROBLEMS:
            for item in error.get("ctx", {})["problems"]:
                at = path + tuple(item["at"].split(".")) if item["at"] else path
                add(at, item["message"], item.get("got", _UNSET), item["expected"])
        elif error["type"] == "extra_forbidden":
            add(path, _unknown_key(path))
        else:
            add(path, error["msg"], error["input"])
    return lines


def _without_none(data: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides with None leaves dropped: a command-line option that was not given."""
    return {
        key: _without_none(value) if isinstance(value, Mapping) else value
        for key, value in data.items()
        if value is not None
    }


OTHER_MEMMON_ENV = ("MEMMON_KUBE_", "MEMMON_TEST_")
"""Variables that are not settings: the Kubernetes API override (``memmon.kits.kubeconfig``), test knobs."""


def _unknown_env_sections(environ: Mapping[str, str]) -> list[str]:
    """``MEMMON_*`` variables naming no section: pydantic-settings would ignore them silently (a typo)."""
    sections = sorted(Settings.model_fields)
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("MEMMON_") or upper in GUIDE_ENV or upper.startswith(OTHER_MEMMON_ENV):
            continue
        section = upper.removeprefix("MEMMON_").split("__", 1)[0].lower()
        if section not in Settings.model_fields:
            close = difflib.get_close_matches(section, sections, n=1)
            hint = f"; did you mean MEMMON_{close[0].upper()}__...?" if close else ""
            problems.append(
                f"{name}: unknown setting {section!r}{hint} (expected MEMMON_<SECTION>__<KEY>, sections: "
                f"{', '.join(sections)})"
            )
    return problems


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
    load = _Load(environ=environ, file_data=file_data, problems=[], layers={})
    init = _without_none(overrides or {})
    load.problems = _unknown_env_sections(environ)
    load_token, environ_token = _LOAD.set(load), LOAD_ENVIRON.set(environ)
    try:
        settings = Settings(**init)
    except ValidationError as exc:
        raise ConfigError((load.problems or []) + _problems(exc, load, init)) from None
    finally:
        _LOAD.reset(load_token)
        LOAD_ENVIRON.reset(environ_token)
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
