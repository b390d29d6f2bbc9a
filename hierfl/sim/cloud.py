"""Cloud process: cloud rounds of HierFAVG, or of cloud-only FedAvg with edges as routers."""

from __future__ import annotations

import numpy as np

from hierfl.learn.trainer import evaluate
from hierfl.sim.cohort import CLOUD_NODE, until
from hierfl.sim.device import Process, settle
from hierfl.sim.edge import (
    aggregate_at,
    backhaul,
    edge_cloud_round,
    edge_seats,
    train_devices,
)
from hierfl.sim.engine import Simulation, Update


def cloud(sim: Simulation) -> Process:
    """Run every cloud round; each ends with an aggregation (if anything arrived) and a tally."""
    hierarchical = sim.scenario.topology.mode == "hierarchical"
    for cloud_round in range(sim.first_round, sim.scenario.run.cloud_rounds):
        if hierarchical:
            updates = yield from _gather_edges(sim, cloud_round)
        else:
            everyone = np.arange(len(sim.topo.names))
            updates = yield from train_devices(sim, everyone, sim.global_weights, cloud_round, 0)
        if updates:
            sim.global_weights = yield from aggregate_at(
                sim,
                CLOUD_NODE,
                -1,
                "cloud_aggregate",
                sim.global_weights,
                updates,
                (cloud_round, -1),
            )
        close_round(sim, cloud_round)


def _gather_edges(sim: Simulation, cloud_round: int) -> Process:
    """Send the global model to every edge that has devices, let each play its edge rounds,
    then bring up the models of those that got updates. An edge without devices takes no
    part: it receives nothing and sends nothing."""
    edges = np.flatnonzero([len(sim.topo.members(e)) for e in range(len(sim.topo.edges))])
    now = sim.env.now
    seats = edge_seats(sim, cloud_round)
    received_s = backhaul(
        sim, edges, "cloud_download", sim.dense_bytes, np.full(len(edges), now), cloud_round
    )
    runs = [
        sim.env.process(
            edge_cloud_round(sim, int(e), sim.global_weights, cloud_round, t, int(seats[e]))
        )
        for e, t in zip(edges, received_s, strict=True)
    ]
    yield sim.env.all_of(runs)
    sent = [(e, *run.value) for e, run in zip(edges, runs, strict=True) if run.value]
    if not sent:
        return []
    senders = np.array([e for e, _, _ in sent], dtype=np.int64)
    ready_s = np.array([t for _, _, t in sent])
    end_s = backhaul(sim, senders, "edge_upload", sim.uplink_bytes, ready_s, cloud_round)
    yield from until(sim.env, float(end_s.max()))
    updates: list[Update] = [update for _, update, _ in sent]
    return updates


def close_round(sim: Simulation, cloud_round: int) -> None:
    """Settle idle drain to now, evaluate the global model, and keep the round's figures."""
    settle(sim, np.arange(len(sim.topo.names)), cloud_round, -1)
    accuracy = loss = float("nan")
    if sim.trainer is not None:
        data = sim.trainer.data
        accuracy, loss = evaluate(
            sim.model, sim.space, sim.global_weights, data.x_test, data.y_test
        )
    battery = sim.battery.fractions()[~sim.fleet.mains]
    row = {
        "cloud_round": cloud_round,
        "sim_time_s": sim.env.now,
        "accuracy": accuracy,
        "loss": loss,
        "devices_trained": int(sim.trained.sum()),
        "energy_used_j": float(sim.battery.used_j.sum()),
        "mean_battery": float(battery.mean()) if battery.size else float("nan"),
        **sim.tier_accuracy(),
    }
    sim.round_rows.append(row)
    if sim.on_round is not None:
        sim.on_round(row)
