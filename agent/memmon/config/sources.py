"""Where the values of the settings come from: the environment and the config file, as pydantic-settings sources.

Environment: the guide's names (``GUIDE_ENV``), which beat ``MEMMON_<SECTION>__<FIELD>``; then the config file
(already read by ``memmon.config.file``). A ``load_settings`` call runs inside ``reading(load)``: its sources read
``load`` and record in it what each layer gave (so a problem can name the variable it came from), and the
defaults that depend on the environment (the home directory, the node's name) read ``load_environ()``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from memmon.config.file import MAX_NESTING, too_deep_at

GUIDE_ENV: Mapping[str, tuple[str, str]] = {
    "MEMORY_HEALTH_PORT": ("server", "health_port"),
    "PROMETHEUS_PORT": ("monitoring", "prometheus_port"),
    "MONITORING_LOG_LEVEL": ("logging", "level"),
    "SLACK_WEBHOOK_URL": ("alerting", "slack_webhook"),
    "ALERT_EMAIL": ("alerting", "email"),
    "MEMMON_API_TOKEN": ("server", "api_token"),
}
"""The guide's environment variables (and ``MEMMON_API_TOKEN``) -> (section, field); they beat MEMMON_*."""

NONE_STR = "null"
"""An environment value that means None."""

OTHER_MEMMON_ENV = ("MEMMON_KUBE_", "MEMMON_TEST_")
"""Variables that are not settings: the Kubernetes API override (``memmon.kits.kubeconfig``), test knobs."""


@dataclass
class Load:
    """What the current ``load_settings`` call reads, and what its sources saw (for error provenance)."""

    environ: Mapping[str, str]
    file_data: dict[str, Any]
    problems: list[str] | None = None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)


_LOAD: ContextVar[Load | None] = ContextVar("memmon_load", default=None)

LOAD_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("memmon_load_environ", default=None)
"""The environment the current ``load_settings`` call reads (defaults that depend on it look here)."""


def load_environ() -> Mapping[str, str]:
    """The environment of the current ``load_settings`` call; ``os.environ`` outside one."""
    environ = LOAD_ENVIRON.get()
    return os.environ if environ is None else environ


@contextmanager
def reading(load: Load) -> Iterator[None]:
    """Within it, the sources read ``load`` and the defaults read ``load.environ``."""
    load_token, environ_token = _LOAD.set(load), LOAD_ENVIRON.set(load.environ)
    try:
        yield
    finally:
        _LOAD.reset(load_token)
        LOAD_ENVIRON.reset(environ_token)


def env_and_file_sources(settings_cls: type[BaseSettings]) -> tuple[PydanticBaseSettingsSource, ...]:
    """Guide env names > MEMMON_* env > config file, as the current ``reading`` gives them (outside one:
    ``os.environ`` and no file)."""
    load = _LOAD.get() or Load(environ=os.environ, file_data={})
    return (
        _GuideEnvSource(settings_cls, load),
        _MemmonEnvSource(settings_cls, load),
        _FileSource(settings_cls, load),
    )


class _GuideEnvSource(PydanticBaseSettingsSource):
    """The guide's environment variables, as a nested dict."""

    def __init__(self, settings_cls: type[BaseSettings], load: Load) -> None:
        super().__init__(settings_cls)
        self.load = load

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ maps the variables itself

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, (section, key) in GUIDE_ENV.items():
            value = self.load.environ.get(name)
            if value:  # empty = unset
                data.setdefault(section, {})[key] = None if value == NONE_STR else value
        self.load.layers["guide"] = data
        return data


class _MemmonEnvSource(EnvSettingsSource):
    """pydantic-settings' own env source (MEMMON_<SECTION>__<FIELD>), reading the given environ."""

    def __init__(self, settings_cls: type[BaseSettings], load: Load) -> None:
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

    def __init__(self, settings_cls: type[BaseSettings], load: Load) -> None:
        super().__init__(settings_cls)
        self.load = load

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: the file is one dict

    def __call__(self) -> dict[str, Any]:
        return dict(self.load.file_data)


def unknown_env_sections(environ: Mapping[str, str], section_names: Collection[str]) -> list[str]:
    """``MEMMON_*`` variables naming none of ``section_names`` (the root's fields): pydantic-settings would
    ignore them silently (a typo)."""
    sections = sorted(section_names)
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("MEMMON_") or upper in GUIDE_ENV or upper.startswith(OTHER_MEMMON_ENV):
            continue
        section = upper.removeprefix("MEMMON_").split("__", 1)[0].lower()
        if section not in section_names:
            close = difflib.get_close_matches(section, sections, n=1)
            hint = f"; did you mean MEMMON_{close[0].upper()}__...?" if close else ""
            problems.append(
                f"{name}: unknown setting {section!r}{hint} (expected MEMMON_<SECTION>__<KEY>, sections: "
                f"{', '.join(sections)})"
            )
    return problems
