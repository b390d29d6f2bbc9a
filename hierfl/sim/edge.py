"""Edge process: receive the global model, run edge rounds over its devices, send the result up."""

from __future__ import annotations

import numpy as np
import torch

from hierfl.costs import aggregate_flops, compute_s, transfer_s
from hierfl.sim import cohort
from hierfl.sim.battery import Fractions
from hierfl.sim.device import Process, device_round, eligible
from hierfl.sim.engine import STREAM_SELECTION, Simulation, Update


def train_devices(
    sim: Simulation,
    devices: np.ndarray,
    model: torch.Tensor | None,
    cloud_round: int,
    edge_round: int,
    edge: int = -1,
) -> Process:
    """Select among ``devices``, send them ``model``, wait for all; return what arrived.

    ``edge`` is the edge running this round (-1: the cloud, in cloud_only).
    """
    candidates = eligible(sim, devices, cloud_round, edge_round)
    rng = selection_rng(sim, cloud_round, edge_round, edge)
    chosen = sim.policy(candidates, Fractions(sim.battery), sim.scenario.selection.fraction, rng)
    down_bytes = sim.dense_bytes
    if cohort.in_cohorts():
        chosen = np.asarray(chosen, dtype=np.int64)
        return (yield from cohort.play(sim, chosen, model, down_bytes, (cloud_round, edge_round)))
    runs = [
        sim.env.process(device_round(sim, device, model, down_bytes, cloud_round, edge_round))
        for device in chosen
    ]
    yield sim.env.all_of(runs)
    return [run.value for run in runs if run.value is not None]


def selection_rng(
    sim: Simulation, cloud_round: int, edge_round: int, edge: int
) -> np.random.Generator:
    """The generator one selection draws from, seeded by the scenario seed and the round.

    One stream per (cloud round, edge round, edge): no edge's draw depends on whether
    another edge, finishing at the same simulated instant, selected before it.
    """
    return np.random.default_rng(
        [sim.scenario.seed, STREAM_SELECTION, cloud_round, edge_round, edge + 1]
    )


def aggregate_at(
    sim: Simulation,
    node: int,
    edge: int,
    kind: str,
    base: torch.Tensor | None,
    updates: list[Update],
    rounds: tuple[int, int],
) -> Process:
    """Spend the aggregation time on ``node``, then FedAvg ``updates`` into a new model."""
    profile = sim.scenario.profile(
        sim.scenario.topology.cloud_profile
        if kind == "cloud_aggregate"
        else sim.scenario.topology.edge_profile
    )
    seconds = compute_s(aggregate_flops(sim.space.size, len(updates)), profile.compute_mflops)
    now = sim.env.now
    sim.trace.record(
        kind, node, edge, now, now + seconds, *rounds, 0, profile.power_compute_w * seconds
    )
    yield sim.env.timeout(seconds)
    if kind == "edge_aggregate" or sim.scenario.topology.mode == "cloud_only":
        np.add.at(sim.trained, cohort.senders_of(updates), 1)
    return sim.aggregate(base, updates)


def edge_cloud_round(
    sim: Simulation, edge: int, global_model: torch.Tensor | None, cloud_round: int
) -> Process:
    """One cloud round at one edge: download, ``edge_rounds`` edge rounds, upload."""
    node = sim.edge_node(edge)
    yield from backhaul(sim, edge, "cloud_download", sim.dense_bytes, cloud_round)

    devices = sim.topo.members(edge)
    model, samples = global_model, 0
    for edge_round in range(sim.scenario.run.edge_rounds):
        updates = yield from train_devices(sim, devices, model, cloud_round, edge_round, edge)
        if updates:
            model = yield from aggregate_at(
                sim, node, node, "edge_aggregate", model, updates, (cloud_round, edge_round)
            )
            samples = cohort.samples_of(updates)
    if samples == 0:
        return None
    payload = None if global_model is None else sim.encode([model], global_model)[0]
    yield from backhaul(sim, edge, "edge_upload", sim.uplink_bytes, cloud_round)
    return Update(edge, payload, samples)


def backhaul(sim: Simulation, edge: int, kind: str, nbytes: int, cloud_round: int) -> Process:
    """An edge's model transfer with the cloud: ``cloud_download`` or ``edge_upload``."""
    name, down = sim.topo.edges[edge], kind == "cloud_download"
    hops = sim.topo.hops("cloud", name) if down else sim.topo.hops(name, "cloud")
    profile = sim.scenario.profile(sim.scenario.topology.edge_profile)
    seconds = transfer_s(nbytes, hops)
    energy_j = (profile.power_rx_w if down else profile.power_tx_w) * seconds
    node, now = sim.edge_node(edge), sim.env.now
    sim.trace.record(kind, node, node, now, now + seconds, cloud_round, -1, nbytes, energy_j)
    yield sim.env.timeout(seconds)
