"""FedBuff at an aggregator (``trigger = "buffered"``, Nguyen et al. 2022).

The aggregator keeps ``concurrency`` devices at work, handing its current model to each new
one, and aggregates every ``buffer`` arrivals. An update handed out when the aggregator had
aggregated ``v`` times and arriving when it has aggregated ``v + s`` times is ``s`` stale:
it weighs ``(1 + s)^-staleness_exponent`` (times its samples), and one staler than
``max_staleness`` is discarded as ``late``. The weighted deltas are summed over the buffer's
samples (FedBuff's 1/K with equal samples), so stale updates move the model less; the
aggregator's server optimiser then steps towards ``model + that sum``.

Work runs through the aggregator's ``Work`` like every trigger's, so flows, batteries and
availability are planned the same way; each arrival is received as its job is committed.
Jobs handed out and not yet arrived at the end of a cloud round go on into the next: their
deltas apply to the model the aggregator has then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from hierfl.sim import cohort
from hierfl.sim.cohort import CLOUD_NODE, until
from hierfl.sim.device import Process, eligible
from hierfl.sim.edge import aggregation_time, choose
from hierfl.sim.engine import STREAM_SELECTION, Simulation, Update
from hierfl.sim.pacing import next_chance_s, time_is_up
from hierfl.sim.work import Jobs, Work, work_of


@dataclass(frozen=True)
class Handed:
    """A job handed out: the model sent, the copy its device decoded, the aggregator's
    aggregation count then, and the training job (None in timing-only runs)."""

    sent: torch.Tensor | None
    received: torch.Tensor | None
    version: int
    job: object | None


@dataclass(frozen=True)
class Arrived:
    """An update received: who sent it, on how many samples, how stale, when, for which
    rounds, and its job."""

    device: int
    samples: int
    staleness: int
    arrive_s: float
    rounds: tuple[int, int]
    handed: Handed


@dataclass
class Buffer:
    """One aggregator's asynchronous state, kept across cloud rounds."""

    version: int = 0
    handed: dict[int, Handed] = field(default_factory=dict)
    pending: list[Arrived] = field(default_factory=list)
    handouts: int = 0
    skipped: tuple[int, int] | None = None  # the rounds whose skip events are recorded
    closed: bool = False


def buffer_of(sim: Simulation, edge: int) -> Buffer:
    """The Buffer of aggregator ``edge`` (-1: the cloud); its Work receives into it."""
    if edge not in sim.buffers:
        sim.buffers[edge] = Buffer()
        work_of(sim, edge).receive = lambda jobs, arrive_s: receive(sim, edge, jobs, arrive_s)
    return sim.buffers[edge]


def receive(sim: Simulation, edge: int, jobs: Jobs, arrive_s: np.ndarray) -> np.ndarray:
    """Take the updates of ``jobs`` that arrived (``arrive_s`` finite) into the buffer;
    returns the mask of those discarded as late (staler than ``max_staleness``, or arrived
    after the run ended). The jobs of lost updates never train."""
    state = sim.buffers[edge]
    limit = sim.scenario.aggregation.max_staleness
    late = np.zeros(len(jobs), dtype=bool)
    for i in range(len(jobs)):
        handed = state.handed.pop(int(jobs.key[i]))
        staleness = state.version - handed.version
        arrived = bool(np.isfinite(arrive_s[i]))
        late[i] = arrived and (state.closed or (limit is not None and staleness > limit))
        if not arrived or late[i]:
            _cancel(sim, handed)
            continue
        device = int(jobs.device[i])
        rounds = (int(jobs.cloud_round[i]), int(jobs.edge_round[i]))
        state.pending.append(Arrived(device, int(sim.fleet.samples[device]), staleness,
                                     float(arrive_s[i]), rounds, handed))
    return late


def play_rounds(
    sim: Simulation, edge: int, model: torch.Tensor | None, cloud_round: int, rounds: int
) -> Process:
    """``rounds`` buffered aggregations at aggregator ``edge`` (-1: the cloud, in cloud_only),
    from ``model``. Returns the model and the updates of the last aggregation (none if the
    aggregator could not fill a buffer: nobody can work any more, or time is up)."""
    state, work = buffer_of(sim, edge), work_of(sim, edge)
    node = CLOUD_NODE if edge < 0 else sim.edge_node(edge)
    kind = "cloud_aggregate" if edge < 0 else "edge_aggregate"
    size = sim.scenario.aggregation.buffer
    used: list[Update] = []
    for edge_round in range(rounds):
        while len(state.pending) < size:
            work.commit(sim.env.now)
            if len(state.pending) >= size:
                break
            hand_out(sim, edge, work, state, model, (cloud_round, edge_round))
            wake_s = _next_wake_s(sim, edge, work)
            if math.isinf(wake_s) or time_is_up(sim):
                return model, used
            yield from until(sim.env, wake_s)
        taken, state.pending = state.pending[:size], state.pending[size:]
        yield from aggregation_time(sim, node, node if edge >= 0 else -1, kind, len(taken),
                                    (cloud_round, edge_round))
        np.add.at(sim.trained, [a.device for a in taken], 1)
        model = aggregate(sim, node, model, taken)
        state.version += 1
        used = _updates(taken)
    return model, used


