"""The graceful restart as the target shapes it: the preset of a pre-fork server, and the strategy's needs.

``target.server`` (gunicorn, uWSGI, Celery, generic) picks the restart strategy when none is configured and the
signal that recycles a worker (``SERVER_PRESETS`` of ``memmon.config.actions``). The strategies need something
of the target: ``systemd`` a unit to restart, ``recycle`` a pre-fork server whose workers it recycles. Both are
applied to the global settings and to each entry of ``targets`` as that target sees them.
"""

from __future__ import annotations

from typing import Any

from memmon.config.actions import SERVER_PRESETS, AutoResponseSettings
from memmon.config.rules import Unsure, problem
from memmon.config.sections import TargetSettings

RESTART_PATH = "auto_response.emergency_actions.graceful_restart"
"""Where the graceful restart is in the settings tree (the problems below are reported there)."""


def with_server_preset(response: AutoResponseSettings, server: str | None) -> AutoResponseSettings:
    """A pre-fork server's preset strategy (when none is configured) and worker signal."""
    if server is None:
        return response  # recycle without a server: see restart_problems
    restart = response.emergency_actions.graceful_restart
    preset = SERVER_PRESETS[server]
    update: dict[str, Any] = {}
    if "strategy" not in restart.model_fields_set:
        update["strategy"] = preset.strategy
    if restart.worker_signal is None:
        update["worker_signal"] = preset.worker_signal
    emergency = response.emergency_actions.model_copy(
        update={"graceful_restart": restart.model_copy(update=update)}
    )
    return response.model_copy(update={"emergency_actions": emergency})


def restart_problems(
    response: AutoResponseSettings, target: TargetSettings, unsure: Unsure
) -> list[dict[str, Any]]:
    """A unit for the systemd strategy; a pre-fork server for recycle (paths from the root of the tree)."""
    problems = []
    restart = response.emergency_actions.graceful_restart
    strategy_known = not unsure(f"{RESTART_PATH}.strategy")
    unit_known = not (unsure(f"{RESTART_PATH}.unit") or unsure("target.unit"))
    if strategy_known and unit_known and restart.strategy == "systemd" and not (restart.unit or target.unit):
        problems.append(
            problem(
                "the systemd strategy needs a unit",
                at=f"{RESTART_PATH}.unit",
                expected="graceful_restart.unit, or target.unit / --unit",
            )
        )
    if (
        strategy_known
        and not unsure("target.server")
        and target.server is None
        and restart.strategy == "recycle"
    ):
        problems.append(
            problem(
                "recycle needs a pre-fork server",
                at=f"{RESTART_PATH}.strategy",
                expected="target.server (--server gunicorn|uwsgi|celery|generic)",
            )
        )
    return problems
