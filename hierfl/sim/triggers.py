"""Aggregation triggers as pure functions: how many an edge selects, when its round closes,
and which of the updates that arrived it aggregates (``[aggregation]``)."""

from __future__ import annotations

import math

import numpy as np

from hierfl.scenario import AggregationConfig

ROUNDING = 1e-9  # 1.3 * 10 is 13.000000000000002 in floats: that still selects 13


def selected(aggregation: AggregationConfig, seats: int, candidates: int) -> int:
    """How many of ``candidates`` an edge selects: its ``seats``, or with ``first_k``
    ``ceil(overcommit * k)``, never more than there are candidates.

    >>> selected(AggregationConfig(trigger="first_k", k=10), 4, 20)
    13
    >>> selected(AggregationConfig(trigger="first_k", k=10), 4, 11), selected(
    ...     AggregationConfig(), 4, 20)
    (11, 4)
    """
    if aggregation.trigger == "first_k":
        seats = math.ceil(aggregation.overcommit * aggregation.k - ROUNDING)
    return min(seats, candidates)


def close_s(
    aggregation: AggregationConfig, start_s: float, arrive_s: np.ndarray, done_s: np.ndarray
) -> float:
    """When an edge round that began at ``start_s`` aggregates: ``all``, when the last device
    is done (arrived, or its battery emptied); ``deadline``, ``deadline_s`` after the start,
    or sooner if all are done; ``first_k``, at the k-th arrival (when the last is done if
    fewer arrive). ``arrive_s`` is inf for an update that never arrives.

    >>> a, d = np.array([3.0, 1.0, np.inf]), np.array([3.0, 1.0, 2.0])
    >>> close_s(AggregationConfig(), 0.0, a, d)
    3.0
    >>> close_s(AggregationConfig(trigger="deadline", deadline_s=2.5), 0.0, a, d)
    2.5
    >>> close_s(AggregationConfig(trigger="first_k", k=1), 0.0, a, d)
    1.0
    """
    last_s = float(done_s.max()) if len(done_s) else start_s
    if aggregation.trigger == "deadline":
        return min(start_s + aggregation.deadline_s, last_s)
    if aggregation.trigger == "first_k":
        arrived = np.sort(arrive_s[np.isfinite(arrive_s)])
        return float(arrived[aggregation.k - 1]) if len(arrived) >= aggregation.k else last_s
    return last_s


def used(aggregation: AggregationConfig, arrive_s: np.ndarray, now_s: float) -> np.ndarray:
    """Which updates the edge aggregates at ``now_s``: those that arrived by then, and with
    ``first_k`` only the first k of them (ties in selection order).

    >>> used(AggregationConfig(trigger="first_k", k=2), np.array([1.0, 0.5, 1.0]), 1.0).tolist()
    [True, True, False]
    """
    arrived = arrive_s <= now_s
    if aggregation.trigger == "first_k":
        first = np.argsort(arrive_s, kind="stable")[: aggregation.k]
        arrived &= np.isin(np.arange(len(arrive_s)), first)
    return arrived
