"""The ``auto_response`` section: what memmon does at each level (see ``memmon.actions``).

The guide's keys (``force_gc``, ``multiple_gc_cycles``, ``clear_caches``, ``throttle_operations``,
``clear_all_caches``, ``emergency_throttle``, ``send_immediate_alert``) plus the agent-mode actions: a ``signal``
or an ``http_hook`` per level, and ``emergency_actions.graceful_restart`` with its strategy.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

from memmon.config.fields import Float, Int, Seconds, Section, http_url
from memmon.config.rules import problem, problems_error


def _signal_name(value: Any) -> Any:
    """``SIGTERM``, ``TERM`` or ``15`` -> ``SIGTERM``; anything else is an error listing a few valid names."""
    text = str(value).strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text)).name
        except ValueError:
            pass
    name = text if text.startswith("SIG") else f"SIG{text}"
    if name not in signal.Signals.__members__:
        raise problems_error(
            problem(
                "unknown signal", got=value, expected="a signal name such as SIGTERM, SIGINT, SIGUSR1, SIGHUP"
            )
        )
    return name


SignalName = Annotated[str, BeforeValidator(_signal_name)]
HookUrl = Annotated[SecretStr | None, AfterValidator(http_url)]


class _AgentActions(Section):
    signal: SignalName | None = None
    """Send this signal to the target processes at this level (e.g. SIGUSR1 to ask the app to drop caches)."""
    http_hook: HookUrl = None
    """POST a JSON notice to this URL at this level (e.g. the app's own cache-clear endpoint; secret)."""


class WarningActions(_AgentActions):
    """Automatic actions at the warning level."""

    force_gc: bool = True
    """Run a garbage collection (library mode: memmon's own process is the target)."""
    log_warning: bool = True
    """Log a warning message."""


class CriticalActions(_AgentActions):
    """Automatic actions at the critical level."""

    force_gc: bool = True
    """Run garbage collection (library mode)."""
    multiple_gc_cycles: Annotated[Int, Field(ge=0)] = 3
    """Garbage-collection cycles to run (stops early when one frees nothing)."""
    clear_caches: bool = True
    """Clear the registered application caches."""
    throttle_operations: bool = True
    """Shrink ``monitor.throttle`` to its critical capacity."""


@dataclass(frozen=True)
class ServerPreset:
    """What ``target.server`` sets: the strategy when none is configured, and a worker's graceful-exit signal."""

    strategy: str
    worker_signal: str


SERVER_PRESETS: dict[str, ServerPreset] = {
    # gunicorn/workers/base.py init_signals: SIGTERM -> handle_exit (alive = False: finish the request, exit);
    # SIGQUIT/SIGINT -> quick exit. The arbiter forks a replacement (docs: "Signal Handling").
    "gunicorn": ServerPreset("recycle", "SIGTERM"),
    # uWSGI core/uwsgi.c worker setup: SIGHUP -> gracefully_kill (finish the request, exit; the master
    # respawns), SIGTERM/SIGINT -> end_me (at once).
    "uwsgi": ServerPreset("recycle", "SIGHUP"),
    # billiard's pool children exit mid-task on SIGTERM (billiard/common.py reset_signals -> sys.exit) and
    # ignore SIGINT: no graceful per-child signal. The main process's SIGTERM is Celery's warm shutdown
    # (running tasks finish); its supervisor starts it again. Per child: --max-memory-per-child.
    "celery": ServerPreset("signal", "SIGTERM"),
    # Any master that replaces a worker that exited after SIGTERM.
    "generic": ServerPreset("recycle", "SIGTERM"),
}


class GracefulRestartSettings(Section):
    """How the target is restarted at emergency, before the kernel OOM killer does it mid-work."""

    strategy: Literal["none", "signal", "recycle", "systemd", "kubernetes-evict", "kubernetes-liveness"] = (
        "none"
    )
    """``signal`` (send ``signal``, wait ``grace_seconds``; SIGHUP: wait for the workers to be replaced),
    ``recycle`` (a server's fattest worker, one at a time; the default with ``target.server``), ``systemd``
    (``systemctl try-restart``), ``kubernetes-evict`` (Eviction API), ``kubernetes-liveness`` (/health/live turns
    503), ``none`` (log only)."""
    signal: SignalName = "SIGTERM"
    """The signal of the ``signal`` strategy (to the master of a server, the target processes otherwise)."""
    worker_signal: SignalName | None = None
    """``recycle``: the signal that makes a worker finish its request and exit; null = the server preset's."""
    grace_seconds: Annotated[Float, Field(ge=0)] = 30
    """Time the target gets to exit (signal, a recycled worker) or the emergency must persist
    (kubernetes-liveness)."""
    kill_after_grace: bool = False
    """``signal``: send SIGKILL to what is still alive after ``grace_seconds``."""
    unit: str | None = None
    """``systemd``: the unit to restart; null = ``target.unit``."""
    fallback: Literal["none", "signal", "kubernetes-liveness"] = "none"
    """What to do when the strategy fails (an eviction blocked by a PodDisruptionBudget, systemctl failing)."""
    evict_attempts: Annotated[Int, Field(ge=1)] = 5
    """``kubernetes-evict``: attempts (429 from a PodDisruptionBudget is retried with backoff)."""
    cooldown_seconds: Annotated[Float, Field(ge=0)] = 60
    """No second whole-target restart within this many seconds of the previous one. Worker recycles have none:
    one at a time, the next once the previous worker's replacement is up."""
    max_restarts_per_hour: Annotated[Int, Field(ge=1)] = 3
    """Restarts or recycles that freed no memory (failures) allowed in any hour; then memmon stops and alerts
    that restarts cannot keep up (repeated victims are the classic OOM-daemon failure). Restarts that freed
    memory are not counted."""


class EmergencyActions(_AgentActions):
    """Automatic actions at the emergency level."""

    force_gc: bool = True
    """Run garbage collection (library mode)."""
    multiple_gc_cycles: Annotated[Int, Field(ge=0)] = 3
    """Garbage-collection cycles to run."""
    clear_all_caches: bool = True
    """Clear every registered cache."""
    emergency_throttle: bool = True
    """Shrink ``monitor.throttle`` to its emergency capacity."""
    stop_nonessential_workers: bool = True
    """Stop the workers registered as non-essential (cooperatively)."""
    send_immediate_alert: bool = True
    """Notify at once, bypassing the alert rate limit."""
    prepare_restart: bool = True
    """Run the graceful restart below (when its strategy is not ``none``)."""
    graceful_restart: GracefulRestartSettings = Field(default_factory=GracefulRestartSettings)
    """Strategy and safety limits of the graceful restart."""


class MemoryHighGuardSettings(Section):
    """cgroup v2 only: set the target cgroup's ``memory.high`` a little above the emergency threshold, so the
    kernel throttles a runaway leak (buying the graceful restart time) instead of reaching ``memory.max``."""

    enabled: Literal["auto", "on", "off"] = "auto"
    """``auto``: on when a graceful restart strategy is configured (a throttled service is then restarted
    soon; without one, throttling would only slow it down); ``on``; ``off``."""
    margin_percent: Annotated[Float, Field(gt=0, lt=50)] = 2.0
    """Where the guard sits: the emergency threshold plus this percent of the limit."""


class AutoResponseSettings(Section):
    """Actions taken automatically when a level is reached."""

    enabled: bool = True
    """Run the automatic actions."""
    dry_run: bool = False
    """Decide and log what would be done, do nothing (``--dry-run``)."""
    cooldown_seconds: Seconds = 60
    """Minimum seconds between two runs of one level's actions (a level flapping does not repeat them)."""
    kubernetes_events: bool = True
    """In a pod: annotate it and emit an Event at each level change."""
    warning_actions: WarningActions = Field(default_factory=WarningActions)
    """Actions at the warning level."""
    critical_actions: CriticalActions = Field(default_factory=CriticalActions)
    """Actions at the critical level."""
    emergency_actions: EmergencyActions = Field(default_factory=EmergencyActions)
    """Actions at the emergency level."""
    memory_high_guard: MemoryHighGuardSettings = Field(default_factory=MemoryHighGuardSettings)
    """The cgroup v2 ``memory.high`` guard above the emergency threshold."""