def hand_out(
    sim: Simulation, edge: int, work: Work, state: Buffer, model: torch.Tensor | None,
    rounds: tuple[int, int],
) -> None:
    """Select devices for the free places (``concurrency`` less the jobs at work) and hand
    them the aggregator's current ``model``. A policy that returns more than the free places
    (``all``) gets a uniform draw of them, as FedBuff samples its clients."""
    free = sim.scenario.aggregation.concurrency - len(work.jobs)
    if free <= 0:
        return
    candidates = eligible(sim, _members(sim, edge), *rounds, skips=state.skipped != rounds)
    state.skipped = rounds
    if not candidates:
        return
    rng = np.random.default_rng(
        [sim.scenario.seed, STREAM_SELECTION, *rounds, edge + 1, state.handouts])
    state.handouts += 1
    chosen = choose(sim, candidates, free, rng)
    if len(chosen) > free:  # a policy that ignores the share ('all'): a random few of them
        chosen = np.sort(rng.choice(chosen, free, replace=False))
    received = sim.send_down(model)
    work.hand_out(chosen, rounds)
    keys = work.jobs.key[len(work.jobs) - len(chosen):]
    for device, key in zip(chosen.tolist(), keys.tolist(), strict=True):
        state.handed[key] = Handed(model, received, state.version,
                                   sim.submit(device, received, *rounds))


def aggregate(
    sim: Simulation, node: int, model: torch.Tensor | None, taken: list[Arrived]
) -> torch.Tensor | None:
    """The aggregator's next model from the buffer's device updates (``staleness_step``)."""
    if model is None:
        return None
    return staleness_step(sim, node, model, _deltas(sim, taken), [a.samples for a in taken],
                          [a.staleness for a in taken])


def staleness_step(
    sim: Simulation, node: int, model: torch.Tensor, deltas: list[torch.Tensor],
    samples: list[int], staleness: list[int],
) -> torch.Tensor:
    """``node``'s optimiser step from ``model`` towards ``model`` plus the deltas weighted by
    ``samples * (1 + staleness)^-staleness_exponent`` and summed over the samples."""
    exponent = sim.scenario.aggregation.staleness_exponent
    total = torch.zeros(model.shape, dtype=torch.float64)
    for delta, n, s in zip(deltas, samples, staleness, strict=True):
        total += n * (1 + s) ** -exponent * delta.double()
    step = total / sum(samples)
    return sim.optimizers[node].step(model, (model.double() + step).to(torch.float32))


def close(sim: Simulation) -> None:
    """The run is over: updates still in a buffer, and those still to arrive, are late."""
    for state in sim.buffers.values():
        state.closed = True
        if state.pending:
            devices = np.array([a.device for a in state.pending], dtype=np.int64)
            node, edge = cohort.trace_nodes(sim, devices)
            arrive_s = np.array([a.arrive_s for a in state.pending])
            cloud_round, edge_round = np.array([a.rounds for a in state.pending]).T
            sim.trace.extend("late", node, edge, arrive_s, arrive_s, cloud_round, edge_round,
                             sim.up_bytes(devices))
            np.add.at(sim.late, devices, 1)
            for arrived in state.pending:
                _cancel(sim, arrived.handed)
            state.pending = []


def _deltas(sim: Simulation, taken: list[Arrived]) -> list[torch.Tensor]:
    """Each update's delta from the model its aggregator sent: encoded against the copy the
    device decoded, decoded by the aggregator (weights less the model sent, with
    ``payload = "weights"``)."""
    deltas = []
    for arrived in taken:
        handed = arrived.handed
        payload = sim.encode([handed.job.result()], handed.received,
                             sim.device_node(np.array([arrived.device])))
        row = sim.decode(payload, sim.space)[0]
        deltas.append(row if sim.scenario.compression.payload == "delta" else row - handed.sent)
    return deltas


def _updates(taken: list[Arrived]) -> list[Update]:
    return [Update(a.device, None, a.samples) for a in taken]


def _members(sim: Simulation, edge: int) -> np.ndarray:
    return np.arange(len(sim.topo.names)) if edge < 0 else sim.topo.members(edge)


def _next_wake_s(sim: Simulation, edge: int, work: Work) -> float:
    """When something may change for the aggregator: a job done, or (places free) a device
    becoming eligible; never past ``max_sim_time_s``."""
    members = _members(sim, edge)
    if len(work.jobs) < sim.scenario.aggregation.concurrency:
        wake_s = next_chance_s(sim, members)
    else:
        wake_s = float(work.done_s.min())
    limit = sim.scenario.run.max_sim_time_s
    return wake_s if limit is None else min(wake_s, limit)


def _cancel(sim: Simulation, handed: Handed) -> None:
    if handed.job is not None:
        sim.trainer.cancel(handed.job)
