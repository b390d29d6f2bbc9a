"""Device process: download, train, upload; every wait comes from a cost formula."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from hierfl.costs import compute_s, train_flops
from hierfl.sim import network
from hierfl.sim.engine import Simulation, Update
from hierfl.sim.network import Transfer

Process = Generator  # a SimPy process body


def settle(sim: Simulation, devices: np.ndarray, cloud_round: int, edge_round: int) -> None:
    """Drain idle power of ``devices`` to now; record a dropout for each that ran empty idle."""
    for device in sim.battery.settle_idle(devices, sim.env.now):
        _dropout(sim, int(device), cloud_round, edge_round)


def eligible(sim: Simulation, devices: np.ndarray, cloud_round: int, edge_round: int) -> list[int]:
    """Devices that may be selected: alive, above min_battery, and able to hold the model.

    A living device that cannot hold the model gets a ``skip`` event.
    """
    settle(sim, devices, cloud_round, edge_round)
    alive = devices[sim.battery.alive[devices]]
    for device in alive[~sim.fleet.fits[alive]]:
        node = sim.device_node(int(device))
        edge = sim.edge_node(sim.topo.device_edge[int(device)])
        sim.trace.record("skip", node, edge, sim.env.now, sim.env.now, cloud_round, edge_round)
    enough = sim.battery.fractions()[alive] >= sim.scenario.selection.min_battery
    return [int(d) for d in alive[sim.fleet.fits[alive] & enough]]


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
    here, parent = sim.topo.devices[device], sim.topo.parent(device)
    target = parent if sim.scenario.topology.mode == "hierarchical" else "cloud"
    rounds = (cloud_round, edge_round)
    fleet = sim.fleet

    down = network.download(down_bytes, sim.topo.hops(target, here))
    if not (
        yield from _phase(
            sim, device, "download", down, fleet.power_rx_w[device], "rx", down_bytes, rounds
        )
    ):
        return _lost(sim, job)
    flops = train_flops(
        sim.stats.forward_flops, int(fleet.samples[device]), sim.scenario.run.local_epochs
    )
    seconds = compute_s(flops, fleet.compute_mflops[device])
    busy = Transfer(seconds, seconds, 0.0)
    if not (
        yield from _phase(
            sim, device, "compute", busy, fleet.power_compute_w[device], "compute", 0, rounds
        )
    ):
        return _lost(sim, job)
    payload, up_bytes = sim.encode(job.result() if job else None, start)
    up = network.upload(up_bytes, sim.topo.hops(here, target))
    if not (
        yield from _phase(
            sim, device, "upload", up, fleet.power_tx_w[device], "tx", up_bytes, rounds
        )
    ):
        return None
    return Update(device, payload, int(fleet.samples[device]))


def _phase(
    sim: Simulation,
    device: int,
    kind: str,
    span: Transfer,
    power_w: float,
    category: str,
    nbytes: int,
    rounds: tuple[int, int],
) -> Process:
    """Record and wait out one interval; False if the battery empties before it ends."""
    env, battery = sim.env, sim.battery
    start_s = env.now
    radio_start_s = start_s + span.radio_lead_s
    node, edge = sim.device_node(device), sim.edge_node(sim.topo.device_edge[device])
    if battery.settle_idle(np.array([device]), radio_start_s).size:
        return (yield from _die_at(sim, device, battery.died_s[device], rounds))
    lasted_s = battery.draw(device, radio_start_s, span.radio_s, power_w, category)
    energy = power_w * lasted_s
    if lasted_s < span.radio_s:
        end_s = radio_start_s + lasted_s
        sim.trace.record(kind, node, edge, start_s, end_s, *rounds, 0, energy)  # nothing delivered
        return (yield from _die_at(sim, device, end_s, rounds))
    sim.trace.record(kind, node, edge, start_s, start_s + span.total_s, *rounds, nbytes, energy)
    yield env.timeout(span.total_s)
    return True


def _die_at(sim: Simulation, device: int, at_s: float, rounds: tuple[int, int]) -> Process:
    """Wait until the instant the battery emptied, record the dropout, report failure."""
    if at_s > sim.env.now:
        yield sim.env.timeout(at_s - sim.env.now)
    _dropout(sim, device, *rounds)
    return False


def _dropout(sim: Simulation, device: int, cloud_round: int, edge_round: int) -> None:
    at_s = float(sim.battery.died_s[device])
    node, edge = sim.device_node(device), sim.edge_node(sim.topo.device_edge[device])
    sim.trace.record("dropout", node, edge, at_s, at_s, cloud_round, edge_round)


def _lost(sim: Simulation, job) -> None:
    if job is not None:
        sim.trainer.cancel(job)
    return None
