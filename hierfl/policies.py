"""Device selection policies: a name from the scenario or any callable, resolved once.

How many devices train is decided for the whole fleet, not edge by edge: at the start of
each cloud round the fleet's quota, ``quota(fraction, eligible devices)``, is shared out
over the edges in proportion to their eligible devices by the largest remainder method
(``apportion``), so ``fraction = 0.5`` trains half the fleet whatever the number of edges.
Each edge then hands its policy the share of its candidates its seats make.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from hierfl.errors import ScenarioError
from hierfl.plugins import load_object

Selection = Callable[[Sequence[int], np.ndarray, float, np.random.Generator], list[int]]
"""``(candidates, battery_fraction, fraction, rng) -> selected`` device indices.

``battery_fraction[i]`` is device i's remaining battery share (1.0 when mains-powered);
``candidates`` are alive, fit the model and are above ``min_battery``; ``fraction`` is the
share of them to select (``quota(fraction, len(candidates))``): the scenario's fraction in
cloud-only runs, the edge's seats over its candidates in hierarchical ones (0 when the edge
has no seat this round).
"""

BATTERY_BUCKET = 0.01
"""'battery' ranks devices by battery rounded up to whole buckets of this share (1%)."""


def quota(fraction: float, n: int) -> int:
    """How many of ``n`` candidates a ``fraction`` selects: at least one when any exist.

    A fraction of 0 selects none (an edge whose share of the fleet's quota is empty).

    >>> quota(0.5, 10), quota(0.5, 3), quota(0.3, 10), quota(0.5, 0), quota(0.0, 4)
    (5, 1, 3, 0, 0)
    """
    return 0 if n == 0 or fraction <= 0 else max(1, math.floor(fraction * n + 1e-9))


def apportion(seats: int, weights: Sequence[int], order: np.ndarray) -> np.ndarray:
    """Split ``seats`` over parties in proportion to integer ``weights`` (largest remainder).

    Each party gets ``floor(seats * w / sum(w))``; the seats left go one each to the largest
    remainders, ties to the party that comes first in ``order`` (a permutation of parties).

    >>> apportion(10, [5, 5, 5, 5], np.array([2, 0, 3, 1])).tolist()
    [3, 2, 3, 2]
    >>> apportion(5, [10, 7, 3], np.arange(3)).tolist()
    [2, 2, 1]
    """
    weights = np.asarray(weights, dtype=np.int64)
    total = int(weights.sum())
    if total == 0:
        return np.zeros(len(weights), dtype=np.int64)
    given, remainder = np.divmod(seats * weights, total)
    left = seats - int(given.sum())
    rank = np.empty(len(weights), dtype=np.int64)
    rank[order] = np.arange(len(weights))
    winners = np.lexsort((rank, -remainder))[:left]  # last key sorts first
    given[winners] += 1
    return given


def fleet_seats(fraction: float, eligible: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Each edge's share of the fleet's quota, from each edge's count of eligible devices.

    The fleet selects ``quota(fraction, sum(eligible))``, apportioned by ``apportion`` with
    ties broken in a random order drawn from ``rng`` (no edge is favoured round after round).

    >>> fleet_seats(0.5, [5, 5, 5, 5], np.random.default_rng(0)).sum()
    np.int64(10)
    """
    eligible = np.asarray(eligible, dtype=np.int64)
    return apportion(quota(fraction, int(eligible.sum())), eligible, rng.permutation(len(eligible)))


def seat_share(seats: int, candidates: int) -> float:
    """The fraction of ``candidates`` that selects ``seats`` of them (all, if fewer remain).

    >>> seat_share(3, 5), seat_share(4, 2), seat_share(0, 5), seat_share(2, 0)
    (0.6, 1.0, 0.0, 0.0)
    """
    return 0.0 if candidates == 0 else min(1.0, seats / candidates)


def select_all(
    candidates: Sequence[int], battery: np.ndarray, fraction: float, rng: np.random.Generator
) -> list[int]:
    """Every candidate (the fraction is ignored)."""
    return list(candidates)


def select_random(
    candidates: Sequence[int], battery: np.ndarray, fraction: float, rng: np.random.Generator
) -> list[int]:
    """A uniformly random ``fraction`` of the candidates, in index order."""
    chosen = rng.choice(len(candidates), size=quota(fraction, len(candidates)), replace=False)
    return np.sort(np.asarray(candidates, dtype=np.int64)[chosen]).tolist()


def battery_bucket(battery: np.ndarray) -> np.ndarray:
    """Battery rounded up to whole ``BATTERY_BUCKET`` steps (percent): 99.2% and 100% are 100.

    Idle drain makes batteries differ by 1e-7 of capacity; ranking by such noise would let
    it decide who trains.

    >>> battery_bucket(np.array([1.0, 0.9999999, 0.992, 0.99, 0.0])).tolist()
    [100, 100, 100, 99, 0]
    """
    return np.ceil(np.asarray(battery) / BATTERY_BUCKET - 1e-9).astype(np.int64)


def select_battery(
    candidates: Sequence[int], battery: np.ndarray, fraction: float, rng: np.random.Generator
) -> list[int]:
    """The ``fraction`` of candidates with the most battery left, by 1% buckets (seed policy).

    Devices in one bucket are ranked in a random order drawn from ``rng`` (seeded per round),
    so noise-level battery differences decide nothing and no device index is favoured.

    >>> rng = np.random.default_rng(0)
    >>> select_battery([0, 1, 2, 3], np.array([0.5, 0.9, 0.5, 0.2]), 0.25, rng)
    [1]
    """
    devices = np.asarray(candidates, dtype=np.int64)
    shuffled = devices[rng.permutation(len(devices))]
    ranked = shuffled[np.argsort(-battery_bucket(battery[shuffled]), kind="stable")]
    return np.sort(ranked[: quota(fraction, len(devices))]).tolist()


ENERGY_RESERVE = 0.2
"""'power' selects a battery device only if its charge covers 1.2 times its forecast joules."""


def select_power(
    candidates: Sequence[int],
    battery: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    *,
    fleet,
) -> list[int]:
    """The ``fraction`` of candidates of highest utility per joule (power-aware scheduling).

    Utility is Oort's statistical utility (``fleet.utility``: samples times the root mean
    square of the training loss the device last reported; devices never heard from count as
    the most useful heard, so they get explored). Joules and seconds are the server's
    forecast of the device's round (``fleet.forecast``). Only devices whose remaining charge
    covers ``1 + ENERGY_RESERVE`` times their forecast joules, and whose forecast round ends
    within the round's deadline (``fleet.deadline_s``), are selected, fewer than the seats
    when too few qualify: work that would run the battery empty or come late is wasted
    energy. Ties are broken in a random order drawn from ``rng``.
    """
    devices = np.asarray(candidates, dtype=np.int64)
    if not len(devices):
        return []
    forecast = fleet.forecast(devices)
    feasible = fleet.remaining_j(devices) >= (1 + ENERGY_RESERVE) * forecast.energy_j
    feasible &= forecast.seconds <= fleet.deadline_s
    score = utility_of(fleet.utility[devices], fleet.samples[devices]) / forecast.energy_j
    order = rng.permutation(len(devices))
    ranked = order[np.argsort(-score[order], kind="stable")]
    picked = ranked[feasible[ranked]][: quota(fraction, len(devices))]
    return np.sort(devices[picked]).tolist()


def utility_of(reported: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Reported utilities, with the unreported (NaN) set to the highest reported one; with
    none reported (timing-only runs, the first round), the sample counts.

    >>> utility_of(np.array([2.0, np.nan, 5.0]), np.array([10, 20, 30])).tolist()
    [2.0, 5.0, 5.0]
    >>> utility_of(np.array([np.nan, np.nan]), np.array([10, 20])).tolist()
    [10.0, 20.0]
    """
    known = ~np.isnan(reported)
    if not known.any():
        return np.asarray(samples, dtype=np.float64)
    return np.where(known, reported, reported[known].max())


POLICIES: dict[str, Selection] = {
    "all": select_all,
    "random": select_random,
    "battery": select_battery,
    "power": select_power,
}


def resolve_selection(policy: str | Selection) -> Selection:
    """A built-in policy by name, ``package.module:function``, or a callable as is."""
    if callable(policy):
        return policy
    if policy in POLICIES:
        return POLICIES[policy]
    found = load_object(policy, "selection.policy")
    if not callable(found):
        raise ScenarioError(f"selection.policy: {policy!r} is not callable")
    return found
