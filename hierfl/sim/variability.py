"""Seeded per-device, per-round spread of compute speed and access bandwidth.

Each multiplier is lognormal with median 1 and comes from a counter-based stream: a hash of
(seed, stream, device, cloud round), so a device's draws depend on nothing else -- adding a
device or a round changes no one else's -- and a million draws are a few numpy operations.
"""

from __future__ import annotations

import numpy as np

STREAM_COMPUTE, STREAM_BANDWIDTH = 11, 12
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def lognormal(
    seed: int, stream: int, devices: np.ndarray, cloud_round: int, sigma: float
) -> np.ndarray:
    """Multipliers ``exp(sigma * z)``, z standard normal, one per device (1.0 if sigma is 0).

    >>> lognormal(0, STREAM_COMPUTE, np.arange(3), 0, 0.0).tolist()
    [1.0, 1.0, 1.0]
    >>> a = lognormal(7, STREAM_COMPUTE, np.arange(4), 2, 0.5)
    >>> bool((lognormal(7, STREAM_COMPUTE, np.array([3, 1]), 2, 0.5) == a[[3, 1]]).all())
    True
    """
    devices = np.asarray(devices, dtype=np.uint64)
    if sigma == 0:
        return np.ones(len(devices))
    key = _mix(_mix(_mix(np.uint64(seed)) ^ np.uint64(stream)) ^ np.uint64(cloud_round))
    u1, u2 = (_uniform(_mix(key ^ _mix(devices * np.uint64(2) + np.uint64(k)))) for k in (0, 1))
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)  # Box-Muller
    return np.exp(sigma * z)


def _mix(x: np.ndarray | np.uint64) -> np.ndarray | np.uint64:
    """splitmix64's finaliser: a bijection of uint64 whose outputs look independent."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniform(x: np.ndarray) -> np.ndarray:
    """Uniform on (0, 1), never 0: the top 53 bits, centred in their step."""
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
