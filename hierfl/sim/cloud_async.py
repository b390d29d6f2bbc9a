"""Clouds that do not wait for every edge: ``cloud_trigger = "deadline"`` or ``"buffered"``.

``deadline``: a cloud round sends the global model to every edge that is not still at work
on an earlier round, and ``cloud_deadline_s`` after it started (or once all of them have
sent their model) aggregates the edge models that have arrived. An edge still at work goes
on: its model arrives later, is recorded as ``late`` on the edge and discarded, and the edge
takes part again from the next cloud round.

``buffered``: every edge with devices is kept at work. Each arrival is given the cloud's
current model at once (an edge that had nothing to send too, unless no simulated time
passed: it can do nothing now); every ``cloud_buffer`` arrivals the cloud aggregates them with
FedBuff's staleness weights (``buffered.staleness_step``; ``s`` counts cloud aggregations
since the edge received its model, and a model staler than ``max_staleness`` is late). Each
aggregation closes a cloud round.

Edge transfers go over a ``Backhaul``, which plans them together whenever they start. When
the run ends, edges still at work stop there: the device work they handed out goes on to
its end (``Work.commit``), and they send nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import simpy
import torch

from hierfl.sim import buffered
from hierfl.sim.backhaul import Backhaul
from hierfl.sim.cohort import CLOUD_NODE
from hierfl.sim.device import Process
from hierfl.sim.edge import aggregate_at, aggregation_time, edge_cloud_round, edge_seats
from hierfl.sim.engine import Simulation, Update
from hierfl.sim.pacing import round_may_start, time_is_up, wait_for_eligible


@dataclass(frozen=True)
class EdgeModel:
    """An edge's model at the cloud: its Update, the cloud round it was handed the global
    model in, and when it arrived; for a buffered cloud, the model it was sent and how many
    cloud aggregations stale it is."""

    edge: int
    update: Update
    handed_round: int
    arrived_s: float
    sent: torch.Tensor | None = None
    staleness: int = 0


@dataclass
class EdgeWork:
    """Edges at work for the cloud: which round (or model version) each was handed, and the
    models that arrived and are not aggregated yet."""

    handed: dict[int, int] = field(default_factory=dict)
    running: dict[int, simpy.Process] = field(default_factory=dict)
    arrived: list[EdgeModel] = field(default_factory=list)
    closed: set[int] = field(default_factory=set)  # rounds (deadline) already aggregated


def edge_job(
    sim: Simulation, backhaul: Backhaul, edge: int, model: torch.Tensor | None,
    cloud_round: int, seats: int,
) -> Process:
    """One edge's part of a cloud round: receive ``model``, play its edge rounds, send its
    model. Returns its Update, or None if it had nothing to send."""
    yield from backhaul.transfer(edge, "cloud_download", sim.downlink_bytes, (cloud_round, -1))
    rounds = buffered.play_rounds if sim.scenario.aggregation.trigger == "buffered" else None
    result = yield from edge_cloud_round(sim, edge, sim.send_down(model), cloud_round,
                                         sim.env.now, seats, rounds)
    if result is None:
        return None
    yield from backhaul.transfer(edge, "edge_upload", sim.uplink_bytes, (cloud_round, -1))
    return result[0]


def deadline_rounds(sim: Simulation, backhaul: Backhaul, close_round) -> Process:
    """Every cloud round under ``cloud_trigger = "deadline"`` (see the module docstring)."""
    work, limit_s = EdgeWork(), sim.scenario.aggregation.cloud_deadline_s
    for cloud_round in range(sim.first_round, sim.scenario.run.cloud_rounds):
        if not (yield from round_may_start(sim, cloud_round)):
            return
        free = [e for e in _edges(sim) if e not in work.handed]
        if not free:  # every edge is still at work on an earlier round: wait for one
            yield sim.env.any_of(list(work.running.values()))
            free = [e for e in _edges(sim) if e not in work.handed]
        sim.round_started_s = sim.env.now
        seats = edge_seats(sim, cloud_round)
        jobs = [_deadline_job(sim, backhaul, work, e, cloud_round, int(seats[e])) for e in free]
        yield sim.env.all_of(jobs) | sim.env.timeout(limit_s)
        work.closed.add(cloud_round)
        updates = [model.update for model in work.arrived]
        work.arrived = []
        if updates:
            sim.global_weights = yield from aggregate_at(
                sim, CLOUD_NODE, -1, "cloud_aggregate", sim.global_weights, updates,
                (cloud_round, -1))
        close_round(sim, cloud_round)


def _deadline_job(
    sim: Simulation, backhaul: Backhaul, work: EdgeWork, edge: int, cloud_round: int, seats: int
) -> simpy.Process:
    """Start ``edge_job`` with the global model; its model then arrives in time or late."""
    work.handed[edge] = cloud_round
    model = sim.global_weights

    def job() -> Process:
        update = yield from edge_job(sim, backhaul, edge, model, cloud_round, seats)
        del work.handed[edge], work.running[edge]
        if update is None:
            return
        if cloud_round in work.closed:
            _late(sim, edge, cloud_round)
        else:
            work.arrived.append(EdgeModel(edge, update, cloud_round, sim.env.now))

    work.running[edge] = sim.env.process(job())
    return work.running[edge]


def buffered_rounds(sim: Simulation, backhaul: Backhaul, close_round) -> Process:
    """Every cloud round under ``cloud_trigger = "buffered"`` (see the module docstring)."""
    work, inbox = EdgeWork(), simpy.Store(sim.env)
    size, limit = sim.scenario.aggregation.cloud_buffer, sim.scenario.aggregation.max_staleness
    version = 0
    for edge in _edges(sim):
        _hand(sim, backhaul, work, inbox, edge, sim.first_round, version)
    for cloud_round in range(sim.first_round, sim.scenario.run.cloud_rounds):
        sim.round_started_s = sim.env.now
        back: list[int] = []  # edges that arrived: handed the model again
        while len(work.arrived) < size:
            for edge in back:
                _hand(sim, backhaul, work, inbox, edge, cloud_round, version)
            back = []
            if not work.handed or time_is_up(sim):
                return _close_first(sim, cloud_round, close_round, work)
            got = inbox.get()
            limit_s = sim.scenario.run.max_sim_time_s
            yield got if limit_s is None else got | sim.env.timeout(limit_s - sim.env.now)
            if not got.triggered:
                return _close_first(sim, cloud_round, close_round, work)
            edge, update, handed_version, sent, handed_round, handed_s = got.value
            del work.handed[edge]
            if update is None:  # no update this time: again, unless no time passed (it can't)
                if sim.env.now > handed_s:
                    back.append(edge)
                continue
            if limit is not None and version - handed_version > limit:
                _late(sim, edge, handed_round)
            else:
                work.arrived.append(EdgeModel(edge, update, handed_round, sim.env.now, sent,
                                              version - handed_version))
            back.append(edge)
        taken, work.arrived = work.arrived[:size], work.arrived[size:]
        yield from aggregation_time(sim, CLOUD_NODE, -1, "cloud_aggregate", len(taken),
                                    (cloud_round, -1))
        sim.global_weights = _step(sim, taken)
        version += 1
        close_round(sim, cloud_round)
        for edge in back:  # an arrival that filled the buffer gets the new model
            _hand(sim, backhaul, work, inbox, edge, cloud_round + 1, version)


def _close_first(sim: Simulation, cloud_round: int, close_round, work: EdgeWork) -> None:
    """The run ends inside ``cloud_round``: the edge models waiting in the buffer are late;
    if it is the first round, close it (with no aggregation) so that the run reports one."""
    for model in work.arrived:
        _late(sim, model.edge, model.handed_round, model.arrived_s)
    work.arrived = []
    if not sim.round_rows:
        close_round(sim, cloud_round)


def _hand(
    sim: Simulation, backhaul: Backhaul, work: EdgeWork, inbox: simpy.Store, edge: int,
    cloud_round: int, version: int,
) -> None:
    """Send ``edge`` the cloud's current model; its Update goes to ``inbox`` when it arrives."""
    work.handed[edge] = version
    model, handed_s = sim.global_weights, sim.env.now

    def job() -> Process:
        members = sim.topo.members(edge)
        found = yield from wait_for_eligible(sim, members, (cloud_round, -1))
        seats = int(edge_seats(sim, cloud_round)[edge]) if found else 0
        update = None
        if found:
            update = yield from edge_job(sim, backhaul, edge, model, cloud_round, seats)
        yield inbox.put((edge, update, version, model, cloud_round, handed_s))

    sim.env.process(job())


