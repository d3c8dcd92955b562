"""Percentiles over measured samples (milliseconds or ratios), nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Distribution:
    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Distribution | None:
        """None for no samples (None and NaN are not samples): a figure not measured never shows as 0."""
        data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
        if data.size == 0:
            return None
        p50, p95, p99 = np.percentile(data, [50, 95, 99])  # linear interpolation between samples
        return cls(
            n=int(data.size),
            mean=float(data.mean()),
            p50=float(p50),
            p95=float(p95),
            p99=float(p99),
            min=float(data.min()),
            max=float(data.max()),
        )


BOOTSTRAP_RESAMPLES = 2000  # medians drawn for a median's interval


def median_interval(values: Iterable[float], level: float = 0.9) -> tuple[float, float]:
    """Where the median of `values` falls in `level` of samples like them: a bootstrap of the
    median, seeded, so the same values always give the same interval."""
    data = np.asarray(list(values), dtype=np.float64)
    draws = np.random.default_rng(0).choice(data, size=(BOOTSTRAP_RESAMPLES, data.size))
    low, high = np.percentile(np.median(draws, axis=1), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def per_100(points: Iterable[tuple[float, float]]) -> float | None:
    """How much y grows per 100 of x (turns): the least-squares slope; None under two points."""
    pairs = [(x, y) for x, y in points if y is not None]
    if len(pairs) < 2 or len({x for x, _ in pairs}) < 2:
        return None
    x, y = np.array(pairs, dtype=float).T
    return float(np.polyfit(x, y, 1)[0] * 100)
