"""``GET /health/targets`` and ``GET /health/targets/{name}``: every watched target, worst first, with its level,
state, usage, limit, the reasons of its levels, its firing alerts and its latest action.

A single-target agent lists its one target; a multi-target agent also lists ``host`` (the host judged once).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from memmon.exposition.health import action_payload, memory_payload
from memmon.exposition.requests import json_error
from memmon.exposition.source import TargetsSource, TargetView
from memmon.kits.isotime import iso_utc
from memmon.model import Level, TargetState


def status_of(view: TargetView) -> str:
    """``starting`` before its first check, ``unknown`` while missing or unreadable, else its level's name."""
    latest = view.latest
    if latest is None:
        return "starting"
    if latest.sample.target_state is not TargetState.PRESENT:
        return "unknown"
    return view.level.label


def target_payload(view: TargetView, *, detail: bool = False) -> dict[str, Any]:
    """One target as the API shows it; ``detail`` adds the full memory block (as ``/health/memory``), its
    time-to-limit prediction (predictive alerting on) and its recent actions."""
    latest = view.latest
    sample = latest.sample if latest is not None else None
    payload: dict[str, Any] = {
        "name": view.name,
        "status": status_of(view),
        "level": view.level.label,
        "kind": sample.target_kind.value if sample else None,
        "state": sample.target_state.value if sample else None,
        "problem": sample.target_problem if sample else None,
        "memory_usage_mb": round(sample.target_bytes / 2**20, 2)
        if sample and sample.target_bytes is not None
        else None,
        "limit_mb": round(sample.effective_limit_bytes / 2**20, 2) if sample else None,
        "limit_source": sample.limit_source if sample else None,
        "percent": round(sample.percent_of_limit, 2)
        if sample and sample.percent_of_limit is not None
        else None,
        "checked_at": iso_utc(sample.timestamp) if sample else None,
        "reasons": [
            {"component": c.component, "level": c.level.label, "reason": c.reason}
            for c in (latest.components if latest else ())
            if c.level > Level.OK
        ],
        "active_alerts": [
            {
                "id": a.id,
                "component": a.component,
                "severity": a.severity.label,
                "started_at": iso_utc(a.started_at),
            }
            for a in view.active_alerts()
        ],
    }
    actions = view.recent_actions()
    payload["last_action"] = action_payload(actions[-1]) if actions else None
    if detail:
        prediction = view.prediction
        payload["memory"] = memory_payload(sample) if sample else None
        payload["prediction"] = None if prediction is None else dataclasses.asdict(prediction)
        payload["recent_actions"] = [action_payload(a) for a in actions[-10:]]
    return payload


class TargetRoutes:
    """The two routes over a monitor's targets."""

    def __init__(self, source: TargetsSource) -> None:
        self.source = source

    def add_to(self, app: web.Application) -> None:
        """Register the routes on ``app``."""
        app.router.add_get("/health/targets", self.targets)
        app.router.add_get("/health/targets/{name:.+}", self.target)

    async def targets(self, _request: web.Request) -> web.Response:
        """Every target, worst first (level, then how full)."""
        views = self.source.ordered_watches()
        return web.json_response({"count": len(views), "targets": [target_payload(view) for view in views]})

    async def target(self, request: web.Request) -> web.Response:
        """One target by name, in detail; 404 naming the known targets otherwise."""
        name = request.match_info["name"]
        views = {view.name: view for view in self.source.ordered_watches()}
        view = views.get(name)
        if view is None:
            raise json_error(404, "unknown target", f"no target {name!r}", targets=sorted(views))
        return web.json_response(target_payload(view, detail=True))
