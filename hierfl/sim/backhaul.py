"""Edge-cloud model transfers at any time, for clouds that do not wait for every edge.

Under ``cloud_trigger = "all"`` every cloud round's downloads start together and the uploads
are one batch (``edge.backhaul``). Under ``deadline`` or ``buffered`` an edge's transfer can
start while others of earlier rounds are still under way, and all of them share the core as
max-min says. A ``Backhaul`` keeps one ``Channel`` per direction: each new transfer re-plans
the unfinished ones with it (``Channel.begin`` then ``solve``), and a transfer's process waits
until the end its latest plan gives. Each edge's path is its own backhaul link and the core,
and an edge has at most one transfer per direction at a time, so a new flow can only lower
the core's fair share: an end moves later, never earlier, and waiting for the latest end
is exact.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from hierfl.sim.channel import Channel, Flows, joined
from hierfl.sim.cohort import CLOUD_NODE, record_nic, until
from hierfl.sim.engine import Simulation
from hierfl.sim.network import DOWN, UP, merge_intervals
from hierfl.sim.work import uncovered

KINDS = {"cloud_download": (DOWN, "nic_tx"), "edge_upload": (UP, "nic_rx")}


class Backhaul:
    """The edges' transfers to and from the cloud, planned together per direction."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.channels = {DOWN: Channel(sim.link_log), UP: Channel(sim.link_log)}
        self.live: dict[int, dict[int, Flows]] = {DOWN: {}, UP: {}}
        self.end_s: dict[int, float] = {}
        self.covered = {DOWN: (np.zeros(0), np.zeros(0)), UP: (np.zeros(0), np.zeros(0))}
        self.next_key = 0

    def transfer(self, edge: int, kind: str, nbytes: int, rounds: tuple[int, int]) -> Generator:
        """Move ``nbytes`` between ``edge`` and the cloud from now (a SimPy process body);
        record the event and the cloud's NIC time. Returns when it ended."""
        sim, direction = self.sim, KINDS[kind][0]
        now = float(sim.env.now)
        key, self.next_key = self.next_key, self.next_key + 1
        paths, latency_s = sim.links.edge_paths(np.array([edge]), direction)
        flow = Flows(np.array([key]), np.array([now]), now + latency_s, np.array([float(nbytes)]),
                     np.array([np.inf]), paths, np.array([np.inf]))
        live = self.live[direction]
        live[key] = flow
        self._plan(direction)
        while self.end_s[key] > sim.env.now:
            yield from until(sim.env, self.end_s[key])
        end_s = self.end_s.pop(key)
        del live[key]
        self.channels[direction].forget(np.array([key]))
        self._record(edge, kind, now, end_s, nbytes, rounds)
        return end_s

    def close(self) -> None:
        """The run is over: every load step goes to the link log."""
        for direction, channel in self.channels.items():
            channel.begin(np.inf, np.array(list(self.live[direction]), dtype=np.int64))

    def _plan(self, direction: int) -> None:
        """Re-plan every live transfer of ``direction`` from now, the new one included."""
        live = self.live[direction]
        keys = np.array(list(live), dtype=np.int64)
        channel = self.channels[direction]
        channel.begin(float(self.sim.env.now), keys)
        end_s, _ = channel.solve(joined(list(live.values())))
        self.end_s.update(zip(keys.tolist(), end_s.tolist(), strict=True))

    def _record(
        self, edge: int, kind: str, start_s: float, end_s: float, nbytes: int,
        rounds: tuple[int, int],
    ) -> None:
        """The transfer's event, and the cloud NIC's time not counted by an earlier one."""
        sim = self.sim
        direction, nic = KINDS[kind]
        topology = sim.scenario.topology
        edge_profile = sim.scenario.profile(topology.edge_profile)
        power_w = edge_profile.power_rx_w if direction == DOWN else edge_profile.power_tx_w
        node = sim.edge_node(edge)
        sim.trace.record(kind, node, node, start_s, end_s, rounds[0], -1, nbytes,
                         power_w * (end_s - start_s))
        covered_s, covered_e = self.covered[direction]
        begin, finish = uncovered(np.array([start_s]), np.array([end_s]), covered_s, covered_e)
        record_nic(sim, CLOUD_NODE, nic, begin, finish,
                   sim.scenario.profile(topology.cloud_profile), (rounds[0], -1))
        covered_s, covered_e = merge_intervals(np.r_[covered_s, begin], np.r_[covered_e, finish])
        live = self.live[direction].values()
        since_s = min((float(f.phase_s[0]) for f in live), default=end_s)
        keep = covered_e > since_s  # only what a transfer still under way can overlap
        self.covered[direction] = covered_s[keep], covered_e[keep]
