"""The shared links of a run and the routes over them; transfers as flows, with a link log.

Every link is full duplex: its two directions are two links of the solver. A device reaches
its edge over its private access link (a per-flow cap) and its edge's ``cell``; an edge
reaches the cloud over its ``backhaul`` and the cloud's ``core``. Cloud-only flows go from
a device to the cloud over all four. ``flows.solve`` plays each batch of transfers; the
``LinkLog`` keeps what every shared link carried, for ``links.csv`` and the trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hierfl.scenario import TopologyConfig
from hierfl.sim.flows import Solution, solve

UP, DOWN = 0, 1
DIRECTIONS = ("up", "down")


def bytes_per_s(bandwidth_kbps: float | np.ndarray) -> float | np.ndarray:
    """A link's capacity in bytes/s from its bandwidth in kbps (10^3 bit/s).

    >>> bytes_per_s(8)
    1000.0
    """
    return bandwidth_kbps * 1000 / 8


@dataclass(frozen=True)
class Links:
    """The shared links, numbered for the solver: names, capacities, and who uses which.

    ``cell[e, d]``, ``backhaul[e, d]`` and ``core[d]`` are link numbers for edge ``e`` and
    direction ``d`` (``UP`` towards the cloud, ``DOWN`` away from it); -1 where a scenario
    has no such link. Latencies are one-way seconds (0 where there is no link). The per-edge
    arrays have one more row, of no links, for edge -1 (a device under the cloud itself).
    """

    names: list[str]
    kind: list[str]
    edge: np.ndarray
    direction: list[str]
    bandwidth_kbps: np.ndarray
    cell: np.ndarray
    backhaul: np.ndarray
    core: np.ndarray
    cell_s: np.ndarray
    backhaul_s: np.ndarray
    core_s: float

    @classmethod
    def build(cls, topology: TopologyConfig, edges: list[str]) -> Links:
        """Cells and backhauls per edge, then the core, each as an up and a down link."""
        names, kinds, owners, directions, kbps = [], [], [], [], []

        def add(name: str, kind: str, owner: int, bandwidth_kbps: float) -> np.ndarray:
            first = len(names)
            for direction in DIRECTIONS:
                names.append(f"{name} {kind} {direction}")
                kinds.append(kind)
                owners.append(owner)
                directions.append(direction)
                kbps.append(bandwidth_kbps)
            return np.array([first, first + 1])

        n = len(edges)
        cell, backhaul = np.full((n + 1, 2), -1), np.full((n + 1, 2), -1)
        cell_s, backhaul_s = np.zeros(n + 1), np.zeros(n + 1)
        for e, name in enumerate(edges):
            config = topology.cell_of(e)
            if config is not None:
                cell[e] = add(name, "cell", e, config.bandwidth_kbps)
                cell_s[e] = config.latency_ms / 1000
            config = topology.backhaul_of(e)
            backhaul[e] = add(name, "backhaul", e, config.bandwidth_kbps)
            backhaul_s[e] = config.latency_ms / 1000
        core, core_s = np.full(2, -1), 0.0
        if topology.core is not None:
            core = add("cloud", "core", -1, topology.core.bandwidth_kbps)
            core_s = topology.core.latency_ms / 1000
        return cls(
            names, kinds, np.array(owners, dtype=np.int64), directions,
            np.array(kbps, dtype=np.float64), cell, backhaul, core, cell_s, backhaul_s, core_s,
        )

    @property
    def capacity_bytes_s(self) -> np.ndarray:
        """Each link's capacity, bytes/s."""
        return bytes_per_s(self.bandwidth_kbps)

    def device_paths(
        self, edge_of: np.ndarray, direction: int, to_cloud: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shared links and their latency (s) between devices under ``edge_of`` and their
        aggregator: the edge over its cell, or (``to_cloud``) the cloud over cell, backhaul
        and core. A device without an edge (-1) reaches the cloud over the core only."""
        cell, latency_s = self.cell[edge_of, direction], self.cell_s[edge_of]
        if not to_cloud:
            return cell[:, None], latency_s
        backhaul = self.backhaul[edge_of, direction]
        core = np.full(len(edge_of), self.core[direction])
        paths = np.column_stack([cell, backhaul, core])
        return paths, latency_s + self.backhaul_s[edge_of] + self.core_s

    def edge_paths(self, edges: np.ndarray, direction: int) -> tuple[np.ndarray, np.ndarray]:
        """Shared links and latency (s) between ``edges`` and the cloud: backhaul, core."""
        core = np.full(len(edges), self.core[direction])
        paths = np.column_stack([self.backhaul[edges, direction], core])
        return paths, self.backhaul_s[edges] + self.core_s


@dataclass
class LinkLog:
    """What each shared link carried: bytes, flows, and its load over time (steps)."""

    links: Links
    carried_bytes: np.ndarray = field(init=False)
    flows: np.ndarray = field(init=False)
    steps: list[np.ndarray] = field(default_factory=list)  # rows (link, t_start, t_end, load)

    def __post_init__(self) -> None:
        self.carried_bytes = np.zeros(len(self.links.names))
        self.flows = np.zeros(len(self.links.names), dtype=np.int64)

    def add(
        self,
        solution: Solution,
        paths: np.ndarray,
        sent_bytes: np.ndarray | None = None,
        counted: np.ndarray | None = None,
        until_s: float = np.inf,
    ) -> None:
        """Keep one solved batch up to ``until_s``: each flow's bytes on each link of its
        path (``sent_bytes``, by default all it sent), the flows ``counted`` (by default
        all), and the load steps before ``until_s``."""
        on = paths >= 0
        sent = solution.sent_bytes if sent_bytes is None else sent_bytes
        np.add.at(self.carried_bytes, paths[on], np.broadcast_to(sent[:, None], paths.shape)[on])
        if counted is not None:
            on = on & counted[:, None]
        np.add.at(self.flows, paths[on], 1)
        times, load = solution.times_s, solution.load_bytes_s
        step, link = np.nonzero(load > 0)
        step, link = step[times[step] < until_s], link[times[step] < until_s]
        if len(step):
            self.steps.append(np.column_stack([link, times[step],
                                               np.minimum(times[step + 1], until_s),
                                               load[step, link]]))

    def load_table(self) -> pd.DataFrame:
        """Load steps: ``link`` carried ``load_bytes_s`` from ``t_start`` to ``t_end``."""
        rows = np.concatenate(self.steps) if self.steps else np.zeros((0, 4))
        capacity = self.links.capacity_bytes_s
        link = rows[:, 0].astype(np.int64)
        table = pd.DataFrame(
            {
                "link": pd.Categorical.from_codes(link, categories=self.links.names),
                "t_start": rows[:, 1],
                "t_end": rows[:, 2],
                "load_bytes_s": rows[:, 3],
                "utilisation": rows[:, 3] / capacity[link] if len(link) else rows[:, 3],
            }
        )
        return table.sort_values(["t_start", "link"], kind="stable", ignore_index=True)

    def table(self, sim_time_s: float) -> pd.DataFrame:
        """``links.csv``: one row per shared link and direction, with its totals."""
        steps = self.load_table()
        codes = steps["link"].cat.codes.to_numpy()
        seconds = (steps["t_end"] - steps["t_start"]).to_numpy()
        n = len(self.links.names)
        busy_s = np.bincount(codes, weights=seconds, minlength=n)
        peak = np.zeros(n)
        np.maximum.at(peak, codes, steps["utilisation"].to_numpy())
        capacity = self.links.capacity_bytes_s
        with np.errstate(invalid="ignore", divide="ignore"):
            busy_use = np.where(busy_s > 0, self.carried_bytes / (capacity * busy_s), 0.0)
        run_use = self.carried_bytes / (capacity * sim_time_s) if sim_time_s > 0 else 0.0 * peak
        edges = self.links.edge
        return pd.DataFrame(
            {
                "link": self.links.names,
                "kind": self.links.kind,
                "edge": [f"edge-{e}" if e >= 0 else "" for e in edges],
                "direction": self.links.direction,
                "bandwidth_kbps": self.links.bandwidth_kbps,
                "bytes": self.carried_bytes.round().astype(np.int64),
                "flows": self.flows,
                "busy_s": busy_s,
                "utilisation_mean": run_use,
                "utilisation_busy": busy_use,
                "utilisation_peak": peak,
            }
        )


def transfer(
    log: LinkLog,
    start_s: np.ndarray,
    size_bytes: np.ndarray | float,
    cap_bytes_s: np.ndarray | float,
    paths: np.ndarray,
    latency_s: np.ndarray,
    stop_s: np.ndarray | None = None,
) -> Solution:
    """Flows that begin at ``start_s``, wait their path latency, then send at max-min rates.

    Returns the solver's Solution (absolute times; a flow that stops ends at its ``stop_s``);
    the batch is kept in ``log``.
    """
    n = len(start_s)
    size = np.broadcast_to(np.asarray(size_bytes, dtype=np.float64), (n,))
    cap = np.broadcast_to(np.asarray(cap_bytes_s, dtype=np.float64), (n,))
    solution = solve(start_s + latency_s, size, cap, paths, log.links.capacity_bytes_s, stop_s)
    log.add(solution, paths)
    return solution


def merge_intervals(start_s: np.ndarray, end_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of intervals ``[start_s[i], end_s[i]]``, as sorted disjoint intervals.

    >>> merge_intervals(np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0, 6.0]))
    (array([0., 5.]), array([3., 6.]))
    """
    if not len(start_s):
        return start_s, end_s
    order = np.argsort(start_s, kind="stable")
    start_s, end_s = start_s[order], np.maximum.accumulate(end_s[order])
    new = np.r_[True, start_s[1:] > end_s[:-1]]
    last = np.r_[np.flatnonzero(new)[1:] - 1, len(start_s) - 1]
    return start_s[new], end_s[last]
