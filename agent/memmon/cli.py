"""``memmon`` command line: flags -> Settings -> run; errors -> exit codes.

Exit codes: 0 clean stop, 1 unexpected crash, 2 bad configuration or flags (one line per problem on stderr),
also when a port is in use or the state directory cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memmon import __version__
from memmon.config import ConfigError, Settings, check_config_file, load_settings
from memmon.config.targets import is_pattern
from memmon.config_summary import summaries
from memmon.kits.logsetup import configure_logging

EXIT_CONFIG = 2

DESCRIPTION = """\
Watch memory (this host, a process, a cgroup), grade it ok/warning/critical/emergency, alert, and serve a health
API and Prometheus metrics.

commands:
  memmon [flags]                        run the agent in the foreground (the flags below)
  memmon check-config [FILE] [flags]    validate a config file and flags, show what memmon will do
  memmon test-alert --channel NAME      send a test alert through one channel, show the receiver's answer

`memmon COMMAND --help` shows a command's own flags.
"""


def _pid_list(text: str) -> list[int]:
    try:
        pids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pid or comma-separated pids, got {text!r}") from None
    if not pids or any(pid <= 0 for pid in pids):
        raise argparse.ArgumentTypeError(f"pids must be positive integers, got {text!r}")
    return pids


def run_parser() -> argparse.ArgumentParser:
    """The flags of the agent (also those of the guide's start_production_monitoring.py)."""
    parser = argparse.ArgumentParser(
        prog="memmon", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--version", action="version", version=f"memmon {__version__}")
    # Paths stay strings: Path("") is ".", and an empty --state-dir must be refused, not become the cwd.
    add("--config", help="JSON config file (the guide's format; // comments allowed)")
    add("--health-port", type=int, help="health API port (default 8080; 0 picks a free port)")
    add("--prometheus-port", type=int, help="separate /metrics port (default 9091; 0 = none)")
    add("--bind", help="address to listen on (default 127.0.0.1)")
    add("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    add("--log-file", help="write logs to this file, rotated by size, instead of stderr")
    add("--log-format", choices=("text", "json"), help="log line format (default text)")
    add("--state-dir", help="directory of the SQLite state (default ~/.local/state/memmon)")
    add("--check-interval", type=float, help="seconds between checks (default 5)")
    add("--pid", type=_pid_list, action="append", help="watch these pids (repeatable or comma-separated)")
    add("--match", action="append", help="watch processes whose command line matches this regex (repeatable)")
    add(
        "--cgroup",
        action="append",
        help="watch this cgroup (directory or hierarchy path; a glob such as '/system.slice/*.service' watches "
        "each match; repeatable)",
    )
    add(
        "--unit",
        action="append",
        help="watch this systemd unit's cgroup (a glob such as 'app-*.service'; repeatable)",
    )
    add(
        "--server",
        choices=("gunicorn", "uwsgi", "celery", "generic"),
        help="the target is a pre-fork server (--pid names its master, or --match/--cgroup/--unit): workers are "
        "found by process tree and recycled one at a time",
    )
    add(
        "--node",
        action="store_true",
        default=None,
        help="Kubernetes node mode: watch every pod and container of this node (see node.* in the README)",
    )
    add("--node-name", help="the node's name (default: the NODE_NAME environment variable)")
    add("--dry-run", action="store_true", default=None, help="decide and log actions, do nothing")
    return parser


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The nested config dict of the flags given (flags not given are absent, so lower layers apply)."""
    mapping: dict[str, tuple[str, str]] = {
        "health_port": ("server", "health_port"),
        "prometheus_port": ("monitoring", "prometheus_port"),
        "bind": ("server", "bind"),
        "log_level": ("logging", "level"),
        "log_file": ("logging", "file"),
        "log_format": ("logging", "format"),
        "state_dir": ("storage", "state_dir"),
        "check_interval": ("monitoring", "check_interval"),
        "server": ("target", "server"),
        "dry_run": ("auto_response", "dry_run"),
        "node": ("node", "enabled"),
        "node_name": ("node", "name"),
    }
    overrides: dict[str, dict[str, Any]] = {}
    for attribute, (section, key) in mapping.items():
        value = getattr(args, attribute)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    targets = _target_overrides(args)
    if "targets" in targets:
        overrides.pop("target", None)  # --server went into each entry
        overrides["targets"] = targets["targets"]
    elif "target" in targets:
        overrides.setdefault("target", {}).update(targets["target"])
    return overrides


def _target_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--pid``/``--match``/``--cgroup``/``--unit`` each given once: the one ``target`` they describe together
    (``--server gunicorn --pid MASTER --cgroup C``); any of them given twice (or a glob): one ``targets`` entry
    per occurrence (``--pid 1,2`` stays one target of two pids)."""
    given = {
        "pids": args.pid or [],
        "match": args.match or [],
        "cgroup": args.cgroup or [],
        "unit": args.unit or [],
    }
    if not any(given.values()):
        return {}
    if all(len(values) <= 1 for values in given.values()) and not any(
        is_pattern(value) for value in (*given["cgroup"], *given["unit"])
    ):
        return {"target": {key: values[0] for key, values in given.items() if values}}
    entries = [{key: value} for key, values in given.items() for value in values]
    if args.server is not None:
        entries = [{**entry, "server": args.server} for entry in entries]
    return {"targets": entries}


def _report(error: ConfigError) -> int:
    for problem in error.problems:
        print(f"memmon: config error: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def check_config(argv: Sequence[str]) -> int:
    """``memmon check-config [FILE] [flags]``: 0 and what the configuration will do when valid (lines starting
    with ``warning:`` name settings that cannot work as meant), 2 and one line per problem otherwise."""
    parser = run_parser()
    parser.prog = "memmon check-config"
    parser.description = "Validate a memmon config file (and flags) and show what memmon will do."
    parser.add_argument("file", nargs="?", help="JSON config file (or --config)")
    args = parser.parse_args(argv)
    path = args.config if args.file is None else args.file
    try:
        settings = check_config_file(path, overrides=overrides_from(args))
    except ConfigError as error:
        return _report(error)
    print(f"{path or 'flags and defaults'}: ok")
    for line in summaries(settings):
        print(f"  {line}")
    return 0


def run(argv: Sequence[str]) -> int:
    """Parse flags, validate the whole config once, then run the agent in the foreground."""
    args = run_parser().parse_args(argv)
    try:
        settings: Settings = load_settings(args.config, overrides=overrides_from(args))
    except ConfigError as error:
        return _report(error)
    logs = settings.logging
    try:
        configure_logging(
            logs.level,
            file=None if logs.file is None else Path(logs.file),
            fmt=logs.format,
            max_bytes=logs.max_bytes,
            backup_count=logs.backup_count,
        )
    except OSError as exc:
        print(f"memmon: config error: logging.file: cannot open {logs.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    from memmon.service import run_agent

    return asyncio.run(run_agent(settings))


def test_alert(argv: Sequence[str]) -> int:
    """``memmon test-alert --channel NAME``: 0 when the receiver accepted, 1 when it refused or was unreachable,
    2 for a bad config or a channel that is not configured."""
    parser = argparse.ArgumentParser(
        prog="memmon test-alert", description="Send a test alert through one channel and show the answer."
    )
    parser.add_argument("--channel", required=True, help="log, slack, webhook, email or alertmanager")
    parser.add_argument("--config", help="JSON config file")
    parser.add_argument("--severity", choices=("warning", "critical", "emergency"), default="warning")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        return _report(error)
    from memmon.alerting.testalert import run_test_alert

    return asyncio.run(run_test_alert(settings.alerting, args.channel, args.severity))


COMMANDS = {"check-config": check_config, "test-alert": test_alert}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``memmon`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in COMMANDS:
        return COMMANDS[arguments[0]](arguments[1:])
    return run(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
