"""Percentiles and medians of measured values (lags, latencies, CPU seconds)."""

import math
import statistics


def percentile(values, q):
    """The value at rank ``round(q * (n - 1))`` of the sorted values; None for none.

    The benchmarks' lag and latency figures (pipeline, headline) use this one.
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def nearest_rank(values, q):
    """The nearest-rank percentile: the smallest value with at least ``q`` of the values at or below it.

    With up to 100 samples, ``nearest_rank(values, 0.99)`` is the largest one.
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def median(values):
    """The median of the values that are not None; None if there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None
