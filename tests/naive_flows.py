"""A naive flow solver to check hierfl.sim.flows against: plain Python, no cleverness.

At every event (a flow starts, finishes or is stopped) it recomputes the max-min fair rates
from scratch by progressive filling, then advances to the next event. O(n^2) per event: for
the small cases of the tests only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Relative slack under which a link counts as full, a flow as at its cap, a flow as done.
EPS = 1e-12


@dataclass(frozen=True)
class NaiveSolution:
    """What each flow did: when it ended, the bytes it sent, and whether it sent them all."""

    end_s: np.ndarray
    sent_bytes: np.ndarray
    done: np.ndarray


def links_of(paths: np.ndarray) -> list[list[int]]:
    """Each flow's shared links, padding (-1) dropped."""
    return [[int(link) for link in row if link >= 0] for row in np.asarray(paths)]


def progressive_filling(active: list[int], cap_bytes_s: np.ndarray, links: list[list[int]],
                        capacity_bytes_s: np.ndarray) -> dict[int, float]:
    """Max-min fair rates (bytes/s) of the active flows: raise all unfrozen rates together
    until a flow reaches its cap or a link fills, freeze those flows, repeat."""
    rate = {i: 0.0 for i in active}
    residual = [float(c) for c in capacity_bytes_s]
    unfrozen = set(active)
    while unfrozen:
        crossing = {}
        for i in unfrozen:
            for link in links[i]:
                crossing[link] = crossing.get(link, 0) + 1
        step = min([float(cap_bytes_s[i]) - rate[i] for i in unfrozen]
                   + [residual[link] / count for link, count in crossing.items()])
        if math.isinf(step):
            raise ValueError("a flow with no cap and no shared link has no finite rate")
        for i in unfrozen:
            rate[i] += step
        for link, count in crossing.items():
            residual[link] -= step * count
        full = {link for link in crossing if residual[link] <= EPS * capacity_bytes_s[link]}
        unfrozen = {i for i in unfrozen
                    if rate[i] < float(cap_bytes_s[i]) * (1 - EPS) and not full & set(links[i])}
    return rate


def naive_solve(start_s: np.ndarray, size_bytes: np.ndarray, cap_bytes_s: np.ndarray,
                paths: np.ndarray, capacity_bytes_s: np.ndarray,
                stop_s: np.ndarray | None = None) -> NaiveSolution:
    """Event-driven max-min flow simulation, rates recomputed from scratch at every event."""
    n = len(start_s)
    stop = np.full(n, math.inf) if stop_s is None else np.asarray(stop_s, dtype=float)
    links = links_of(paths)
    remaining = np.asarray(size_bytes, dtype=float).copy()
    end = np.full(n, math.nan)
    never = stop <= np.asarray(start_s)  # stopped before it began: ends at stop_s, sends nothing
    end[never] = stop[never]
    pending = set(np.flatnonzero(~never).tolist())
    now = min((float(start_s[i]) for i in pending), default=0.0)
    while pending:
        active = [i for i in pending if start_s[i] <= now]
        rate = progressive_filling(active, cap_bytes_s, links, capacity_bytes_s)
        finish = {i: now + remaining[i] / rate[i] if rate[i] > 0 else math.inf for i in active}
        candidates = ([float(start_s[i]) for i in pending if start_s[i] > now]
                      + [min(finish[i], stop[i]) for i in active])
        later = min(candidates)
        for i in active:
            remaining[i] = max(remaining[i] - rate[i] * (later - now), 0.0)
            if finish[i] <= later:
                remaining[i] = 0.0
            if finish[i] <= later or stop[i] <= later:
                end[i] = min(finish[i], stop[i])
                pending.discard(i)
        now = later
    sent = np.asarray(size_bytes, dtype=float) - remaining
    return NaiveSolution(end_s=end, sent_bytes=sent, done=remaining == 0.0)
