"""What a configuration will do, in words: the target, the limit it is judged against, the thresholds, the
strategy and its signals, and the thresholds that can never fire under that limit.

``memmon check-config`` prints it, and the agent logs it at start, so that "ok" never hides a target that is a
different process than meant or an MB threshold above a 512 MiB cgroup's limit (1024/2048/4096 MiB are the
guide's defaults).
"""

from __future__ import annotations

from memmon.config import Settings
from memmon.model import MB
from memmon.sampling.base import SourceUnavailable
from memmon.sampling.cgroup import CgroupSampler, cgroup_at, cgroup_of_unit


def describe_target(settings: Settings) -> str:
    """The target in one phrase, e.g. ``gunicorn server: master pid 42 and its workers``."""
    target = settings.target
    if target.pids:
        what = "pid " + ",".join(str(pid) for pid in target.pids)
    elif target.match:
        what = f"processes matching {target.match!r}"
    elif target.cgroup or target.unit:
        what = f"cgroup {target.cgroup}" if target.cgroup else f"unit {target.unit}"
    else:
        return "memmon's own process (library mode)"
    if target.server is None:
        return what
    if target.pids:
        master = f"master {what}"
    elif target.match:
        master = f"master = the top of the {what}"
    else:
        master = f"master = the main process of {what}"
    return f"{target.server} server: {master}, workers = its children"


def cgroup_limit(settings: Settings) -> int | None:
    """The limit of the configured cgroup/unit when it can be read now, else None."""
    target = settings.target
    try:
        if target.cgroup:
            location = cgroup_at(target.cgroup)
        elif target.unit:
            location = cgroup_of_unit(target.unit)
        else:
            return None
        return CgroupSampler(location).sample().limit_bytes
    except (SourceUnavailable, OSError):
        return None


def _family(values: tuple[float | None, float | None, float | None], unit: str) -> str | None:
    """``70/85/95 % of the limit``; ``-`` for a level switched off (null); None when all three are off."""
    if all(value is None for value in values):
        return None
    return "/".join("-" if value is None else f"{value:g}" for value in values) + f" {unit}"


def summary(settings: Settings, limit_bytes: int | None = None) -> list[str]:
    """The lines of the summary; lines starting with ``warning:`` name a setting that will not work as meant."""
    thresholds = settings.thresholds
    response = settings.auto_response
    restart = response.emergency_actions.graceful_restart
    limit = limit_bytes if limit_bytes is not None else settings.target.memory_limit_bytes
    lines = [f"target: {describe_target(settings)}"]
    lines.append(
        "limit: "
        + (
            f"{limit / MB:.0f} MiB"
            if limit is not None
            else "the target's cgroup limit (or host memory) at run time"
        )
    )
    families = [
        _family(
            (thresholds.memory_warning_mb, thresholds.memory_critical_mb, thresholds.memory_emergency_mb),
            "MiB",
        ),
        _family(
            (
                thresholds.memory_percent_warning,
                thresholds.memory_percent_critical,
                thresholds.memory_percent_emergency,
            ),
            "% of the limit",
        ),
    ]
    judged = [family for family in families if family is not None]
    lines.append(
        f"check every {settings.monitoring.check_interval:g}s; warning/critical/emergency at "
        + (
            ", ".join(judged) + (" (the lower applies)" if len(judged) > 1 else "")
            if judged
            else "no threshold"
        )
    )
    if not response.enabled or not response.emergency_actions.prepare_restart or restart.strategy == "none":
        lines.append("at emergency: no restart (graceful_restart.strategy none)")
    elif restart.strategy == "recycle":
        budget = settings.target.worker_budget_mb
        lines.append(
            f"at emergency: recycle the fattest worker with {restart.worker_signal}, one at a time, until the "
            f"emergency is over; workers over "
            + (f"{budget:g} MiB" if budget else "their share of the warning line")
            + " are recycled at any level"
        )
    elif restart.strategy == "signal":
        who = "the master" if settings.target.server else "the target processes"
        lines.append(f"at emergency: {restart.signal} to {who}, success when {_expects(restart.signal)}")
    else:
        lines.append(f"at emergency: restart by {restart.strategy}")
    if restart.strategy not in ("none", "recycle"):
        lines.append(f"restart cool-down {restart.cooldown_seconds:g}s")
    lines.append(f"restarts stop after {restart.max_restarts_per_hour} that fail or free nothing in an hour")
    if response.dry_run:
        lines.append("dry run: actions are decided and logged, not done")
    if limit is not None:
        for name, value in (
            ("memory_warning_mb", thresholds.memory_warning_mb),
            ("memory_critical_mb", thresholds.memory_critical_mb),
            ("memory_emergency_mb", thresholds.memory_emergency_mb),
        ):
            if value is not None and value * MB >= limit:
                lines.append(
                    f"warning: thresholds.{name} {value:g} MiB is at or above the limit ({limit / MB:.0f} MiB): "
                    "it can never fire (the percent thresholds apply)"
                )
    return lines


def summaries(settings: Settings) -> list[str]:
    """The summary of every target: one block per ``targets`` entry (its lines prefixed ``[name]``), or the one
    target's lines as :func:`summary` gives them."""
    if not settings.multi_target:
        return summary(settings, cgroup_limit(settings))
    node = settings.node
    if node.enabled:
        chosen = {"all": "every pod", "annotated": 'pods annotated memmon.io/watch: "true"'}.get(
            node.select, "the pods of " + ", ".join(node.namespaces)
        )
        excluded = (
            f" except namespaces {', '.join(node.exclude_namespaces)}" if node.exclude_namespaces else ""
        )
        return [
            f"node mode on {node.node_name()}: {chosen}{excluded} (cgroups under {node.cgroup_root})"
            + (", and each container" if node.containers else ""),
            f"restart at emergency: {node.restart}; at most {node.max_restarts_per_hour} restarts an hour on this node",
        ]
    lines = [f"{len(settings.targets)} target entries; the host is judged once, as target 'host'"]
    for entry in settings.targets:
        own = settings.for_target(entry)
        name = entry.default_name() or f"each cgroup matching {entry.cgroup or entry.unit!r}"
        limit = None if entry.is_pattern else cgroup_limit(own)
        lines += [
            f"warning: [{name}] {line.removeprefix('warning: ')}"
            if line.startswith("warning:")
            else f"[{name}] {line}"
            for line in summary(own, limit)
        ]
    return lines


def _expects(signal_name: str) -> str:
    return "its workers are replaced (a reload)" if signal_name == "SIGHUP" else "it exited"
