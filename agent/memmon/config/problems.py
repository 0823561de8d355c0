"""A failed validation as the lines a person reads, and the redaction that keeps secrets out of them.

``validation_problems`` turns a pydantic ``ValidationError`` of the settings tree into one line per problem: the
dotted field path, for a value from the environment the variable it came from, the message, the value given and
what was expected; an unknown key suggests the closest known one. Secrets (``SecretStr`` fields, anything named
like a token, password or webhook, URLs with credentials) show as ``<redacted>``; ``redact`` gives the same
protection to the effective configuration.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError

from memmon.config.rules import PROBLEMS
from memmon.config.sources import GUIDE_ENV, Load

_SECRET_NAME = re.compile(r"passw|secret|token|api_?key|credential|webhook", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"://[^/@\s]+@")
_UNSET: Any = object()


def redact(value: Any, key: str = "") -> Any:
    """``value`` (a dump of settings) as JSON-ready data, secrets "***": ``SecretStr`` values, strings under a key
    named like a secret, URLs with credentials."""
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(item, key) for item in value]
    if isinstance(value, str) and (_SECRET_NAME.search(key) or _URL_CREDENTIALS.search(value)):
        return "***"
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value


def validation_problems(
    exc: ValidationError, root: type[BaseModel], load: Load, overrides: Mapping[str, Any]
) -> list[str]:
    """One line per problem of ``exc``, raised validating ``root`` from ``overrides`` and what ``load`` read."""
    lines = []

    def add(path: tuple[Any, ...], message: str, got: Any = _UNSET, expected: str = "") -> None:
        text = f"{'.'.join(str(p) for p in path) or '(top level)'}{_origin(load, overrides, path)}: {message}"
        if got is not _UNSET:
            text += f"; got {_show(root, path, got)}"
        lines.append(text + (f"; expected {expected}" if expected else ""))

    for error in exc.errors(include_url=False):
        path = tuple(part for part in error["loc"] if part != "[key]")
        if error["type"] == PROBLEMS:
            for item in error.get("ctx", {})["problems"]:
                at = path + tuple(item["at"].split(".")) if item["at"] else path
                add(at, item["message"], item.get("got", _UNSET), item["expected"])
        elif error["type"] == "extra_forbidden":
            add(path, _unknown_key(root, path))
        else:
            add(path, error["msg"], error["input"])
    return lines


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


def _type_at(root: type[BaseModel], path: tuple[Any, ...]) -> Any:
    """The annotation of the field at ``path`` (None when the path is not in the tree)."""
    tp: Any = root
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


def _show(root: type[BaseModel], path: tuple[Any, ...], value: Any) -> str:
    named_secret = any(_SECRET_NAME.search(str(part)) for part in path) or _type_at(root, path) is SecretStr
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


def _origin(load: Load, overrides: Mapping[str, Any], path: tuple[Any, ...]) -> str:
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


def _unknown_key(root: type[BaseModel], path: tuple[Any, ...]) -> str:
    model = _type_at(root, path[:-1])
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "unknown key"
    names = list(model.model_fields)
    close = difflib.get_close_matches(str(path[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; expected one of {', '.join(names)}"
