"""Oort-style speed-aware selection (Lai et al., "Oort", OSDI 2021) as a hierfl plug-in.

Put this folder on ``PYTHONPATH`` and set ``[selection] policy = "oort:oort"``. The policy
takes a ``fleet`` keyword, so hierfl hands it a ``FleetView``: what a real server knows
(battery, profile, sample counts, past round durations, online, plugged in).

Oort ranks devices by statistical utility times a system penalty: a device slower than the
preferred round duration ``T`` has its utility scaled by ``(T / duration) ** ALPHA``. hierfl
does not expose training losses, so the utility here is the device's sample count (Oort's
utility grows with it). A share ``EXPLORE`` of the seats goes to devices never timed yet,
drawn at random (a fractional seat is one more seat with that probability), so new devices
get a chance to show their speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hierfl.policies import quota

ALPHA = 2.0  # how hard slow devices are penalised
EXPLORE = 0.2  # share of seats for devices without a timed round
PREFERRED_QUANTILE = 0.5  # T: this quantile of the known round durations


def oort(
    candidates: Sequence[int], battery, fraction: float, rng: np.random.Generator, *, fleet
) -> list[int]:
    """Seats for the fastest useful devices, a few for the unexplored (Oort's exploit/explore)."""
    candidates = np.asarray(candidates, dtype=np.int64)
    seats = quota(fraction, len(candidates))
    durations = fleet.last_round_s[candidates]
    timed, untimed = candidates[~np.isnan(durations)], candidates[np.isnan(durations)]
    share = EXPLORE * seats  # its fraction becomes one more seat with that probability
    wanted = int(share) + int(rng.random() < share - int(share))
    explore = min(len(untimed), max(seats - len(timed), wanted))
    explored = rng.choice(untimed, size=explore, replace=False) if explore else untimed[:0]
    return sorted([*explored.tolist(), *exploit(fleet, timed, seats - explore).tolist()])


def exploit(fleet, timed: np.ndarray, seats: int) -> np.ndarray:
    """The ``seats`` timed devices of highest utility: samples times the speed penalty."""
    if seats <= 0 or not len(timed):
        return timed[:0]
    duration_s = fleet.last_round_s[timed]
    preferred_s = np.quantile(duration_s, PREFERRED_QUANTILE)
    penalty = np.minimum(1.0, preferred_s / duration_s) ** ALPHA
    utility = fleet.samples[timed] * penalty
    order = np.lexsort((timed, -utility))  # ties: lower device number first
    return timed[order[:seats]]
