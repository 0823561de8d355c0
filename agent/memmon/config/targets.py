"""The ``targets`` list: several targets in one agent, each with its own thresholds, actions and routing.

An entry is a ``target`` section (pids, match, cgroup, unit, server, ...) plus a ``name`` and partial overrides of
``thresholds``, ``auto_response`` and ``alerting.alert_levels``; what an entry does not say comes from the global
sections. A ``cgroup`` or ``unit`` holding a glob character (``*``, ``?``, ``[``) is a pattern: it watches every
matching cgroup, re-resolved while the agent runs (see ``memmon.roster``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from memmon.config.actions import AutoResponseSettings
from memmon.config.alerting import AlertLevelSettings
from memmon.config.fields import LevelName
from memmon.config.rules import problem
from memmon.config.sections import TargetSettings, ThresholdSettings

__all__ = ["TargetEntry", "is_pattern", "merged", "override_problems"]

_GLOB = re.compile(r"[*?\[]")
NAME_PATTERN = r"^[A-Za-z0-9_.:/@,=+-][A-Za-z0-9_.:/@,=+ *?\[\]-]*$"
"""A target name is a metric label value and part of URLs: printable, no quotes or control characters."""


def is_pattern(value: str | None) -> bool:
    """Whether a ``cgroup`` or ``unit`` value is a glob pattern (``fnmatch`` syntax)."""
    return value is not None and bool(_GLOB.search(value))


class TargetEntry(TargetSettings):
    """One target of the ``targets`` list: a ``target`` section with a name and its own overrides."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)] | None = None
    """The ``target`` label of its series, alerts and history; null = ``cgroup:<path or unit>``, ``pid:<pids>``,
    ``match:<regex>`` or ``self`` (for a pattern: ``cgroup:<each match>``)."""
    thresholds: dict[str, Any] = Field(default_factory=dict)
    """Keys of the ``thresholds`` section that differ for this target (e.g. ``{"memory_percent_warning": 60}``)."""
    auto_response: dict[str, Any] = Field(default_factory=dict)
    """Keys of ``auto_response`` that differ for this target, nested as there (e.g. ``{"emergency_actions":
    {"graceful_restart": {"strategy": "systemd"}}}``)."""
    alert_levels: dict[LevelName, AlertLevelSettings] | None = None
    """Channels per level for this target's alerts (as ``alerting.alert_levels``); null = the global routing."""

    @property
    def is_pattern(self) -> bool:
        """Whether this entry names a glob of cgroups or units rather than one target."""
        return is_pattern(self.cgroup) or is_pattern(self.unit)

    def default_name(self) -> str | None:
        """The name it gets when none is given, None when known only at run time (a match of a pattern)."""
        if self.name is not None:
            return self.name
        if self.is_pattern:
            return None
        if self.cgroup or self.unit:
            return f"cgroup:{self.cgroup or self.unit}"
        if self.match:
            return f"match:{self.match}"
        if self.pids:
            return "pid:" + ",".join(str(pid) for pid in self.pids)
        return "self"


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged_ = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged_.get(key), Mapping):
            merged_[key] = _deep_merge(merged_[key], value)
        else:
            merged_[key] = value
    return merged_


def _given(section: BaseModel) -> dict[str, Any]:
    """A section as the data that rebuilds it (secrets kept: the merged section must hold the real values)."""
    return section.model_dump(round_trip=True, warnings=False)  # SecretStr stays a SecretStr in python mode


def merged(
    thresholds: ThresholdSettings, auto_response: AutoResponseSettings, entry: TargetEntry
) -> tuple[ThresholdSettings, AutoResponseSettings]:
    """The entry's thresholds and auto_response: the global ones with the entry's keys over them (``ValueError``
    when they do not validate, which ``override_problems`` reported at start-up)."""
    own_thresholds = thresholds
    if entry.thresholds:
        own_thresholds = ThresholdSettings.model_validate({**_given(thresholds), **entry.thresholds})
    own_response = auto_response
    if entry.auto_response:
        data = _deep_merge(_given(auto_response), entry.auto_response)
        own_response = AutoResponseSettings.model_validate(data)
    return own_thresholds, own_response


def override_problems(
    thresholds: ThresholdSettings, auto_response: AutoResponseSettings, entry: TargetEntry, at: str
) -> list[dict[str, Any]]:
    """Problems of an entry's overrides, each at its path under ``at`` (``targets.1.thresholds.x``)."""
    problems: list[dict[str, Any]] = []
    checks: list[tuple[str, type[BaseModel], dict[str, Any]]] = []
    if entry.thresholds:
        checks.append(("thresholds", ThresholdSettings, {**_given(thresholds), **entry.thresholds}))
    if entry.auto_response:
        checks.append(
            ("auto_response", AutoResponseSettings, _deep_merge(_given(auto_response), entry.auto_response))
        )
    for key, model, data in checks:
        try:
            model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                loc = ".".join(str(part) for part in error["loc"] if part != "[key]")
                where = f"{at}.{key}" + (f".{loc}" if loc else "")
                if error["type"] == "memmon_problems":
                    for item in error["ctx"]["problems"]:
                        sub = f"{where}.{item['at']}" if item["at"] else where
                        problems.append(problem(item["message"], at=sub, expected=item["expected"]))
                elif error["type"] == "extra_forbidden":
                    problems.append(problem("unknown key", at=where, expected=f"a key of the {key} section"))
                else:
                    problems.append(problem(error["msg"], at=where, got=error["input"]))
    return problems
