"""Cloud process: cloud rounds of HierFAVG, or of cloud-only FedAvg with edges as routers."""

from __future__ import annotations

import numpy as np
import torch

from hierfl.costs import compute_s
from hierfl.learn.distill import distill, distill_flops, proxy_count
from hierfl.sim import buffered, cloud_async
from hierfl.sim.backhaul import Backhaul
from hierfl.sim.cohort import CLOUD_NODE, senders_of, until
from hierfl.sim.device import Process, settle
from hierfl.sim.edge import (
    aggregate_at,
    backhaul,
    edge_cloud_round,
    edge_seats,
    train_devices,
)
from hierfl.sim.engine import STREAM_DISTILL, Simulation, Update
from hierfl.sim.pacing import record_evaluation, round_may_start


def cloud(sim: Simulation) -> Process:
    """Run every cloud round (``cloud_rounds``); then the work still running when the run
    ends goes on to its end, and is committed."""
    trigger = sim.scenario.aggregation.cloud_trigger
    if trigger == "all":
        yield from cloud_rounds(sim)
    else:
        backhaul = Backhaul(sim)
        play = cloud_async.deadline_rounds if trigger == "deadline" else cloud_async.buffered_rounds
        yield from play(sim, backhaul, close_round)
        backhaul.close()
    buffered.close(sim)
    for work in sim.works.values():  # what is still out will never be aggregated: late
        work.mark_late(work.jobs.device)
        work.commit(np.inf)


def cloud_rounds(sim: Simulation) -> Process:
    """Run every cloud round; each ends with an aggregation (if anything arrived) and a tally.

    A round starts no sooner than ``round_interval_s`` after the previous one started, and
    only once a device is eligible (or ``max_wait_s`` has passed); the run ends early when
    ``max_sim_time_s`` is reached or no device can ever be selected again.
    """
    hierarchical = sim.scenario.topology.mode == "hierarchical"
    everyone = np.arange(len(sim.topo.names))
    for cloud_round in range(sim.first_round, sim.scenario.run.cloud_rounds):
        if not (yield from round_may_start(sim, cloud_round)):
            return
        sim.round_started_s = sim.env.now
        if hierarchical:
            updates = yield from _gather_edges(sim, cloud_round)
        elif sim.scenario.aggregation.trigger == "buffered":
            yield from _buffered_at_cloud(sim, cloud_round)
            close_round(sim, cloud_round)
            continue
        else:
            updates = yield from train_devices(sim, everyone, sim.global_weights, cloud_round, 0)
        if updates:
            sent = sim.global_weights
            sim.global_weights = yield from aggregate_at(
                sim,
                CLOUD_NODE,
                -1,
                "cloud_aggregate",
                sent,
                updates,
                (cloud_round, -1),
            )
            if sim.scenario.distillation.enabled:
                sim.global_weights = yield from distill_at(sim, sent, updates, cloud_round)
        close_round(sim, cloud_round)


def distill_at(
    sim: Simulation, sent: torch.Tensor | None, updates: list[Update], cloud_round: int
) -> Process:
    """FedDF at the cloud: spend the distillation's compute time (from its FLOPs), then
    distil the ensemble of the models behind ``updates`` (received as ``sent``) into the
    global model on the proxy set."""
    settings, stats = sim.scenario.distillation, sim.stats
    profile = sim.scenario.profile(sim.scenario.topology.cloud_profile)
    proxy = proxy_count(settings, int(sim.fleet.samples.sum()))
    flops = distill_flops(teacher_flops(sim, updates), stats.forward_flops, stats.n_params,
                          settings, proxy)
    seconds = compute_s(flops, profile.compute_mflops)
    now = sim.env.now
    sim.trace.record("distill", CLOUD_NODE, -1, now, now + seconds, cloud_round, -1, 0,
                     profile.power_compute_w * seconds)
    yield sim.env.timeout(seconds)
    if sent is None or sim.proxy is None:
        return sim.global_weights
    rng = np.random.default_rng([sim.scenario.seed, STREAM_DISTILL, cloud_round])
    members = sim.members(sent, updates)
    return distill(sim.model, sim.global_weights, members, sim.proxy, settings, rng)


def teacher_flops(sim: Simulation, updates: list[Update]) -> int:
    """Forward FLOPs per sample of the ensemble: the full model per edge update, each
    device's own variant per device update (cloud_only)."""
    if sim.scenario.topology.mode == "hierarchical":
        return sim.stats.forward_flops * len(updates)
    return int(sim.forward_flops_of(senders_of(updates)).sum())


def _buffered_at_cloud(sim: Simulation, cloud_round: int) -> Process:
    """A cloud_only round with the buffered trigger: one FedBuff aggregation at the cloud."""
    model, _ = yield from buffered.play_rounds(sim, -1, sim.global_weights, cloud_round, 1)
    sim.global_weights = model


def _gather_edges(sim: Simulation, cloud_round: int) -> Process:
    """Send the global model to every edge that has devices, let each play its edge rounds,
    then bring up the models of those that got updates. An edge without devices takes no
    part: it receives nothing and sends nothing."""
    edges = np.flatnonzero([len(sim.topo.members(e)) for e in range(len(sim.topo.edges))])
    now = sim.env.now
    seats = edge_seats(sim, cloud_round)
    received_s = backhaul(
        sim, edges, "cloud_download", sim.downlink_bytes, np.full(len(edges), now), cloud_round
    )
    received = sim.send_down(sim.global_weights)
    rounds = buffered.play_rounds if sim.scenario.aggregation.trigger == "buffered" else None
    runs = [
        sim.env.process(
            edge_cloud_round(sim, int(e), received, cloud_round, t, int(seats[e]), rounds))
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
    settle(sim, np.flatnonzero(~sim.busy), cloud_round, -1)
    evaluation = record_evaluation(sim, "round")
    accuracy, loss = evaluation["accuracy"], evaluation["loss"]
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
