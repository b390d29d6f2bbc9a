"""Battery state of the whole fleet in numpy columns: drain by phase, exact empty instants."""

from __future__ import annotations

import numpy as np

from hierfl.costs import energy_j, seconds_until_empty

CATEGORIES = ("compute", "tx", "rx", "idle")
CATEGORY = {name: k for k, name in enumerate(CATEGORIES)}


class FleetBattery:
    """Remaining joules per device; idle drain is settled lazily but to the exact instant.

    ``capacity_j`` is ``inf`` for mains-powered devices, which never run out.
    """

    def __init__(self, capacity_j: np.ndarray, idle_w: np.ndarray) -> None:
        self.capacity_j = np.asarray(capacity_j, dtype=np.float64)
        self.idle_w = np.asarray(idle_w, dtype=np.float64)
        self.remaining_j = self.capacity_j.copy()
        self.settled_s = np.zeros(len(self.capacity_j))
        self.alive = np.ones(len(self.capacity_j), dtype=bool)
        self.died_s = np.full(len(self.capacity_j), np.nan)
        self.used_j = np.zeros((len(self.capacity_j), len(CATEGORIES)))

    def fractions(self) -> np.ndarray:
        """Remaining share of each battery, 1.0 for mains-powered devices."""
        mains = np.isinf(self.capacity_j)
        with np.errstate(invalid="ignore"):
            return np.where(mains, 1.0, self.remaining_j / self.capacity_j)

    def settle_idle(self, devices: np.ndarray, now_s: float) -> np.ndarray:
        """Drain idle power of living ``devices`` up to ``now_s``; return those that died."""
        devices = devices[self.alive[devices]]
        gap_s = now_s - self.settled_s[devices]
        need_j = energy_j(self.idle_w[devices], gap_s)
        dies = need_j > self.remaining_j[devices]
        dead, living = devices[dies], devices[~dies]
        self.used_j[living, CATEGORY["idle"]] += need_j[~dies]
        self.remaining_j[living] -= need_j[~dies]
        self.settled_s[living] = now_s
        for device in dead:
            last_s = seconds_until_empty(self.remaining_j[device], self.idle_w[device])
            self._empty(device, self.settled_s[device] + last_s, "idle")
        return dead

    def draw(
        self, device: int, start_s: float, seconds: float, power_w: float, category: str
    ) -> float:
        """Run a phase from ``start_s`` (idle already settled); return the seconds it lasted.

        Shorter than ``seconds`` when the battery empties mid-phase: the device is then dead.
        """
        need_j = energy_j(power_w, seconds)
        if need_j > self.remaining_j[device]:
            lasted_s = seconds_until_empty(self.remaining_j[device], power_w)
            self._empty(device, start_s + lasted_s, category)
            return lasted_s
        self.remaining_j[device] -= need_j
        self.used_j[device, CATEGORY[category]] += need_j
        self.settled_s[device] = start_s + seconds
        return seconds

    def _empty(self, device: int, at_s: float, category: str) -> None:
        self.used_j[device, CATEGORY[category]] += self.remaining_j[device]
        self.remaining_j[device] = 0.0
        self.settled_s[device] = at_s
        self.died_s[device] = at_s
        self.alive[device] = False