def _step(sim: Simulation, taken: list[EdgeModel]) -> torch.Tensor | None:
    """The cloud's FedBuff step over the edge models ``taken``, each a delta from the model
    it was sent."""
    model = sim.global_weights
    if model is None:
        return None
    deltas = [_delta(sim, edge_model.update, edge_model.sent) for edge_model in taken]
    return buffered.staleness_step(sim, CLOUD_NODE, model, deltas,
                                   [m.update.samples for m in taken], [m.staleness for m in taken])


def _delta(sim: Simulation, update: Update, sent: torch.Tensor) -> torch.Tensor:
    row = sim.decode([update.payload], sim.space)[0]
    return row if sim.scenario.compression.payload == "delta" else row - sent


def _late(sim: Simulation, edge: int, cloud_round: int, arrived_s: float | None = None) -> None:
    """An edge's model, handed out in ``cloud_round``, is discarded (it came after the cloud
    aggregated without it, too stale, or the run ended first): a ``late`` instant when it
    arrived (now, by default)."""
    node = sim.edge_node(edge)
    at_s = sim.env.now if arrived_s is None else arrived_s
    sim.trace.record("late", node, node, at_s, at_s, cloud_round, -1, sim.uplink_bytes, 0.0)


def _edges(sim: Simulation) -> list[int]:
    """The edges that have devices."""
    return [e for e in range(len(sim.topo.edges)) if len(sim.topo.members(e))]
