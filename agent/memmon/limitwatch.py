"""Predictive alerting, wired: the trend predictor fed with every check, its :class:`~memmon.model.LimitPrediction`
and the ``memory_prediction`` alert.

Wiring like :mod:`memmon.leakwatch`, which drives it with each check that measured the target. With
``experimental.predictive_alerting`` on, each check predicts when the effective limit (and the critical
threshold) is reached at the current rate. The alert fires while the prediction is confident, the limit is
reached within ``prediction_window`` seconds, and the growth over that window is at least ``trend_threshold``
of the limit; it resolves when that stops holding. The prediction itself (``/health``, the metrics) is kept
whether or not the alert fires.
"""

from __future__ import annotations

from dataclasses import asdict

from memmon.config import Settings
from memmon.evaluation.findings import FindingAlerts
from memmon.evaluation.trend import Prediction, TrendPredictor
from memmon.model import MB, Alert, LimitPrediction

PREDICTION = "memory_prediction"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


class LimitWatch:
    """Feeds the trend predictor with each check and turns its predictions into the prediction alert."""

    def __init__(self, settings: Settings) -> None:
        experimental = settings.experimental
        self.settings = settings
        self.predictor = (
            TrendPredictor(experimental.prediction_window) if experimental.predictive_alerting else None
        )
        self.alerts = FindingAlerts(PREDICTION)
        self.prediction: LimitPrediction | None = None

    def on_sample(
        self,
        monotonic: float,
        now: float,
        value: float,
        target: str,
        limit_bytes: int,
        critical_bytes: float | None,
    ) -> list[Alert]:
        """Feed one measurement (``value`` bytes at ``monotonic``, wall clock ``now``); the alerts it fires or
        resolves. Nothing while predictive alerting is off."""
        if self.predictor is None:
            return []
        self.predictor.add(monotonic, value)
        return self._predict(now, value, target, limit_bytes, critical_bytes)

    def reset(self) -> None:
        """Forget the trend and the prediction (the target is gone); the alert is resolved by the caller."""
        if self.predictor is not None:
            self.predictor.reset()
        self.prediction = None

    def _predict(
        self, now: float, value: float, target: str, limit_bytes: int, critical_bytes: float | None
    ) -> list[Alert]:
        assert self.predictor is not None
        experimental = self.settings.experimental
        to_limit = self.predictor.predict(limit_bytes)
        to_critical = self.predictor.predict(critical_bytes) if critical_bytes else None
        self.prediction = None if to_limit is None else _limit_prediction(to_limit, to_critical)
        holds = (
            to_limit is not None
            and to_limit.confident
            and to_limit.seconds is not None
            and to_limit.seconds <= experimental.prediction_window
            and to_limit.slope * experimental.prediction_window >= experimental.trend_threshold * limit_bytes
        )
        seconds = to_limit.seconds if to_limit is not None and to_limit.seconds is not None else float("inf")
        message = (
            f"PREDICTED: at this rate the limit ({limit_bytes / MB:.0f} MB) is reached in {_duration(seconds)}"
            if holds
            else "no longer predicted to reach the limit within the prediction window"
        )
        metadata: dict[str, object] = {
            "prediction": {} if self.prediction is None else asdict(self.prediction),
            "limit_mb": round(limit_bytes / MB, 1),
        }
        return self.alerts.update(
            holds,
            now=now,
            target=target,
            usage_mb=value / MB,
            threshold_mb=limit_bytes / MB,
            message=message,
            metadata=metadata,
        )


def _limit_prediction(to_limit: Prediction, to_critical: Prediction | None) -> LimitPrediction:
    return LimitPrediction(
        seconds_to_limit=None if to_limit.seconds is None else round(to_limit.seconds, 1),
        seconds_to_critical=None if to_critical is None or to_critical.seconds is None
        else round(to_critical.seconds, 1),
        slope_bytes_per_second=round(to_limit.slope, 1),
        confident=to_limit.confident,
        accelerating=to_limit.accelerating,
        r2=round(to_limit.r2, 3),
        points=to_limit.window_points,
    )  # fmt: skip
