"""An aggregator's devices at work: planned when handed out, committed once they are over.

PLANNING is pure arithmetic over the jobs an aggregator (an edge, or the cloud in
cloud_only) has handed out and not yet committed: every phase's end, from the jobs' start
times and battery snapshots, with the flows of both directions solved by its two
``Channel``s. COMMITTING makes a job's events part of the run's trace once the job is over
(its upload ended, or its battery emptied) at the current time.

When the aggregator hands out new work at ``t``, nothing before ``t`` changes, so the jobs
still open are planned again from their snapshots together with the new ones: phases that
ended before ``t`` come out the same (the channels return their flows as they ended), and
what ends after ``t`` is worked out anew. A job's device is busy until it is committed: no
one selects it, and no settling touches its battery, which holds the latest plan's state.
With the ``all`` trigger every job is over before the next is handed out, so each plan is
the single batch the cohort model always solved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hierfl.sim import cohort
from hierfl.sim.channel import Channel
from hierfl.sim.cohort import CLOUD_NODE, Stage
from hierfl.sim.engine import Simulation
from hierfl.sim.network import merge_intervals
from hierfl.trace import KIND, Trace

NIC_OF = {"download": "nic_tx", "upload": "nic_rx"}  # the aggregator sends, then receives


@dataclass(frozen=True)
class Jobs:
    """Work handed out: per job its device, start, rounds, key, and whether it came late."""

    device: np.ndarray
    handed_s: np.ndarray
    cloud_round: np.ndarray
    edge_round: np.ndarray
    key: np.ndarray
    late: np.ndarray

    @classmethod
    def empty(cls) -> Jobs:
        ints = np.zeros(0, dtype=np.int64)
        return cls(ints, np.zeros(0), ints, ints, ints, np.zeros(0, dtype=bool))

    def take(self, mask: np.ndarray) -> Jobs:
        return Jobs(*(getattr(self, name)[mask] for name in JOB_FIELDS))

    def __add__(self, other: Jobs) -> Jobs:
        return Jobs(*(np.concatenate([getattr(self, n), getattr(other, n)]) for n in JOB_FIELDS))

    def __len__(self) -> int:
        return len(self.key)


JOB_FIELDS = ("device", "handed_s", "cloud_round", "edge_round", "key", "late")


class Work:
    """The open jobs of one aggregator, their snapshots, their plan and its channels."""

    def __init__(self, sim: Simulation, edge: int) -> None:
        self.sim, self.edge = sim, edge
        self.node = CLOUD_NODE if edge < 0 else sim.edge_node(edge)
        self.down, self.up = Channel(sim.link_log), Channel(sim.link_log)
        self.jobs = Jobs.empty()
        self.snapshot = snapshot(sim, np.zeros(0, dtype=np.int64))
        self.trace = Trace(sim.trace.nodes)
        self.arrive_s, self.done_s = np.zeros(0), np.zeros(0)
        self.covered = {kind: (np.zeros(0), np.zeros(0)) for kind in NIC_OF.values()}
        self.next_key = 0
        self.receive: Callable[[Jobs, np.ndarray], np.ndarray] | None = None
        """Told, as they are committed, of the jobs over (not marked late) and when each
        update arrived (inf: lost): returns the mask of those to discard as late (the
        buffered trigger's rule)."""

    def hand_out(
        self, devices: np.ndarray, rounds: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Send the model to ``devices`` now and plan all open work again.

        Returns, for the new jobs, when each update arrives (inf: never) and when each
        device is done (its upload ended or its battery emptied).
        """
        sim, now = self.sim, float(self.sim.env.now)
        n = len(devices)
        keys = np.arange(self.next_key, self.next_key + n, dtype=np.int64)
        self.next_key += n
        new = Jobs(devices, np.full(n, now), np.full(n, rounds[0]), np.full(n, rounds[1]),
                   keys, np.zeros(n, dtype=bool))
        taken = snapshot(sim, devices)
        restore(sim, self.snapshot)
        self.snapshot = {name: np.concatenate([self.snapshot[name], taken[name]])
                         for name in taken}
        self.jobs = self.jobs + new
        for channel in (self.down, self.up):
            channel.begin(now, self.jobs.key)
        self.trace = Trace(sim.trace.nodes)
        jobs = self.jobs
        stage = Stage(jobs.device, jobs.key, jobs.cloud_round, jobs.edge_round, self.trace,
                      self.down, self.up)
        going, end_s = cohort.simulate(sim, stage, jobs.handed_s, sim.down_bytes(jobs.device),
                                       sim.up_bytes(jobs.device))
        self.done_s = end_s
        self.arrive_s = np.full(len(jobs), np.inf)
        self.arrive_s[going] = end_s[going]
        sim.busy[devices] = True
        first = len(jobs) - n  # the new jobs come last (``[-n:]`` would be all when n = 0)
        return self.arrive_s[first:], self.done_s[first:]

    def mark_late(self, devices: np.ndarray) -> None:
        """The updates of ``devices`` (open jobs) will not be aggregated: late when they arrive."""
        late = np.isin(self.jobs.device, devices)
        self.jobs = Jobs(*(getattr(self.jobs, n) for n in JOB_FIELDS[:-1]), self.jobs.late | late)

    def commit(self, now_s: float) -> None:
        """Make the jobs over by ``now_s`` part of the run: their events, the aggregator's
        NIC time, a ``late`` instant for each update that arrived but is not aggregated."""
        over = self.done_s <= now_s
        if over.any() and self.receive is not None:
            self._receive(over)
        if over.any():
            self._record(self.jobs.take(over))
            keep = ~over
            for channel in (self.down, self.up):
                channel.forget(self.jobs.key[over])
            self.snapshot = {name: value[keep] for name, value in self.snapshot.items()}
            self.jobs, self.arrive_s, self.done_s = (
                self.jobs.take(keep), self.arrive_s[keep], self.done_s[keep])
        if not len(self.jobs):  # no flow can change any more: the link log is complete
            for channel in (self.down, self.up):
                channel.begin(now_s, self.jobs.key)

    def _receive(self, over: np.ndarray) -> None:
        """Hand the jobs ``over`` to ``receive``, in arrival order (ties in hand-out order,
        the lost last); mark late those it discards."""
        ended = np.flatnonzero(over & ~self.jobs.late)
        ended = ended[np.argsort(self.arrive_s[ended], kind="stable")]
        if len(ended):
            discard = self.receive(self.jobs.take(ended), self.arrive_s[ended])
            self.mark_late(self.jobs.device[ended[discard]])

    @property
    def open(self) -> bool:
        """Whether some job is still open."""
        return bool(len(self.jobs))

    def _record(self, jobs: Jobs) -> None:
        sim = self.sim
        rows = self.trace.rows
        nodes = sim.device_node(jobs.device)
        mine = rows[np.isin(rows["node"], nodes)]
        sim.trace.extend_rows(mine)
        sim.busy[jobs.device] = False
        arrive_s = self.arrive_s[np.isin(self.jobs.key, jobs.key)]
        arrived = np.isfinite(arrive_s)
        sim.history.add(jobs.device[arrived], arrive_s[arrived] - jobs.handed_s[arrived])
        late = jobs.late & arrived
        if late.any():
            node, edge = cohort.trace_nodes(sim, jobs.device[late])
            sim.trace.extend("late", node, edge, arrive_s[late], arrive_s[late],
                             jobs.cloud_round[late], jobs.edge_round[late],
                             sim.up_bytes(jobs.device[late]))
            np.add.at(sim.late, jobs.device[late], 1)
        for phase, nic in NIC_OF.items():
            self._record_nic(mine[mine["kind"] == KIND[phase]], nic)

    def _record_nic(self, rows: np.ndarray, kind: str) -> None:
        """The aggregator's NIC time for these flows: per round, their union less what
        earlier commits already counted."""
        sim = self.sim
        topology = sim.scenario.topology
        profile = sim.scenario.profile(
            topology.edge_profile if self.node > CLOUD_NODE else topology.cloud_profile)
        rounds = np.unique(rows[["cloud_round", "edge_round"]])
        for cloud_round, edge_round in rounds.tolist():
            group = rows[(rows["cloud_round"] == cloud_round) & (rows["edge_round"] == edge_round)]
            start_s, end_s = merge_intervals(group["t_start"], group["t_end"])
            covered_s, covered_e = self.covered[kind]
            start_s, end_s = uncovered(start_s, end_s, covered_s, covered_e)
            cohort.record_nic(sim, self.node, kind, start_s, end_s, profile,
                              (cloud_round, edge_round))
            self.covered[kind] = merge_intervals(np.r_[covered_s, start_s], np.r_[covered_e, end_s])
        self._forget_covered(kind)

    def _forget_covered(self, kind: str) -> None:
        """Keep only the counted intervals a later commit's flows can overlap."""
        since_s = self.jobs.handed_s.min() if len(self.jobs) else self.sim.env.now
        covered_s, covered_e = self.covered[kind]
        keep = covered_e > since_s
        self.covered[kind] = covered_s[keep], covered_e[keep]


def commit_all(sim: Simulation) -> None:
    """Commit, at every aggregator, the work that is over by now."""
    for work in sim.works.values():
        work.commit(sim.env.now)


def next_free_s(sim: Simulation, devices: np.ndarray) -> float:
    """When the first of ``devices`` that is at work will be done (inf: none is at work)."""
    soonest = math.inf
    for work in sim.works.values():
        mine = np.isin(work.jobs.device, devices)
        if mine.any():
            soonest = min(soonest, float(work.done_s[mine].min()))
    return soonest


def snapshot(sim: Simulation, devices: np.ndarray) -> dict[str, np.ndarray]:
    """What planning ``devices``' jobs changes, copied: their battery rows and how far their
    availability changes are recorded."""
    return sim.battery.snapshot(devices) | {"reported_s": sim.reported_s[devices].copy()}


def restore(sim: Simulation, taken: dict[str, np.ndarray]) -> None:
    """Put back what a ``snapshot`` copied."""
    sim.battery.restore(taken)
    sim.reported_s[taken["devices"]] = taken["reported_s"]


def uncovered(
    start_s: np.ndarray, end_s: np.ndarray, covered_s: np.ndarray, covered_e: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The parts of disjoint sorted intervals not inside disjoint sorted ``covered`` ones.

    >>> uncovered(np.array([0.0, 5.0]), np.array([4.0, 9.0]), np.array([1.0, 6.0]),
    ...           np.array([2.0, 10.0]))
    (array([0., 2., 5.]), array([1., 4., 6.]))
    """
    if not len(covered_s):
        return start_s, end_s
    out_s, out_e = [], []
    for s, e in zip(start_s.tolist(), end_s.tolist(), strict=True):
        for c_s, c_e in zip(covered_s.tolist(), covered_e.tolist(), strict=True):
            if c_e <= s or c_s >= e:
                continue
            if c_s > s:
                out_s.append(s)
                out_e.append(c_s)
            s = max(s, c_e)
            if s >= e:
                break
        if s < e:
            out_s.append(s)
            out_e.append(e)
    return np.array(out_s), np.array(out_e)


def work_of(sim: Simulation, edge: int) -> Work:
    """The Work of the aggregator ``edge`` (-1: the cloud), made on first use."""
    if edge not in sim.works:
        sim.works[edge] = Work(sim, edge)
    return sim.works[edge]
