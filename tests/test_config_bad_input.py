"""Hostile and careless config input: what a file, a flag or a variable can hold, and what memmon makes of it.

Every case runs the real ``memmon`` console script on real files (a FIFO, /dev/zero, a directory, generated
deep and oversized JSON) and checks the exit code 2 and the problem lines on standard error, each naming the
field path (or the file) first. The tree-wide checks (every float refuses inf/nan, every number refuses a
boolean) walk the Settings models, so a field added later is covered without touching this file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from memmon.config import ConfigError, Settings, load_settings
from memmon.config.file import MAX_CONFIG_BYTES, MAX_NESTING

MEMMON = Path(sys.executable).parent / "memmon"
HOME = {"HOME": "/home/ops"}


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any memmon setting (so only the file and flags count)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMMON_")}
    for name in ("MEMORY_HEALTH_PORT", "PROMETHEUS_PORT", "MONITORING_LOG_LEVEL", "SLACK_WEBHOOK_URL"):
        env.pop(name, None)
    env.pop("ALERT_EMAIL", None)
    env.update(extra)
    return env


def memmon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script to its end (60 s at most: a blocking read fails the test, not the suite)."""
    return subprocess.run(
        [str(MEMMON), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def config_errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The problem lines of a run that must have refused its configuration."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    prefix = "memmon: config error: "
    lines = [line.removeprefix(prefix) for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert lines, result.stderr
    return lines


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "memmon.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# -- item 5: what the config file is ---------------------------------------------------------------------


@pytest.mark.parametrize("opening", ['{"a":', "["])
def test_deeply_nested_json_is_refused_without_a_traceback(tmp_path: Path, opening: str) -> None:
    """100,000 levels of objects or arrays: exit 2 naming the file and the nesting limit, no RecursionError."""
    closing = "}" if opening.startswith("{") else "]"
    path = write(tmp_path, opening * 100_000 + "1" * (opening == '{"a":') + closing * 100_000)
    lines = config_errors(memmon("check-config", str(path)))
    column = len(opening) * MAX_NESTING + 1  # the bracket that opens level MAX_NESTING + 1
    assert lines == [f"{path}:1:{column}: nested deeper than {MAX_NESTING} levels"]


def test_nesting_at_the_limit_is_parsed(tmp_path: Path) -> None:
    """Exactly MAX_NESTING levels are parsed: the problem reported is the value's, not the nesting."""
    inner = "[" * (MAX_NESTING - 2) + "]" * (MAX_NESTING - 2)
    path = write(tmp_path, '{"alerting": {"instance": ' + inner + "}}")
    lines = config_errors(memmon("check-config", str(path)))
    assert len(lines) == 1 and lines[0].startswith("alerting.instance: Input should be a valid string")


def test_nesting_inside_strings_and_comments_does_not_count(tmp_path: Path) -> None:
    """Brackets in a string value or a comment are text, not nesting: the file is valid."""
    text = "// " + "[" * 500 + '\n{"alerting": {"instance": "' + "{" * 500 + '"}}\n'
    result = memmon("check-config", str(write(tmp_path, text)))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "variable", ["MEMMON_MONITORING", "MEMMON_MONITORING__USAGE_WATCH", "MEMMON_TARGET__PIDS"]
)
def test_deeply_nested_environment_value_is_refused(tmp_path: Path, variable: str) -> None:
    """50,000 '[' in a MEMMON_* variable (JSON for sections and lists): exit 2 naming it, no RecursionError."""
    env = clean_env(**{variable: "[" * 50_000})
    result = memmon("--state-dir", str(tmp_path / "state"), "--health-port", "0", env=env)
    path = variable.removeprefix("MEMMON_").lower().replace("__", ".")
    assert config_errors(result) == [f"{path} (from {variable}): nested deeper than {MAX_NESTING} levels"]


def test_dev_zero_is_refused_as_not_a_regular_file() -> None:
    """/dev/zero (endless) is refused before any read: exit 2, 'not a regular file (a character device)'."""
    lines = config_errors(memmon("check-config", "/dev/zero"))
    assert lines == ["/dev/zero: cannot read config file: not a regular file (a character device)"]


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """A FIFO nobody writes to would block open() forever: it is refused at once, exit 2."""
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    lines = config_errors(memmon("check-config", str(fifo)))
    assert lines == [f"{fifo}: cannot read config file: not a regular file (a FIFO)"]


def test_directory_is_refused(tmp_path: Path) -> None:
    """A directory given as the config file: exit 2, 'not a regular file (a directory)'."""
    lines = config_errors(memmon("check-config", str(tmp_path)))
    assert lines == [f"{tmp_path}: cannot read config file: not a regular file (a directory)"]


def test_agent_refuses_a_fifo_as_config(tmp_path: Path) -> None:
    """``memmon --config FIFO`` (the agent, not check-config) exits 2 before starting anything."""
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    result = memmon("--config", str(fifo), "--state-dir", str(tmp_path / "state"), "--health-port", "0")
    assert config_errors(result) == [f"{fifo}: cannot read config file: not a regular file (a FIFO)"]
    assert not (tmp_path / "state").exists()


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    """One byte over MAX_CONFIG_BYTES (1 MiB) of valid JSON: exit 2 naming the size and the limit."""
    body = '{"alerting": {"instance": "x"}}'
    path = write(tmp_path, body + " " * (MAX_CONFIG_BYTES - len(body) + 1))
    lines = config_errors(memmon("check-config", str(path)))
    assert lines == [
        f"{path}: cannot read config file: {MAX_CONFIG_BYTES + 1} bytes, larger than the limit of "
        f"{MAX_CONFIG_BYTES} bytes (1 MiB)"
    ]


def test_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    """Exactly MAX_CONFIG_BYTES bytes are still read and validated."""
    body = '{"alerting": {"instance": "x"}}'
    path = write(tmp_path, body + " " * (MAX_CONFIG_BYTES - len(body)))
    assert path.stat().st_size == MAX_CONFIG_BYTES
    result = memmon("check-config", str(path))
    assert result.returncode == 0, result.stderr


def test_empty_config_path_is_refused() -> None:
    """``check-config ""`` names the empty path instead of reading the working directory."""
    assert config_errors(memmon("check-config", "")) == ["config file path is empty"]


# -- item 6: values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "monitoring.check_interval",
        "storage.retention_hours",
        "alerting.delivery.timeout_seconds",
        "server.live_stale_seconds",
        "thresholds.min_duration_seconds",
        "thresholds.memory_emergency_mb",
    ],
)
def test_json_overflow_to_infinity_is_refused(tmp_path: Path, path: str) -> None:
    """``1e309`` parses to infinity: exit 2, the field path and 'finite number'."""
    *sections, key = path.split(".")
    text = "{" + "".join(f'"{s}": {{' for s in sections) + f'"{key}": 1e309' + "}" * (len(sections) + 1)
    lines = config_errors(memmon("check-config", str(write(tmp_path, text))))
    assert lines == [f"{path}: Input should be a finite number; got inf"]


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("1e-9", False), ("0.049", False), ("0.05", True), ("3600", True), ("3601", False)],
)
def test_check_interval_bounds(tmp_path: Path, value: str, accepted: bool) -> None:
    """check_interval is 0.05 s .. 3600 s: 1e-9 would mean 400 checks/s and a busy core."""
    result = memmon("check-config", "--check-interval", value)
    if accepted:
        assert result.returncode == 0, result.stderr
    else:
        [line] = config_errors(result)
        assert line.startswith("monitoring.check_interval: Input should be ")


