"""Device process: download, train, upload; every wait comes from a cost formula.

Edge rounds run as cohorts (``cohort.play``), which is exact while devices share nothing;
this process per device is the same round one device at a time (``per_device_processes``),
the form shared links will need. Both go through ``cohort.run_phase``.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from hierfl.sim import cohort
from hierfl.sim.engine import Simulation, Update

Process = Generator  # a SimPy process body


def settle(sim: Simulation, devices: np.ndarray, cloud_round: int, edge_round: int) -> None:
    """Drain idle power of ``devices`` to now; record a dropout for each that ran empty idle."""
    dead = sim.battery.settle_idle(devices, sim.env.now)
    cohort.record_dropouts(sim, dead, (cloud_round, edge_round))


def eligible(sim: Simulation, devices: np.ndarray, cloud_round: int, edge_round: int) -> list[int]:
    """Devices that may be selected: alive, above min_battery, and able to hold the model.

    A living device that cannot hold the model gets a ``skip`` event.
    """
    settle(sim, devices, cloud_round, edge_round)
    alive = devices[sim.battery.alive[devices]]
    fits = sim.fleet.fits[alive]
    node, edge = cohort.trace_nodes(sim, alive[~fits])
    now = sim.env.now
    sim.trace.extend("skip", node, edge, now, now, cloud_round, edge_round)
    able = alive[fits]
    enough = sim.battery.fractions(able) >= sim.scenario.selection.min_battery
    return able[enough].tolist()


def device_round(
    sim: Simulation,
    device: int,
    start: torch.Tensor | None,
    down_bytes: int,
    cloud_round: int,
    edge_round: int,
) -> Process:
    """One device's edge round; returns its Update, or None if it dropped out."""
    job = sim.submit(device, start, cloud_round, edge_round)
    rounds = (cloud_round, edge_round)
    if not (yield from _phase(sim, device, "download", down_bytes, rounds)):
        return _lost(sim, job)
    if not (yield from _phase(sim, device, "compute", 0, rounds)):
        return _lost(sim, job)
    payload = sim.encode([job.result()], start)[0] if job else None
    if not (yield from _phase(sim, device, "upload", sim.uplink_bytes, rounds)):
        return None
    return Update(device, payload, int(sim.fleet.samples[device]))


def _phase(sim: Simulation, device: int, kind: str, nbytes: int, rounds: tuple[int, int]):
    """Record and wait out one phase; False if the battery empties before it ends."""
    end = cohort.run_phase(sim, np.array([device]), np.array([sim.env.now]), kind, nbytes, rounds)
    done, wait_s = bool(end.done[0]), float(end.wait_s[0])
    if done or wait_s > 0:
        yield sim.env.timeout(wait_s)
    return done


def _lost(sim: Simulation, job) -> None:
    if job is not None:
        sim.trainer.cancel(job)
    return None
