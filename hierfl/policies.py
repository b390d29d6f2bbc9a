"""Device selection policies: a name from the scenario or any callable, resolved once."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from hierfl.errors import ScenarioError
from hierfl.plugins import load_object

Selection = Callable[[Sequence[int], np.ndarray, float, np.random.Generator], list[int]]
"""``(candidates, battery_fraction, fraction, rng) -> selected`` device indices.

``battery_fraction[i]`` is device i's remaining battery share (1.0 when mains-powered);
``candidates`` are alive, fit the model and are above ``min_battery``.
"""


def quota(fraction: float, n: int) -> int:
    """How many of ``n`` candidates a ``fraction`` selects: at least one when any exist.

    >>> quota(0.5, 10), quota(0.5, 3), quota(0.3, 10), quota(0.5, 0)
    (5, 1, 3, 0)
    """
    return 0 if n == 0 else max(1, math.floor(fraction * n + 1e-9))


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


def select_battery(
    candidates: Sequence[int], battery: np.ndarray, fraction: float, rng: np.random.Generator
) -> list[int]:
    """The ``fraction`` of candidates with the most battery left (seed policy); ties by index.

    >>> select_battery([0, 1, 2, 3], np.array([0.5, 0.9, 0.5, 0.2]), 0.5, None)
    [0, 1]
    """
    devices = np.asarray(candidates, dtype=np.int64)
    ranked = devices[np.lexsort((devices, -battery[devices]))]  # last key sorts first
    return np.sort(ranked[: quota(fraction, len(devices))]).tolist()


POLICIES: dict[str, Selection] = {
    "all": select_all,
    "random": select_random,
    "battery": select_battery,
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
