"""An edge round's devices as one cohort: phases over numpy arrays, exact dropout instants.

The devices an edge selected are simulated together: their download, compute and upload
intervals, battery draws and dropout instants come from the cost formulas over arrays, their
events go to the trace in bulk, and the edge's process waits, with one timeout per phase
of the device that ends last (three at most), until the last upload ends or the last
device drops out; then the updates that arrived are trained (in one batch with every job
pending) and encoded. That is exact because the devices of a cohort share nothing (no
shared links yet) and payload sizes depend on shapes alone. ``device.device_round`` is the
same edge round with one SimPy process per device; it goes through the same ``run_phase``,
so the phase and battery rules exist once, and tests hold the two paths to the same events.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from hierfl.costs import compute_s, train_flops
from hierfl.sim import network
from hierfl.sim.battery import per_device
from hierfl.sim.engine import Simulation, Update
from hierfl.sim.network import Transfer
from hierfl.topology import CLOUD

PHASES = {  # kind -> (battery category, Fleet column of the power drawn)
    "download": ("rx", "power_rx_w"),
    "compute": ("compute", "power_compute_w"),
    "upload": ("tx", "power_tx_w"),
}

_PER_DEVICE: ContextVar[bool] = ContextVar("hierfl_per_device", default=False)


@contextmanager
def per_device_processes() -> Iterator[None]:
    """Run edge rounds with one SimPy process per device (``device.device_round``)."""
    token = _PER_DEVICE.set(True)
    try:
        yield
    finally:
        _PER_DEVICE.reset(token)


def in_cohorts() -> bool:
    """Whether edge rounds run as cohorts: always, unless ``per_device_processes`` is on."""
    return not _PER_DEVICE.get()


@dataclass(frozen=True)
class PhaseEnd:
    """How one phase ended for each device that entered it.

    ``wait_s``: seconds from the phase's start until the device moves on: the phase's
    length when ``done``, else until its dropout instant (0 when that had already passed).
    """

    done: np.ndarray
    wait_s: np.ndarray


def play(
    sim: Simulation,
    devices: np.ndarray,
    model: torch.Tensor | None,
    down_bytes: int,
    rounds: tuple[int, int],
) -> Generator:
    """The edge's side of a cohort (a SimPy process body): simulate, wait, collect.

    Uploads take ``uplink_bytes``, the size every codec derives from shapes alone, so the
    whole round is simulated up front. The edge waits out the phases of the device that
    ends last, one timeout per phase, so the clock adds the very same floats that device's
    own process would (a single timeout of ``end - now`` can miss ``end`` by an ulp). Only
    then are the updates that arrived trained and encoded: every job submitted until then,
    at any edge, trains in the same batch, and jobs of devices that dropped out never train.
    Returns the Updates that arrived, in the order of ``devices``.
    """
    jobs = [sim.submit(int(d), model, *rounds) for d in devices] if sim.learning else None
    arrived, waits_s = simulate(sim, devices, sim.env.now, down_bytes, sim.uplink_bytes, rounds)
    if jobs is not None:
        for k in np.setdiff1d(np.arange(len(devices)), arrived):
            sim.trainer.cancel(jobs[k])
    for wait_s in waits_s:
        yield sim.env.timeout(wait_s)
    senders, samples = devices[arrived], sim.fleet.samples[devices[arrived]]
    if jobs is None:
        return Arrivals(senders, samples)
    payloads = sim.encode([jobs[k].result() for k in arrived], model)
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
    sim: Simulation,
    devices: np.ndarray,
    start_s: float,
    down_bytes: int,
    up_bytes: int,
    rounds: tuple[int, int],
) -> tuple[np.ndarray, list[float]]:
    """Download, compute and upload for ``devices`` from ``start_s``, recorded in the trace.

    Returns the positions (in ``devices``) of those whose update arrived, and the waits (one
    per phase it entered, none zero) after which the last device's process ends: its upload
    done, or dropped out.
    """
    phases = (("download", down_bytes), ("compute", 0), ("upload", up_bytes))
    waits_s = np.zeros((len(phases), len(devices)))
    now_s = np.full(len(devices), start_s, dtype=np.float64)
    going = np.arange(len(devices))
    for k, (kind, nbytes) in enumerate(phases):
        if len(going) == 0:
            break
        end = run_phase(sim, devices[going], now_s[going], kind, nbytes, rounds)
        waits_s[k, going] = end.wait_s
        now_s[going] += end.wait_s
        going = going[end.done]
    if len(devices) == 0:
        return going, []
    last = int(np.argmax(now_s))
    return going, [float(w) for w in waits_s[:, last] if w > 0]


def run_phase(
    sim: Simulation,
    devices: np.ndarray,
    start_s: np.ndarray,
    kind: str,
    nbytes: np.ndarray | int,
    rounds: tuple[int, int],
) -> PhaseEnd:
    """Record one phase of ``devices`` starting at ``start_s``; drain their batteries.

    The radio (or CPU) works from ``start_s + radio_lead_s`` for ``radio_s``; idle drain is
    settled up to then. A battery that empties before stops the device at that instant: its
    interval ends there, delivers 0 bytes, and a ``dropout`` follows.
    """
    category, column = PHASES[kind]
    span = phase_span(sim, devices, kind, nbytes)
    n = len(devices)
    total_s, radio_s, nbytes = (per_device(x, n) for x in (span.total_s, span.radio_s, nbytes))
    radio_start_s = start_s + span.radio_lead_s
    done = ~sim.battery.idle_deaths(devices, radio_start_s)
    busy = slice(None) if done.all() else np.flatnonzero(done)
    working = devices[busy]
    power_w = getattr(sim.fleet, column)[working]
    lasted_s = sim.battery.draw_many(
        working, radio_start_s[busy], radio_s[busy], power_w, category)
    cut = lasted_s < radio_s[busy]
    end_s, sent = start_s[busy] + total_s[busy], nbytes[busy]
    if cut.any():
        end_s = np.where(cut, radio_start_s[busy] + lasted_s, end_s)
        sent = np.where(cut, 0, sent)
        done[busy] = ~cut
    node, edge = trace_nodes(sim, working)
    sim.trace.extend(kind, node, edge, start_s[busy], end_s, *rounds, sent, power_w * lasted_s)
    wait_s = total_s.copy()
    if not done.all():
        dropped = ~done
        died_s = record_dropouts(sim, devices[dropped], rounds)
        began_s = start_s[dropped]
        wait_s[dropped] = np.where(died_s > began_s, died_s - began_s, 0.0)
    return PhaseEnd(done, wait_s)


def phase_span(
    sim: Simulation, devices: np.ndarray, kind: str, nbytes: np.ndarray | int
) -> Transfer:
    """How long each device's phase lasts, and when and how long its radio or CPU works."""
    if kind == "compute":
        samples = sim.fleet.samples[devices]
        flops = train_flops(sim.stats.forward_flops, samples, sim.scenario.run.local_epochs)
        seconds = compute_s(flops, sim.fleet.compute_mflops[devices])
        return Transfer(seconds, seconds, 0.0)
    return transfer_span(sim, devices, nbytes, upward=kind == "upload")


