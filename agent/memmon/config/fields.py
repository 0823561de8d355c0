"""The building blocks of every section: the ``Section`` base and the field types and validators they share.

Every section is frozen and rejects unknown keys; every field has a docstring (the generated docs use them).
Cross-field rules are ``rule_problems`` methods (``memmon.config.rules``): several problems of one section come
out as several lines, in the same run as the field errors. Numbers are finite (``allow_inf_nan=False`` on every
section: JSON's ``1e309`` parses to infinity) and never booleans (``Float``/``Int``). A validator that refuses a
value raises ``problems_error``, so its message, the value and what was expected come out as one line.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from memmon.config.file import MAX_NESTING, too_deep_at
from memmon.config.rules import RuleChecked, problem, problems_error
from memmon.model import ALERT_LEVELS, Level


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


def http_url(value: SecretStr | None) -> SecretStr | None:
    """An http(s) URL with a host, or None (an ``AfterValidator`` of the URL fields, kept secret)."""
    if value is not None:
        parts = urlsplit(value.get_secret_value().strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise problems_error(
                problem("not an http(s) URL", got=value, expected="http://... or https://...")
            )
    return value


def path_given(value: Any) -> Any:
    """Refuses an empty path (a ``BeforeValidator`` of the path fields)."""
    # Path("") is ".": an empty state_dir wrote into the working directory.
    if isinstance(value, str) and not value.strip():
        raise problems_error(
            problem("empty path", got=value, expected="a path, or leave it out for the default")
        )
    return value


def _level_name(value: str) -> str:
    name = value.strip().lower()
    if name not in {level.label for level in ALERT_LEVELS}:
        allowed = ", ".join(level.label for level in ALERT_LEVELS)
        raise problems_error(problem(f"unknown level {value!r}", expected=f"one of {allowed}"))
    return name


def _alert_level(value: Any) -> Any:
    if isinstance(value, str):
        return Level[_level_name(value).upper()]
    if value == Level.OK:
        raise problems_error(
            problem("'ok' cannot be used here", got=value, expected="warning, critical or emergency")
        )
    return value


def _not_boolean(value: Any) -> Any:
    # pydantic's lax mode reads true as 1 for int and float fields: "check_interval": true ran at 1 s.
    if isinstance(value, bool):
        raise problems_error(problem("a boolean is not a number", got=value, expected="a number"))
    return value


Float = Annotated[float, BeforeValidator(_not_boolean)]
"""A float of the settings: finite (every section's ``allow_inf_nan=False``), a boolean refused."""
Int = Annotated[int, BeforeValidator(_not_boolean)]
"""An int of the settings: a boolean refused."""
LevelName = Annotated[str, AfterValidator(_level_name)]
AlertLevel = Annotated[Level, BeforeValidator(_alert_level)]
Port = Annotated[Int, Field(ge=0, le=65535)]
PositiveMb = Annotated[Float, Field(gt=0)]
Percent = Annotated[Float, Field(gt=0, le=100)]
Seconds = Annotated[Float, Field(gt=0)]


class Section(RuleChecked, BaseModel):
    """Base of every section: frozen, unknown keys rejected, no inf/nan, field docstrings become descriptions;
    cross-field rules go in ``rule_problems``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)
