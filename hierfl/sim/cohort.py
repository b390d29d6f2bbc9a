"""The phases of devices at work, over numpy arrays: download, compute, upload.

``simulate`` plays the jobs of a ``Stage`` (an aggregator's open work, ``hierfl.sim.work``):
their downloads start when the aggregator sends the model, each one's compute when its
download ends, each one's upload when its compute ends. Transfers are flows over the shared
links, solved by the aggregator's channels (``hierfl.sim.channel``) together with every
flow of its still running; batteries drain and empty at exact instants; every interval goes
to the stage's trace in bulk. ``play`` is the aggregator's side of an edge round: hand the
work out, wait for the trigger, collect the updates it aggregates.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import simpy
import torch

from hierfl.costs import compute_s, prox_flops, train_flops
from hierfl.learn.utility import statistical_utility
from hierfl.sim import triggers
from hierfl.sim.availability import Always
from hierfl.sim.battery import per_device
from hierfl.sim.channel import Channel, Flows
from hierfl.sim.engine import Simulation, Update
from hierfl.sim.network import DOWN, UP, bytes_per_s, merge_intervals
from hierfl.sim.variability import STREAM_BANDWIDTH, STREAM_COMPUTE, lognormal
from hierfl.trace import Trace

PHASES = {  # kind -> (battery category, Fleet column of the power drawn)
    "download": ("rx", "power_rx_w"),
    "compute": ("compute", "power_compute_w"),
    "upload": ("tx", "power_tx_w"),
}
CLOUD_NODE = 0


@dataclass(frozen=True)
class Stage:
    """Jobs a plan plays: per job its device, key and rounds; the trace its events go to,
    and the channels its flows take."""

    devices: np.ndarray
    keys: np.ndarray
    cloud_round: np.ndarray
    edge_round: np.ndarray
    trace: Trace
    down: Channel
    up: Channel

    def take(self, index: np.ndarray) -> Stage:
        """The jobs at ``index`` (positions or a mask)."""
        return Stage(self.devices[index], self.keys[index], self.cloud_round[index],
                     self.edge_round[index], self.trace, self.down, self.up)

    @property
    def rounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.cloud_round, self.edge_round


@dataclass(frozen=True)
class PhaseEnd:
    """How one phase ended for each device that entered it: ``done``, or not (its battery
    emptied), at ``end_s``."""

    done: np.ndarray
    end_s: np.ndarray


def until(env: simpy.Environment, t_s: float) -> Generator:
    """Wait until the clock reads at least ``t_s`` (a plain ``t_s - now`` can fall an ulp
    short, and an aggregation would then start before the transfer it waits for ends)."""
    delay = t_s - env.now
    if delay > 0:
        while env.now + delay < t_s:
            delay = np.nextafter(delay, np.inf)
        yield env.timeout(delay)


def play(
    sim: Simulation,
    work,
    devices: np.ndarray,
    model: torch.Tensor | None,
    rounds: tuple[int, int],
) -> Generator:
    """The aggregator's side of an edge round (a SimPy process body): hand out, wait, collect.

    ``work`` (the aggregator's ``Work``) plans the round's jobs with every job still open.
    Uploads take ``up_bytes``, the size every codec derives from shapes alone, so the
    plan is known when the work is handed out. The aggregator waits until the trigger
    closes the round (``triggers.close_s``); the updates that arrived and that the trigger
    takes are trained and encoded then, in one batch with every job pending at any edge.
    The others are marked late, and their jobs never train. Returns the Updates aggregated,
    in the order of ``devices``.
    """
    aggregation = sim.scenario.aggregation
    jobs = [sim.submit(int(d), model, *rounds) for d in devices] if sim.learning else None
    start_s = sim.env.now
    arrive_s, done_s = work.hand_out(devices, rounds)
    if len(devices):
        yield from until(sim.env, triggers.close_s(aggregation, start_s, arrive_s, done_s))
    taken = triggers.used(aggregation, arrive_s, sim.env.now)
    work.mark_late(devices[np.isfinite(arrive_s) & ~taken])
    work.commit(sim.env.now)
    used = np.flatnonzero(taken)
    if jobs is not None:
        for k in np.flatnonzero(~taken):
            sim.trainer.cancel(jobs[k])
    senders, samples = devices[used], sim.fleet.samples[devices[used]]
    if jobs is None:
        return Arrivals(senders, samples)
    if sim.policy_wants_fleet:
        sim.history.utility[senders] = statistical_utility(sim, senders, model)
    payloads = sim.encode([jobs[k].result() for k in used], model, sim.device_node(senders))
    return [Update(int(d), p, int(n)) for d, p, n in zip(senders, payloads, samples, strict=True)]


class Arrivals(Sequence[Update]):
    """A cohort's Updates (timing-only: no payloads) as two columns, not an object each.

    ``senders[k]`` sent update ``k``, trained on ``samples[k]`` samples.
    """

    def __init__(self, senders: np.ndarray, samples: np.ndarray) -> None:
        self.senders, self.samples = senders, samples

    def __len__(self) -> int:
        return len(self.senders)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return Arrivals(self.senders[k], self.samples[k])
        return Update(int(self.senders[k]), None, int(self.samples[k]))


def senders_of(updates: Sequence[Update]) -> np.ndarray:
    """Who sent each update, as an array."""
    if isinstance(updates, Arrivals):
        return updates.senders
    return np.fromiter((u.sender for u in updates), dtype=np.int64, count=len(updates))


def samples_of(updates: Sequence[Update]) -> int:
    """Samples behind all ``updates``."""
    if isinstance(updates, Arrivals):
        return int(updates.samples.sum())
    return sum(u.samples for u in updates)


def simulate(
    sim: Simulation, stage: Stage, start_s: np.ndarray, down_bytes: np.ndarray,
    up_bytes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Download, compute and upload for the jobs of ``stage`` from ``start_s``, recorded in
    the stage's trace; ``down_bytes`` and ``up_bytes`` per job.

    Returns the positions (in the stage) of the jobs whose update arrived, and when each
    device was done: its upload ended, or its battery emptied.
    """
    now_s = np.array(start_s, dtype=np.float64)
    going = np.arange(len(stage.devices))
    for kind, nbytes in (("download", down_bytes), ("compute", 0), ("upload", up_bytes)):
        if len(going) == 0:
            break
        nbytes = np.broadcast_to(nbytes, len(stage.devices))[going]
        end = run_phase(sim, stage.take(going), now_s[going], kind, nbytes)
        now_s[going] = end.end_s
        going = going[end.done]
    return going, now_s


def run_phase(
    sim: Simulation, stage: Stage, start_s: np.ndarray, kind: str, nbytes: np.ndarray
) -> PhaseEnd:
    """Record one phase of the jobs of ``stage`` starting at ``start_s`` (``nbytes`` each);
    drain batteries.

    Idle drain (and radio tails) are settled up to ``start_s`` first. A battery that empties
    stops the device at that instant: its interval ends there, delivers 0 bytes, and a
    ``dropout`` follows.
    """
    devices = stage.devices
    died = settle(sim, devices, start_s, stage.rounds, stage.trace)
    end_s = np.where(died, sim.battery.died_s[devices], 0.0)
    done = ~died
    working, begun_s, nbytes = stage.take(done), start_s[done], nbytes[done]
    power_w = getattr(sim.fleet, PHASES[kind][1])[working.devices]
    state = sim.availability.at(working.devices, begun_s)
    offline_s = np.where(state.online, state.until_s, begun_s)  # already offline: stops now
    mains = state.plugged
    if kind == "compute":
        finished_s, delivered = _compute(sim, working, begun_s, power_w, offline_s, mains)
    else:
        finished_s, delivered = _transfer(
            sim, working, begun_s, kind, nbytes, power_w, offline_s, mains)
    node, edge = trace_nodes(sim, working.devices)
    sent = np.where(delivered, nbytes, 0)
    stage.trace.extend(kind, node, edge, begun_s, finished_s, *working.rounds, sent,
                       power_w * (finished_s - begun_s))
    if sim.charging and mains.any():
        charge(sim, working.devices[mains], begun_s[mains], finished_s[mains],
               _at(working.rounds, mains), stage.trace)
    end_s[done] = finished_s
    done[done] = delivered
    lost = ~delivered & ~sim.battery.alive[working.devices]
    record_dropouts(sim, working.devices[lost], _at(working.rounds, lost), stage.trace)
    return PhaseEnd(done, end_s)


def _compute(
    sim: Simulation, stage: Stage, start_s: np.ndarray, power_w: np.ndarray,
    offline_s: np.ndarray, mains: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Local training: its length from the FLOPs; ends, and whether it finished (the battery
    lasted and the device stayed online: going offline stops it at that instant)."""
    devices = stage.devices
    samples = sim.fleet.samples[devices]
    run = sim.scenario.run
    flops = train_flops(sim.forward_flops_of(devices), samples, run.local_epochs)
    if sim.scenario.aggregation.mu:
        flops = flops + prox_flops(sim.params_of(devices), samples, run.local_epochs,
                                   run.batch_size)
    sigma = sim.scenario.variability.compute_sigma
    mflops = sim.fleet.compute_mflops[devices] * lognormal(
        sim.scenario.seed, STREAM_COMPUTE, devices, stage.cloud_round, sigma)
    seconds = per_device(compute_s(flops, mflops), len(devices))
    allowed_s = np.minimum(seconds, offline_s - start_s)
    lasted_s = sim.battery.draw_many(devices, start_s, allowed_s, power_w, "compute", mains)
    return start_s + lasted_s, lasted_s >= seconds


def _transfer(
    sim: Simulation,
    stage: Stage,
    start_s: np.ndarray,
    kind: str,
    nbytes: np.ndarray,
    power_w: np.ndarray,
    offline_s: np.ndarray,
    mains: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Flows between the stage's devices and their aggregator, over its channel; the radio
    draws for each whole flow.

    A sender whose battery would empty mid-flow, or that goes offline, stops at that instant
    (the flow's ``stop_s``), which frees its share of the links for the others.
    """
    up = kind == "upload"
    topo, battery, devices = sim.topo, sim.battery, stage.devices
    with np.errstate(divide="ignore", invalid="ignore"):
        empty_s = start_s + np.where(
            (power_w > 0) & ~mains, battery.remaining_j[devices] / power_w, np.inf)
    stop_s = np.minimum(empty_s, offline_s)
    kbps = (topo.access_up_kbps if up else topo.access_down_kbps)[devices]
    sigma = sim.scenario.variability.bandwidth_sigma
    kbps = kbps * lognormal(sim.scenario.seed, STREAM_BANDWIDTH, devices, stage.cloud_round,
                            sigma)
    to_cloud = sim.scenario.topology.mode == "cloud_only"
    paths, latency_s = sim.links.device_paths(topo.edge_of[devices], UP if up else DOWN, to_cloud)
    latency_s = latency_s + topo.access_ms[devices] / 1000
    channel = stage.up if up else stage.down
    flows = Flows(stage.keys, start_s, start_s + latency_s, nbytes.astype(np.float64),
                  np.broadcast_to(bytes_per_s(kbps), (len(devices),)), paths, stop_s)
    end_s, solved = channel.solve(flows)
    done = solved.copy()
    category = PHASES[kind][0]
    emptied = ~done & (empty_s <= offline_s)
    drawn = np.flatnonzero(~emptied)  # sent, or cut by going offline: the radio drew till then
    seconds = end_s[drawn] - start_s[drawn]
    lasted_s = battery.draw_many(
        devices[drawn], start_s[drawn], seconds, power_w[drawn], category, mains[drawn])
    short = lasted_s < seconds  # emptied by rounding at the very end: lost all the same
    done[drawn[short]] = False
    end_s[drawn[short]] = start_s[drawn[short]] + lasted_s[short]
    battery.run_out(devices[emptied], end_s[emptied], category)
    battery.start_tails(devices[done], end_s[done])
    return end_s, done


def record_nic(
    sim: Simulation, node: int, kind: str, start_s: np.ndarray, end_s: np.ndarray, profile,
    rounds: tuple[int, int],
) -> None:
    """``nic_tx`` or ``nic_rx`` events of ``node`` over the union of its flows' intervals."""
    begin_s, finish_s = merge_intervals(start_s, end_s)
    power_w = profile.power_rx_w if kind == "nic_rx" else profile.power_tx_w
    edge = node if node > CLOUD_NODE else -1
    sim.trace.extend(kind, node, edge, begin_s, finish_s, *rounds, 0,
                     power_w * (finish_s - begin_s))


def settle(
    sim: Simulation,
    devices: np.ndarray,
    now_s: np.ndarray | float,
    rounds: tuple[np.ndarray | int, np.ndarray | int],
    trace: Trace | None = None,
) -> np.ndarray:
    """Drain tails and idle power of ``devices`` to ``now_s``; record the ``tail`` pieces,
    the dropouts and every coming online and going offline (in ``trace``, the run's by
    default) with ``rounds`` (one pair for all, or arrays, one entry per device); charge the
    plugged-in. Returns the mask of devices that died."""
    trace = sim.trace if trace is None else trace
    record_changes(sim, devices, now_s, rounds, trace)
    if not sim.charging:
        return _drain(sim, devices, now_s, rounds, trace)
    now_s = per_device(now_s, len(devices))
    died = np.zeros(len(devices), dtype=bool)
    behind = sim.battery.settled_s[devices] < now_s
    ahead = ~behind  # as without charging: no time passes
    _drain(sim, devices[ahead], now_s[ahead], _at(rounds, ahead), trace)
    going = np.flatnonzero(behind)
    while len(going):
        d, from_s = devices[going], sim.battery.settled_s[devices[going]]
        state = sim.availability.at(d, from_s)
        to_s = np.minimum(state.until_s, now_s[going])
        plugged, unplugged = going[state.plugged], going[~state.plugged]
        charge(sim, d[state.plugged], from_s[state.plugged], to_s[state.plugged],
               _at(rounds, plugged), trace)
        _drain(sim, d[state.plugged], to_s[state.plugged], _at(rounds, plugged), trace,
               mains=True)
        died[unplugged] |= _drain(sim, d[~state.plugged], to_s[~state.plugged],
                                  _at(rounds, unplugged), trace)
        dead = ~sim.battery.alive[d]  # off: its time passes, it draws nothing
        sim.battery.settled_s[d[dead]] = np.maximum(sim.battery.settled_s[d[dead]], to_s[dead])
        going = going[sim.battery.settled_s[d] < now_s[going]]
    return died & ~sim.battery.alive[devices]  # one that died and charged again lives


def _drain(
    sim: Simulation, devices: np.ndarray, now_s: np.ndarray | float, rounds: tuple,
    trace: Trace, mains: bool = False,
) -> np.ndarray:
    """``FleetBattery.settle`` with its tail pieces and dropouts in ``trace``."""
    settled = sim.battery.settle(devices, now_s, mains)
    if len(settled.tail_devices):
        node, edge = trace_nodes(sim, settled.tail_devices)
        trace.extend("tail", node, edge, settled.tail_from_s, settled.tail_to_s,
                     *_at(rounds, settled.tail_at), 0, settled.tail_j)
    record_dropouts(sim, devices[settled.died], _at(rounds, settled.died), trace)
    return settled.died


def charge(
    sim: Simulation, devices: np.ndarray, from_s: np.ndarray, to_s: np.ndarray,
    rounds: tuple, trace: Trace | None = None,
) -> None:
    """Plugged-in ``devices`` charge from ``from_s`` to ``to_s``: a ``charge`` event for each
    that stored energy, with the joules stored as negative ``energy_j``."""
    stored_j, until_s = sim.battery.charge(devices, from_s, to_s)
    took = stored_j > 0
    if took.any():
        node, edge = trace_nodes(sim, devices[took])
        (sim.trace if trace is None else trace).extend(
            "charge", node, edge, from_s[took], until_s[took], *_at(rounds, took), 0,
            -stored_j[took])


def record_changes(
    sim: Simulation, devices: np.ndarray, now_s: np.ndarray | float, rounds: tuple,
    trace: Trace,
) -> None:
    """``online`` and ``offline`` instants of ``devices`` since they were last recorded."""
    if isinstance(sim.availability.model, Always):
        return
    from_s = sim.reported_s[devices]
    where, when, rising = sim.availability.changes(devices, from_s, now_s)
    sim.reported_s[devices] = np.maximum(from_s, now_s)
    for kind, mask in (("online", rising), ("offline", ~rising)):
        node, edge = trace_nodes(sim, devices[where[mask]])
        trace.extend(kind, node, edge, when[mask], when[mask], *_at(rounds, where[mask]))


def _at(rounds: tuple, index: np.ndarray) -> tuple:
    """The rounds of the devices at ``index``: a pair for all stays as it is."""
    return tuple(r[index] if isinstance(r, np.ndarray) else r for r in rounds)


def trace_nodes(sim: Simulation, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trace node and edge numbers of ``devices`` (``Simulation.device_node`` / ``edge_node``)."""
    edges = sim.topo.edge_of[devices]
    return sim.device_node(devices), np.where(edges < 0, -1, sim.edge_node(0) + edges)


def record_dropouts(
    sim: Simulation, devices: np.ndarray, rounds: tuple, trace: Trace | None = None
) -> np.ndarray:
    """Record a ``dropout`` at each dead device's empty instant; return those instants."""
    died_s = sim.battery.died_s[devices]
    if not len(devices):
        return died_s
    node, edge = trace_nodes(sim, devices)
    (sim.trace if trace is None else trace).extend("dropout", node, edge, died_s, died_s,
                                                   *rounds)
    return died_s
