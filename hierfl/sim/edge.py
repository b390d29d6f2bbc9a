"""Edge process: wait for the global model, run edge rounds over its devices, hand the result up.

Transfers between edges and the cloud are played in batches, one per cloud round and
direction (``backhaul``): every edge's download starts when the cloud round starts, and the
uploads start when each edge is ready, so the core link is shared as the flows overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from hierfl.costs import aggregate_flops, compute_s
from hierfl.plugins import FLEET_ARG
from hierfl.policies import fleet_seats, seat_share
from hierfl.sim import cohort, network, triggers
from hierfl.sim.battery import Fractions
from hierfl.sim.cohort import CLOUD_NODE, record_nic, until
from hierfl.sim.device import Process, eligible, selectable
from hierfl.sim.engine import STREAM_SELECTION, Simulation, Update
from hierfl.sim.fleet_view import FleetView
from hierfl.sim.network import DOWN, UP
from hierfl.sim.pacing import wait_for_eligible
from hierfl.sim.work import work_of


def train_devices(
    sim: Simulation,
    devices: np.ndarray,
    model: torch.Tensor | None,
    cloud_round: int,
    edge_round: int,
    edge: int = -1,
    seats: int | None = None,
) -> Process:
    """Select among ``devices``, send them ``model``, wait for the trigger; return the
    updates it takes.

    The devices train from the model they decode from the downlink bytes.

    ``edge`` is the edge running this round (-1: the cloud, in cloud_only); ``seats``, its
    share of the fleet's quota (None: the scenario's fraction of the candidates); with
    ``first_k`` the trigger's ``ceil(overcommit * k)`` instead.
    """
    work = work_of(sim, edge)
    work.commit(sim.env.now)  # devices whose late work is over are free again
    candidates = eligible(sim, devices, cloud_round, edge_round)
    if not candidates and seats != 0:
        found = yield from wait_for_eligible(sim, devices, (cloud_round, edge_round))
        candidates = eligible(sim, devices, cloud_round, edge_round) if found else []
    rng = selection_rng(sim, cloud_round, edge_round, edge)
    aggregation = sim.scenario.aggregation
    if aggregation.trigger == "first_k":
        seats = triggers.selected(aggregation, 0, len(candidates))
    chosen = choose(sim, candidates, seats, rng)
    if aggregation.trigger == "first_k":
        chosen = chosen[:seats]  # a policy that ignores the share ('all') takes its first
    received = sim.send_down(model)
    return (yield from cohort.play(sim, work, chosen, received, (cloud_round, edge_round)))


def choose(
    sim: Simulation, candidates: list[int], seats: int | None, rng: np.random.Generator
) -> np.ndarray:
    """The policy's choice among ``candidates`` for ``seats`` (None: the scenario's fraction);
    a policy with a ``fleet`` keyword sees the fleet as the server knows it."""
    share = sim.scenario.selection.fraction if seats is None else seat_share(seats, len(candidates))
    extra = {FLEET_ARG: FleetView(sim, sim.env.now)} if sim.policy_wants_fleet else {}
    chosen = sim.policy(candidates, Fractions(sim.battery), share, rng, **extra)
    return np.asarray(chosen, dtype=np.int64)


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


def edge_seats(sim: Simulation, cloud_round: int) -> np.ndarray:
    """Each edge's seats this cloud round: the fleet's quota over the edges' eligible devices.

    Counted once, as the cloud round starts (every battery settled when the last one closed).
    """
    able = selectable(sim, np.arange(len(sim.topo.names)))
    eligible_per_edge = np.bincount(sim.topo.edge_of[able], minlength=len(sim.topo.edges))
    rng = np.random.default_rng([sim.scenario.seed, STREAM_SELECTION, cloud_round])
    return fleet_seats(sim.scenario.selection.fraction, eligible_per_edge, rng)


def aggregate_at(
    sim: Simulation,
    node: int,
    edge: int,
    kind: str,
    base: torch.Tensor | None,
    updates: list[Update],
    rounds: tuple[int, int],
) -> Process:
    """Spend the aggregation time on ``node`` (averaging, then its optimiser's step), then
    FedAvg ``updates`` and take that step into a new model."""
    yield from aggregation_time(sim, node, edge, kind, len(updates), rounds)
    if kind == "edge_aggregate" or sim.scenario.topology.mode == "cloud_only":
        np.add.at(sim.trained, cohort.senders_of(updates), 1)
    return sim.aggregate(node, base, updates)


def aggregation_time(
    sim: Simulation, node: int, edge: int, kind: str, count: int, rounds: tuple[int, int]
) -> Process:
    """Record and wait out ``node``'s aggregation of ``count`` updates: averaging, then its
    optimiser's step, at its profile's speed."""
    profile = sim.scenario.profile(
        sim.scenario.topology.cloud_profile
        if kind == "cloud_aggregate"
        else sim.scenario.topology.edge_profile
    )
    flops = aggregate_flops(sim.space.size, count)
    flops += sim.optimizers[node].flops_per_param * sim.space.size
    seconds = compute_s(flops, profile.compute_mflops)
    now = sim.env.now
    sim.trace.record(
        kind, node, edge, now, now + seconds, *rounds, 0, profile.power_compute_w * seconds
    )
    yield sim.env.timeout(seconds)


def edge_cloud_round(
    sim: Simulation, edge: int, global_model: torch.Tensor | None, cloud_round: int,
    received_s: float, seats: int, rounds: Callable | None = None,
) -> Process:
    """One cloud round at one edge, from the end of its download (``received_s``) of
    ``global_model`` (as the edge decoded it): its ``edge_rounds`` edge rounds, played by
    ``rounds`` (``sync_rounds`` by default; ``buffered.play_rounds``). Returns its Update
    and when it was ready to send it (None if nothing arrived)."""
    yield from until(sim.env, received_s)
    node = sim.edge_node(edge)
    play = rounds or partial(sync_rounds, seats=seats)
    model, updates = yield from play(sim, edge, global_model, cloud_round,
                                     sim.scenario.run.edge_rounds)
    if not updates:
        return None
    variant_samples = None if model is None else sim.variant_samples(updates)
    payload = None if global_model is None else sim.encode([model], global_model, [node])[0]
    return Update(edge, payload, cohort.samples_of(updates), variant_samples), sim.env.now


def sync_rounds(
    sim: Simulation, edge: int, model: torch.Tensor | None, cloud_round: int, rounds: int,
    seats: int,
) -> Process:
    """``rounds`` edge rounds at ``edge``, each selecting ``seats`` devices and aggregating
    on the trigger (all, deadline, first_k). Returns the model and the updates of the last
    edge round that got any."""
    node = sim.edge_node(edge)
    devices = sim.topo.members(edge)
    used: list[Update] = []
    for edge_round in range(rounds):
        updates = yield from train_devices(
            sim, devices, model, cloud_round, edge_round, edge, seats
        )
        if updates:
            model = yield from aggregate_at(
                sim, node, node, "edge_aggregate", model, updates, (cloud_round, edge_round)
            )
            used = updates
    return model, used


def backhaul(
    sim: Simulation, edges: np.ndarray, kind: str, nbytes: int, start_s: np.ndarray,
    cloud_round: int,
) -> np.ndarray:
    """Model transfers between ``edges`` and the cloud, ``cloud_download`` or ``edge_upload``,
    from ``start_s``, as one batch of flows; returns when each ended."""
    down = kind == "cloud_download"
    paths, latency_s = sim.links.edge_paths(edges, DOWN if down else UP)
    flows = network.transfer(sim.link_log, start_s, nbytes, np.inf, paths, latency_s)
    topology = sim.scenario.topology
    profile = sim.scenario.profile(topology.edge_profile)
    power_w = profile.power_rx_w if down else profile.power_tx_w
    nodes = sim.edge_node(0) + edges
    end_s = flows.end_s
    sim.trace.extend(kind, nodes, nodes, start_s, end_s, cloud_round, -1, nbytes,
                     power_w * (end_s - start_s))
    cloud = sim.scenario.profile(topology.cloud_profile)
    record_nic(sim, CLOUD_NODE, "nic_tx" if down else "nic_rx", start_s, end_s, cloud,
               (cloud_round, -1))
    return end_s