def transfer_span(
    sim: Simulation, devices: np.ndarray, nbytes: np.ndarray | int, upward: bool
) -> Transfer:
    """Transfers between ``devices`` and their aggregator (their edge, or the cloud)."""
    if sim.scenario.topology.mode == "hierarchical":  # one edge's devices
        return _route_span(sim, devices, nbytes, upward)
    edge_of = sim.topo.edge_of[devices]
    edges = np.unique(edge_of)
    if len(edges) == 1:
        return _route_span(sim, devices, nbytes, upward)
    spans = np.empty((3, len(devices)))
    nbytes = per_device(nbytes, len(devices))
    for edge in edges:
        mine = edge_of == edge
        span = _route_span(sim, devices[mine], nbytes[mine], upward)
        for row, values in enumerate((span.total_s, span.radio_s, span.radio_lead_s)):
            spans[row, mine] = values
    return Transfer(*spans)


def _route_span(
    sim: Simulation, devices: np.ndarray, nbytes: np.ndarray | int, upward: bool
) -> Transfer:
    """Transfers of devices under one parent: over their access links and the backbone."""
    topo = sim.topo
    hierarchical = sim.scenario.topology.mode == "hierarchical"
    other = topo.parent(int(devices[0])) if hierarchical else CLOUD
    hops = topo.device_route(devices, other, outward=upward)
    return network.upload(nbytes, hops) if upward else network.download(nbytes, hops)


def trace_nodes(sim: Simulation, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trace node and edge numbers of ``devices`` (``Simulation.device_node`` / ``edge_node``)."""
    edges = sim.topo.edge_of[devices]
    return sim.device_node(devices), np.where(edges < 0, -1, sim.edge_node(0) + edges)


def record_dropouts(sim: Simulation, devices: np.ndarray, rounds: tuple[int, int]) -> np.ndarray:
    """Record a ``dropout`` at each dead device's empty instant; return those instants."""
    died_s = sim.battery.died_s[devices]
    if not len(devices):
        return died_s
    node, edge = trace_nodes(sim, devices)
    sim.trace.extend("dropout", node, edge, died_s, died_s, *rounds)
    return died_s
