"""What a device may do in a round: settle its battery, and whether it can be selected."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from hierfl.sim import cohort
from hierfl.sim.engine import Simulation

Process = Generator  # a SimPy process body


def settle(sim: Simulation, devices: np.ndarray, cloud_round: int, edge_round: int) -> None:
    """Drain idle power (and radio tails) of ``devices`` to now; record who ran empty."""
    cohort.settle(sim, devices, sim.env.now, (cloud_round, edge_round))


def available(sim: Simulation, devices: np.ndarray, t_s: float) -> np.ndarray:
    """Which of ``devices`` a server may ask at ``t_s``: online, and plugged in when the
    scenario says ``require_plugged``."""
    state = sim.availability.at(devices, t_s)
    return state.plugged if sim.scenario.selection.require_plugged else state.online


def eligible(
    sim: Simulation, devices: np.ndarray, cloud_round: int, edge_round: int, skips: bool = True
) -> list[int]:
    """Devices that may be selected: alive, above min_battery, able to hold the model, and
    available (online; plugged in if required).

    A living device that cannot hold the model gets a ``skip`` event (unless ``skips`` is
    false: the round already recorded them). A device still at work (busy) is not a
    candidate.
    """
    devices = devices[~sim.busy[devices]]
    settle(sim, devices, cloud_round, edge_round)
    alive = devices[sim.battery.alive[devices]]
    fits = sim.fleet.fits[alive]
    now = sim.env.now
    if skips:
        node, edge = cohort.trace_nodes(sim, alive[~fits])
        sim.trace.extend("skip", node, edge, now, now, cloud_round, edge_round)
    able = alive[fits]
    enough = sim.battery.fractions(able) >= sim.scenario.selection.min_battery
    able = able[enough]
    return able[available(sim, able, now)].tolist()


def selectable(sim: Simulation, devices: np.ndarray) -> np.ndarray:
    """Which of ``devices`` are eligible now, from batteries as last settled (no events):
    as ``eligible``, and not at work."""
    battery = sim.battery
    able = battery.alive[devices] & sim.fleet.fits[devices] & ~sim.busy[devices]
    able &= battery.fractions(devices) >= sim.scenario.selection.min_battery
    able[able] = available(sim, devices[able], sim.env.now)
    return able
