"""Robust trends and time-to-level prediction on synthetic, time-compressed series (seeded noise, no sleeps)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import pytest

from memmon.evaluation.trend import Trend, TrendPredictor, fit_trend, seconds_until, theil_sen_slope
from memmon.model import MB

BASE = 200 * MB
NOISE = 2 * MB
Series = list[tuple[float, float]]


def series(
    shape: Callable[[float], float], *, end: float, step: float, seed: int, noise: float = NOISE
) -> Series:
    """``shape(t)`` in bytes plus uniform noise of +-``noise``, sampled every ``step`` s from 0 to ``end``."""
    rng = random.Random(seed)
    count = int(end / step) + 1
    return [(i * step, shape(i * step) + rng.uniform(-noise, noise)) for i in range(count)]


def least_squares(points: Series) -> tuple[float, float]:
    """The baseline, Prometheus' predict_linear: least-squares slope and fitted value at the last point."""
    end = points[-1][0]
    xs = [t - end for t, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


def test_too_few_points_or_too_short_a_span_gives_none() -> None:
    """Fewer than 3 points, or a span under 1 s, has no trend."""
    assert fit_trend([]) is None
    assert fit_trend([(0.0, 1.0), (10.0, 2.0)]) is None
    assert fit_trend([(0.0, 1.0), (0.3, 2.0), (0.6, 3.0)]) is None
    assert fit_trend([(0.0, 1.0), (0.5, 2.0), (1.0, 3.0)]) is not None


def test_exact_line_is_recovered() -> None:
    """A noiseless line gives its slope, its value at the end, r2 1 and no acceleration."""
    points = [(1.7e9 + t, BASE + 1000.0 * t) for t in range(0, 300, 3)]
    trend = fit_trend(points)
    assert trend is not None
    assert trend.slope == pytest.approx(1000.0)
    assert trend.intercept_at_end == pytest.approx(BASE + 1000.0 * 297)
    assert trend.r2 == pytest.approx(1.0)
    assert (trend.span_seconds, trend.points, trend.accelerating) == (297.0, 100, False)
    assert trend.recent_slope == pytest.approx(1000.0)


def test_flat_series_has_zero_slope_and_full_r2() -> None:
    """A constant series is a flat line: slope 0, r2 1 (the flat line fits it exactly)."""
    trend = fit_trend([(float(t), float(BASE)) for t in range(50)])
    assert trend is not None
    assert (trend.slope, trend.intercept_at_end, trend.r2) == (0.0, float(BASE), 1.0)


def test_subsampled_theil_sen_stays_close_to_all_pairs() -> None:
    """Above 40 points the deterministic pair subsample is within 3 % of the all-pairs Theil-Sen slope."""
    points = series(lambda t: BASE + 0.1 * MB * t, end=299, step=1, seed=3)
    ts, ys = [t for t, _ in points], [y for _, y in points]
    every_pair = statistics.median(
        (ys[j] - ys[i]) / (ts[j] - ts[i]) for i in range(len(ts)) for j in range(i + 1, len(ts))
    )
    assert theil_sen_slope(ts, ys) == pytest.approx(every_pair, rel=0.03)


def test_outliers_barely_move_the_robust_slope() -> None:
    """Ten +100 MB outliers near the end move Theil-Sen by under 5 % while least squares is thrown far off."""
    points = series(lambda t: BASE + 0.1 * MB * t, end=299, step=1, seed=4)
    spiked = [(t, y + 100 * MB) if 270 <= t < 280 else (t, y) for t, y in points]
    trend, clean = fit_trend(spiked), fit_trend(points)
    assert trend is not None and clean is not None
    assert trend.slope == pytest.approx(0.1 * MB, rel=0.05)
    assert least_squares(spiked)[0] > 1.2 * 0.1 * MB
    assert trend.r2 < clean.r2


def test_rolling_maxima_follow_a_sawtooth_peaks() -> None:
    """On rolling maxima covering the period, a stationary gc sawtooth is flat at its peaks with no trend."""
    points = series(lambda t: BASE + 60 * MB * ((t % 30) / 30), end=599, step=1, seed=5)
    trend = fit_trend(points, rolling_max_seconds=30)
    assert trend is not None
    assert abs(trend.slope * 600) < 2 * MB
    assert trend.intercept_at_end == pytest.approx(BASE + 60 * MB, abs=3 * MB)


def test_quadratic_growth_is_accelerating() -> None:
    """Growth that speeds up within the window has a recent slope over 1.5 times the window's: accelerating."""
    trend = fit_trend([(float(t), BASE + 50.0 * t * t) for t in range(0, 600, 5)])
    assert trend is not None
    assert trend.accelerating
    assert trend.recent_slope > 1.5 * trend.slope > 0


def test_seconds_until_the_level() -> None:
    """Time to a level is distance over slope; 0 once there; None when not growing."""
    trend = Trend(
        slope=MB,
        intercept_at_end=100 * MB,
        r2=1.0,
        span_seconds=60,
        points=60,
        accelerating=False,
        recent_slope=MB,
    )
    assert seconds_until(trend, 160 * MB) == pytest.approx(60.0)
    assert seconds_until(trend, 50 * MB) == 0.0
    flat = Trend(0.0, 100 * MB, 1.0, 60, 60, False, 0.0)
    assert seconds_until(flat, 160 * MB) is None
    shrinking = Trend(-MB, 100 * MB, 1.0, 60, 60, False, -MB)
    assert seconds_until(shrinking, 50 * MB) is None


def test_predictor_keeps_only_its_window_and_needs_min_points() -> None:
    """The predictor answers None below min_points and fits only the last window_seconds."""
    predictor = TrendPredictor(60, min_points=10)
    for t in range(9):
        predictor.add(float(t), BASE + t * MB)
    assert predictor.predict(400 * MB) is None
    for t in range(9, 300):
        predictor.add(float(t), BASE + t * MB)
    prediction = predictor.predict(1000 * MB)
    assert prediction is not None
    assert prediction.window_points == 61
    assert prediction.confident
    assert prediction.slope == pytest.approx(MB)
    assert prediction.seconds == pytest.approx(1000 - 200 - 299)
    again = predictor.predict(600 * MB)  # the same fit, another level
    assert again is not None and again.seconds == pytest.approx(600 - 200 - 299)


def test_linear_leak_predicted_within_20_percent_once_the_window_is_full() -> None:
    """A linear leak's predicted time to the limit is within 20 % of the generator's true time at every check."""
    rate, limit, window = 0.2 * MB, 512 * MB, 600.0

    def true_value(t: float) -> float:
        return BASE + rate * t

    crossing = (limit - BASE) / rate  # 1560 s
    for seed in range(3):
        predictor = TrendPredictor(window)
        checked = 0
        for t, value in series(true_value, end=crossing, step=5, seed=seed):
            predictor.add(t, value)
            actual = crossing - t
            if t < window or actual < 60:
                continue
            prediction = predictor.predict(limit)
            assert prediction is not None and prediction.confident and prediction.seconds is not None
            assert prediction.seconds == pytest.approx(actual, rel=0.2), (seed, t)
            checked += 1
        assert checked > 150


def test_accelerating_leak_is_flagged_earlier_than_least_squares() -> None:
    """A quadratic leak is flagged (time to limit <= prediction_window) earlier than a predict_linear baseline."""
    window = prediction_window = 600.0
    start, crossing_after, limit = 600.0, 900.0, 512 * MB
    curvature = (limit - BASE) / crossing_after**2

    def true_value(t: float) -> float:
        return BASE + (curvature * (t - start) ** 2 if t > start else 0.0)

    for seed in range(3):
        predictor = TrendPredictor(window)
        recent: Series = []
        ours: float | None = None
        baseline: float | None = None
        for t, value in series(true_value, end=start + crossing_after, step=5, seed=seed):
            predictor.add(t, value)
            recent = [*(p for p in recent if p[0] >= t - window), (t, value)]
            prediction = predictor.predict(limit)
            seconds = prediction.seconds if prediction and prediction.confident else None
            if ours is None and seconds is not None and seconds <= prediction_window:
                ours = t
                assert prediction is not None and prediction.accelerating
            if baseline is None and t >= window:
                slope, at_end = least_squares(recent)
                if slope > 0 and (limit - at_end) / slope <= prediction_window:
                    baseline = t
        assert ours is not None and baseline is not None
        assert start < ours < baseline - 60, (seed, ours, baseline)
        assert (
            start + crossing_after - ours <= prediction_window
        )  # not a false early flag: it does cross in time


def test_noise_only_is_not_a_confident_growth() -> None:
    """A flat series of noise is never a confident positive trend, with or without rolling maxima."""
    for seed in range(5):
        for rolling in (0.0, 15.0):
            predictor = TrendPredictor(600, rolling_max_seconds=rolling)
            for t, value in series(lambda _t: BASE, end=1800, step=5, seed=seed):
                predictor.add(t, value)
                if t < 600:
                    continue
                prediction = predictor.predict(512 * MB)
                assert prediction is not None
                assert not (prediction.confident and prediction.slope > 0), (seed, rolling, t, prediction)


def test_backwards_timestamp_restarts_the_history() -> None:
    """A point older than the newest (a wall-clock step back) drops the older points."""
    predictor = TrendPredictor(600, min_points=3)
    for t in range(100):
        predictor.add(1000.0 + t, BASE + t * MB)
    predictor.add(500.0, BASE)
    assert predictor.predict(400 * MB) is None
