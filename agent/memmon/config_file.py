"""Reading the JSON config file, with the guide's ``//`` and ``/* */`` comments.

The guide writes its config blocks as JSON with comments, so comments are accepted: they are blanked out
(outside strings, so ``"https://..."`` survives) with spaces of the same length and the newlines kept, which
leaves every line and column where it was, so a JSON error points at the right place in the original file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "parse_config_text", "read_config_file", "strip_json_comments"]


class ConfigError(Exception):
    """An unusable configuration: every problem found, one line each.

    Each line reads ``<field.path>: <what is wrong>; got <value>; expected <what>`` (or, for the file itself,
    ``<file>:<line>:<column>: invalid JSON: <msg>``). Secret values never appear in it.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(*self.problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


# A string (maybe unterminated at its end of line), a line comment, or a block comment (maybe unterminated).
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|//[^\r\n]*|/\*.*?(?:\*/|\Z)', re.DOTALL)
_NOT_NEWLINE = re.compile(r"[^\r\n]")


class _UnterminatedComment(ValueError):
    def __init__(self, pos: int) -> None:
        super().__init__("unterminated /* comment")
        self.pos = pos


def strip_json_comments(text: str) -> str:
    """``text`` with comments outside strings replaced by spaces; line and column positions are unchanged.

    Raises ``ValueError`` (with a ``pos`` attribute) for a ``/*`` that is never closed.
    """

    def blank(match: re.Match[str]) -> str:
        token = match.group()
        if token.startswith('"'):
            return token
        if token.startswith("/*") and (len(token) < 4 or not token.endswith("*/")):
            raise _UnterminatedComment(match.start())
        return _NOT_NEWLINE.sub(" ", token)

    return _TOKEN.sub(blank, text)


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - text.rfind("\n", 0, pos)


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r} in one object (the later value would silently win)")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_config_text(text: str, source: str = "<config>") -> dict[str, Any]:
    """The config object in ``text`` (JSON with comments); ``ConfigError`` names ``source``, line, column."""
    try:
        data = json.loads(
            strip_json_comments(text),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
    except _UnterminatedComment as exc:
        line, col = _line_col(text, exc.pos)
        raise ConfigError(f"{source}:{line}:{col}: invalid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(data), "a number"
        )
        raise ConfigError(f"{source}: the top level must be a JSON object {{...}}; got {kind}")
    return data


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config object in the file at ``path``; ``ConfigError`` when it cannot be read or is not valid."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        raise ConfigError(f"{name}: cannot read config file: {reason}") from None
    return parse_config_text(text, name)