def test_boolean_check_interval_is_refused(tmp_path: Path) -> None:
    """``"check_interval": true`` is not 1 second: exit 2 naming the field."""
    path = write(tmp_path, '{"monitoring": {"check_interval": true}}')
    assert config_errors(memmon("check-config", str(path))) == [
        "monitoring.check_interval: a boolean is not a number; got true; expected a number"
    ]


@pytest.mark.parametrize(
    ("flag", "field"), [("--state-dir", "storage.state_dir"), ("--log-file", "logging.file")]
)
def test_empty_path_flags_are_refused(flag: str, field: str) -> None:
    """``--state-dir ""`` would write into the working directory: exit 2 naming the field."""
    lines = config_errors(memmon("check-config", flag, ""))
    assert lines == [f"{field}: empty path; got ''; expected a path, or leave it out for the default"]


def test_empty_paths_in_the_file_are_refused(tmp_path: Path) -> None:
    """Empty paths in the file (state dir, log file, CA file) are each named."""
    config = {"storage": {"state_dir": ""}, "logging": {"file": " "}, "alerting": {"smtp": {"ca_file": ""}}}
    lines = config_errors(memmon("check-config", str(write(tmp_path, config))))
    assert [line.split(":")[0] for line in lines] == [
        "alerting.smtp.ca_file",
        "storage.state_dir",
        "logging.file",
    ]


