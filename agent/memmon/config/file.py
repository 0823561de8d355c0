"""Reading the JSON config file, with the guide's ``//`` and ``/* */`` comments.

The guide writes its config blocks as JSON with comments, so comments are accepted: they are blanked out
(outside strings, so ``"https://..."`` survives) with spaces of the same length and the newlines kept, which
leaves every line and column where it was, so a JSON error points at the right place in the original file.

What is read is bounded before it is parsed: only a regular file (a FIFO would block, ``/dev/zero`` never
ends), at most ``MAX_CONFIG_BYTES``, nested at most ``MAX_NESTING`` deep (the standard ``json`` decoder
recurses once per level and raises ``RecursionError`` near Python's recursion limit, about 1000).
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_NESTING",
    "ConfigError",
    "parse_config_text",
    "read_config_file",
    "strip_json_comments",
    "too_deep_at",
]

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config file read (1 MiB): the guide's full example is about 3 KiB, so this is room, not a target."""
MAX_NESTING = 64
"""Deepest nesting of objects and arrays accepted; the settings tree itself is 5 levels deep."""


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


# A string (maybe unterminated) or one bracket: brackets inside strings are text, not nesting.
_NESTING_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|[\[\]{}]')


def too_deep_at(text: str) -> int | None:
    """The offset of the first bracket that opens level ``MAX_NESTING + 1`` (None when the text stays within).

    One linear scan of the comment-free text, so a 100,000-deep file costs no recursion at all.
    """
    depth = 0
    for match in _NESTING_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return match.start()
        elif token in "]}":
            depth -= 1
    return None


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
        plain = strip_json_comments(text)
    except _UnterminatedComment as exc:
        line, col = _line_col(text, exc.pos)
        raise ConfigError(f"{source}:{line}:{col}: invalid JSON: {exc}") from None
    deep_at = too_deep_at(plain)
    if deep_at is not None:
        line, col = _line_col(text, deep_at)
        raise ConfigError(f"{source}:{line}:{col}: nested deeper than {MAX_NESTING} levels")
    try:
        data = json.loads(
            plain,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
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


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def _read_up_to(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd``, fewer only at end of file (read(2) may return less than asked)."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_bounded(name: str) -> bytes:
    """The bytes of the regular file ``name``, at most ``MAX_CONFIG_BYTES``; ``ConfigError`` otherwise."""

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"{name}: cannot read config file: {reason}")

    try:
        # O_NONBLOCK: open(2) of a FIFO without a writer would wait for one forever; the type is checked on
        # the open descriptor (fstat), so a file swapped after a stat cannot slip through.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    limit = f"larger than the limit of {MAX_CONFIG_BYTES} bytes ({MAX_CONFIG_BYTES // (1024 * 1024)} MiB)"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "a special file")
            raise refuse(f"not a regular file ({kind})")
        if info.st_size > MAX_CONFIG_BYTES:
            raise refuse(f"{info.st_size} bytes, {limit}")
        # One byte past the limit: a file that grew since fstat is refused too, and never read whole.
        raw = _read_up_to(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise refuse(f"more than {MAX_CONFIG_BYTES} bytes, {limit}")
    return raw


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config object in the file at ``path``; ``ConfigError`` when it cannot be read (not a regular file,
    larger than ``MAX_CONFIG_BYTES``) or is not valid (nested deeper than ``MAX_NESTING`` included)."""
    name = os.fspath(path)
    if not name.strip():
        raise ConfigError("config file path is empty")
    raw = _read_bounded(name)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        raise ConfigError(f"{name}: cannot read config file: {reason}") from None
    return parse_config_text(text, name)
