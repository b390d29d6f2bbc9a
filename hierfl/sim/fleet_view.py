"""What a selection policy may know of the fleet: what a real server knows when it selects.

A policy whose signature has a ``fleet`` parameter receives a ``FleetView`` by keyword, in
addition to the four arguments every policy gets (``hierfl.policies.Selection``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hierfl.profiles import Profile
from hierfl.sim.battery import Fractions
from hierfl.sim.predict import RoundForecast, forecast_round


@dataclass
class RoundHistory:
    """Each device's past round durations, seconds: from the edge sending it the model to
    the end of its upload, for rounds whose update arrived; and the statistical utility it
    reported with its last update (learning runs whose policy takes the fleet view)."""

    last_s: np.ndarray
    total_s: np.ndarray
    count: np.ndarray
    utility: np.ndarray  # Oort's statistical utility each device last reported (NaN: none)

    @classmethod
    def empty(cls, n_devices: int) -> RoundHistory:
        """No device has a round behind it."""
        return cls(np.full(n_devices, np.nan), np.zeros(n_devices), np.zeros(n_devices, np.int64),
                   np.full(n_devices, np.nan))

    def add(self, devices: np.ndarray, seconds: np.ndarray) -> None:
        """``devices`` (distinct) finished a round in ``seconds`` each."""
        self.last_s[devices] = seconds
        self.total_s[devices] += seconds
        self.count[devices] += 1


class FleetView:
    """The fleet as the server sees it at ``now_s``: batteries, profiles, sample counts,
    past round durations, and who is online and plugged in. Read-only; index by device.
    """

    def __init__(self, sim, now_s: float) -> None:
        self._sim, self.now_s = sim, now_s

    @property
    def battery(self) -> Fractions:
        """Remaining battery share of each device (1.0 when mains-powered)."""
        return Fractions(self._sim.battery)

    @property
    def samples(self) -> np.ndarray:
        """Each device's local sample count."""
        return self._sim.fleet.samples

    def profile(self, device: int) -> Profile:
        """The profile of ``device``: its compute, link and power figures."""
        topo = self._sim.topo
        return self._sim.scenario.profile(topo.profile_names[topo.profile_of[device]])

    def profile_names(self, devices: np.ndarray) -> np.ndarray:
        """The profile name of each of ``devices``."""
        topo = self._sim.topo
        return np.asarray(topo.profile_names)[topo.profile_of[np.asarray(devices)]]

    @property
    def last_round_s(self) -> np.ndarray:
        """Each device's last completed round, seconds (NaN: none yet)."""
        return self._sim.history.last_s

    @property
    def mean_round_s(self) -> np.ndarray:
        """Each device's mean completed round, seconds (NaN: none yet)."""
        history = self._sim.history
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(history.count > 0, history.total_s / history.count, np.nan)

    @property
    def rounds_completed(self) -> np.ndarray:
        """How many rounds each device completed (its update arrived)."""
        return self._sim.history.count

    @property
    def utility(self) -> np.ndarray:
        """Oort's statistical utility each device reported with its last update: its samples
        times the root mean square loss of the model it received (NaN: none reported)."""
        return self._sim.history.utility

    def forecast(self, devices: np.ndarray) -> RoundForecast:
        """The server's forecast of each device's next round, uncontended: seconds by phase
        and joules (``hierfl.sim.predict``)."""
        return forecast_round(self._sim, np.asarray(devices, dtype=np.int64))

    @property
    def deadline_s(self) -> float:
        """Seconds from now within which a selected device's update must arrive to be
        aggregated: ``deadline_s`` under the deadline trigger, inf otherwise."""
        aggregation = self._sim.scenario.aggregation
        return aggregation.deadline_s if aggregation.trigger == "deadline" else math.inf

    def remaining_j(self, devices: np.ndarray) -> np.ndarray:
        """Joules left in each device's battery (inf when mains-powered)."""
        return self._sim.battery.remaining_j[np.asarray(devices, dtype=np.int64)]

    def online(self, devices: np.ndarray) -> np.ndarray:
        """Whether each of ``devices`` is online now."""
        return self._sim.availability.at(np.asarray(devices, dtype=np.int64), self.now_s).online

    def plugged(self, devices: np.ndarray) -> np.ndarray:
        """Whether each of ``devices`` is plugged in to a charger now."""
        return self._sim.availability.at(np.asarray(devices, dtype=np.int64), self.now_s).plugged