def test_nan_from_the_environment_is_reported_as_not_finite(tmp_path: Path) -> None:
    """MEMMON_MONITORING__CHECK_INTERVAL=nan at agent start: 'not a finite number', not 'should be <= 3600'."""
    env = clean_env(MEMMON_MONITORING__CHECK_INTERVAL="nan")
    result = memmon("--state-dir", str(tmp_path / "state"), "--health-port", "0", env=env)
    assert config_errors(result) == [
        "monitoring.check_interval (from MEMMON_MONITORING__CHECK_INTERVAL): Input should be a finite number;"
        " got 'nan'"
    ]


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every scalar field of the tree: (path, type)."""
    for name, info in model.model_fields.items():
        kind = _unwrap(info.annotation)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _leaves(kind, (*prefix, name))
        else:
            yield (*prefix, name), kind


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data: Any = value
    for part in reversed(path):
        data = {part: data}
    return dict(data)


NUMBER_FIELDS = [path for path, kind in _leaves(Settings) if kind in (int, float)]
FLOAT_FIELDS = [path for path, kind in _leaves(Settings) if kind is float]


def test_the_tree_walk_finds_the_fields_the_issue_names() -> None:
    """The walk below covers the fields of the report (so the parametrised tests are not empty)."""
    assert {("storage", "retention_hours"), ("server", "live_stale_seconds")} <= set(FLOAT_FIELDS)
    assert ("monitoring", "history_size") in NUMBER_FIELDS and len(FLOAT_FIELDS) > 30


@pytest.mark.parametrize("path", FLOAT_FIELDS, ids=".".join)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_field_refuses_non_finite_values(path: tuple[str, ...], value: float) -> None:
    """Every float of the Settings tree refuses inf, -inf and nan, naming the field (one mechanism)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides=_nested(path, value), environ=HOME)
    assert f"{'.'.join(path)}: Input should be a finite number; got {value!r}" in caught.value.problems


@pytest.mark.parametrize("path", NUMBER_FIELDS, ids=".".join)
def test_every_number_field_refuses_a_boolean(path: tuple[str, ...]) -> None:
    """Every int or float of the Settings tree refuses ``true`` instead of reading it as 1."""
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides=_nested(path, True), environ=HOME)
    line = f"{'.'.join(path)}: a boolean is not a number; got true; expected a number"
    assert line in caught.value.problems


# -- item 7: every problem in one run ------------------------------------------------------------------


def test_every_problem_of_one_file_in_one_run(tmp_path: Path) -> None:
    """Unknown keys, a bad interval, out-of-order thresholds and a cross-section rule: all in one run."""
    config = {
        "monitoring": {"check_interval": 1e-9, "bogus": 1},
        "thresholds": {"bogus2": 1, "memory_warning_mb": 3000},
        "auto_response": {"emergency_actions": {"graceful_restart": {"strategy": "systemd"}}},
        "target": {"pids": [0], "match": "x", "worker_budget_mb": 100},
        "server": {"health_port": 9091, "bind": "not a host"},
    }
    lines = config_errors(memmon("check-config", str(write(tmp_path, config))))
    assert [line.split(":")[0].split(";")[0] for line in lines] == [
        "monitoring.check_interval",
        "monitoring.bogus",
        "thresholds.bogus2",
        "thresholds.memory_critical_mb",
        "target.pids.0",
        "target.worker_budget_mb",
        "server.bind",
        "server.health_port",
        "auto_response.emergency_actions.graceful_restart.unit",
    ]
    assert "thresholds.memory_critical_mb: 2048 must be greater than memory_warning_mb (3000)" in lines


def test_a_bad_value_is_not_compared_as_its_default(tmp_path: Path) -> None:
    """An invalid threshold is not replaced by its default in the order check (no invented second problem)."""
    config = {"thresholds": {"memory_warning_mb": -1, "memory_critical_mb": 500}}
    lines = config_errors(memmon("check-config", str(write(tmp_path, config))))
    assert lines == ["thresholds.memory_warning_mb: Input should be greater than 0; got -1"]


def test_section_rules_run_beside_a_field_error(tmp_path: Path) -> None:
    """usage_watch's interval order is reported together with a bad field of the same section."""
    watch = {"enabled": "maybe", "min_interval_seconds": 0.5, "max_interval_seconds": 0.1}
    lines = config_errors(
        memmon("check-config", str(write(tmp_path, {"monitoring": {"usage_watch": watch}})))
    )
    assert [line.split(":")[0] for line in lines] == [
        "monitoring.usage_watch.enabled",
        "monitoring.usage_watch.max_interval_seconds",
    ]


# -- item 3: --help --------------------------------------------------------------------------------------


def test_help_lists_every_command_with_a_description() -> None:
    """``memmon --help`` names check-config and test-alert, each with a one-line description."""
    result = memmon("--help")
    assert result.returncode == 0, result.stderr
    for command in ("check-config", "test-alert"):
        [line] = [line for line in result.stdout.splitlines() if line.strip().startswith(f"memmon {command}")]
        _usage, _gap, description = line.strip().partition("  ")
        assert len(description.split()) >= 3 and len(line) <= 110, line
