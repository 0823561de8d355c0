"""Reading the JSON config file: comments, positions of errors, unreadable files."""

from __future__ import annotations

from pathlib import Path

import pytest

from memmon.config.file import ConfigError, parse_config_text, read_config_file, strip_json_comments

GUIDE = Path(__file__).parent / "fixtures" / "config" / "guide-full.json"


def write(tmp_path: Path, text: str, name: str = "memmon.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_guide_example_with_line_comments_parses(tmp_path: Path) -> None:
    """The guide's merged example, // comments included, reads as plain JSON data."""
    data = read_config_file(write(tmp_path, GUIDE.read_text()))
    assert data["thresholds"]["memory_percent_critical"] == 85
    assert data["monitoring"]["leak_detection"]["monitoring_window"] == 300
    assert data["alerting"]["rate_limit_seconds"] == 300


def test_slashes_inside_strings_survive(tmp_path: Path) -> None:
    """ "//" and "/*" inside a string (a URL, an escaped quote before them) are data, not comments."""
    text = '{"url": "https://hooks.slack.com/x//y", "q": "a\\"//b", "c": "/* no */"} // real comment\n'
    data = read_config_file(write(tmp_path, text))
    assert data == {"url": "https://hooks.slack.com/x//y", "q": 'a"//b', "c": "/* no */"}


def test_block_comments_are_removed_and_keep_positions() -> None:
    """/* */ comments, also over several lines, become blanks of the same length with the newlines kept."""
    text = '{\n  /* one\n     two */ "a": 1, /* inline */ "b": 2\n}'
    stripped = strip_json_comments(text)
    assert len(stripped) == len(text)
    assert stripped.count("\n") == text.count("\n")
    assert parse_config_text(text) == {"a": 1, "b": 2}


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    """A syntax error names the file, the 1-based line and column of the original text."""
    path = write(tmp_path, '{\n  "monitoring": {\n    "check_interval": ,\n  }\n}\n')
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert str(caught.value) == f"{path}:3:23: invalid JSON: Expecting value"


def test_error_column_is_right_after_comments_on_the_same_line(tmp_path: Path) -> None:
    """Comments before the error on its line (and on earlier lines) do not shift the reported column."""
    text = '// header\n{"a": 1, /* note */ "b": /* x */ }\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    column = text.splitlines()[1].rindex("}") + 1
    assert column == 34
    assert caught.value.problems == [f"{path}:2:{column}: invalid JSON: Expecting value"]


def test_unterminated_block_comment_is_reported_where_it_starts() -> None:
    """A /* that is never closed is an error at the position of the /*."""
    with pytest.raises(ConfigError, match=r"^f\.json:2:3: invalid JSON: unterminated /\* comment$"):
        parse_config_text('{"a": 1,\n  /* never closed\n}', "f.json")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable file gives "<file>: cannot read config file: <strerror>"."""
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert str(caught.value) == f"{path}: cannot read config file: No such file or directory"


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported as unreadable, with the offset."""
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(
        ConfigError, match=r"cannot read config file: not valid UTF-8 \(byte 0xe9 at offset 7\)"
    ):
        read_config_file(path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark (Windows editors) is not an error."""
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_config_file(path) == {"a": 1}


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "an array"), ('"x"', "a string"), ("3", "a number")])
def test_top_level_must_be_an_object(text: str, kind: str) -> None:
    """A top level that is not an object is a clear error naming what it is."""
    with pytest.raises(
        ConfigError, match=f"^c.json: the top level must be a JSON object {{...}}; got {kind}$"
    ):
        parse_config_text(text, "c.json")


def test_duplicate_keys_are_rejected() -> None:
    """Two values for one key (e.g. two guide blocks pasted together) are an error, not a silent overwrite."""
    with pytest.raises(ConfigError, match="duplicate key 'alerting'"):
        parse_config_text('{"alerting": {}, "alerting": {"rate_limit_seconds": 1}}', "c.json")


def test_config_error_str_is_one_line_per_problem() -> None:
    """ConfigError keeps its problems and prints them one per line."""
    error = ConfigError(["a: bad", "b: worse"])
    assert error.problems == ["a: bad", "b: worse"]
    assert str(error) == "a: bad\nb: worse"
