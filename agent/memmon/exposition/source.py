"""What the exposition stage reads from a running monitor (implemented by ``memmon.app``).

A protocol, so that the server and the metrics collector depend on the shape they need and never import the
wiring module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from memmon.alerting.channel import Receipt
from memmon.alerting.channelhealth import ChannelReport
from memmon.config import Settings
from memmon.model import ActionResult, Alert, Degradation, Evaluation, HistoryPoint, Level, LimitPrediction
from memmon.telemetry import Telemetry


class TargetView(Protocol):
    """What the API reads of one target (implemented by ``memmon.targetwatch.TargetWatch``)."""

    name: str
    latest: Evaluation | None
    labels: Mapping[str, str]
    """Labels after ``target`` on its series (node mode: namespace, pod, container); empty otherwise."""

    @property
    def level(self) -> Level: ...

    def active_alerts(self) -> tuple[Alert, ...]: ...

    def recent_actions(self) -> list[ActionResult]: ...

    @property
    def prediction(self) -> LimitPrediction | None: ...

    @property
    def degraded(self) -> tuple[Degradation, ...]: ...


class TargetsSource(Protocol):
    """The monitor side: its targets, worst first."""

    def ordered_watches(self) -> Sequence[TargetView]: ...


class MonitorView(TargetsSource, Protocol):
    """The read side of ``ProductionMemoryMonitor`` plus its manual actions."""

    settings: Settings
    telemetry: Telemetry
    started_at: float | None

    @property
    def latest(self) -> Evaluation | None: ...

    @property
    def level(self) -> Level: ...

    @property
    def degraded(self) -> tuple[Degradation, ...]: ...

    @property
    def monitoring_active(self) -> bool: ...

    @property
    def uptime_seconds(self) -> float: ...

    def is_live(self, scope: str = "app") -> bool: ...

    def recent_actions(self) -> list[ActionResult]: ...

    @property
    def prediction(self) -> LimitPrediction | None: ...

    def leaks(self) -> dict[str, Any]: ...

    async def leak_snapshot(self, seconds: float) -> dict[str, Any]: ...

    def is_ready(self) -> bool: ...

    def server_report(self) -> dict[str, Any] | None: ...

    def active_alerts(self) -> tuple[Alert, ...]: ...

    async def history_since(self, since: float) -> list[HistoryPoint]: ...

    async def alerts_since(self, since: float) -> list[Alert]: ...

    async def history_window(
        self, since: float, max_points: int, target: str | None = None
    ) -> tuple[int, list[HistoryPoint]]: ...

    async def count_gc_objects(self) -> tuple[int, float] | None: ...

    def run_gc(self) -> ActionResult: ...

    def alert_channels(self) -> dict[str, ChannelReport]: ...

    async def send_test_alert(self, channel: str, severity: Level = Level.WARNING) -> Receipt: ...
