"""Scenario -> cloud, edges and devices, and each device's access link.

Cloud and edges live in a NetworkX graph (the backbone, with the backhauls); each device
has exactly one link, to its edge (or to the cloud without edges), so the fleet's access
links are numpy columns beside the graph: a million devices cost a few arrays, not a
million graph nodes. ``Topology.graph`` still gives the whole graph, built on demand. The
shared links that flows contend for (cells, backhauls, core) are ``sim.network.Links``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hierfl.scenario import DeviceGroup, Scenario

CLOUD = "cloud"
Hop = tuple[float, float]  # (bandwidth_kbps, latency_ms)
STREAM_ASSIGN = 5  # random stream of assign = "random" (sim.engine: 1-4, sim.variability: 11-12)
STRINGS = pd.Index([""]).dtype  # the dtype pandas gives strings: str from pandas 3, object before


def string_index(values: Sequence[str]) -> pd.Index:
    """``values`` as an Index of the dtype pandas gives strings, like ``pd.Index(values)``.

    Converted through Arrow: a million names take a third of the time ``pd.Index`` takes.

    >>> string_index(["cloud", "edge-0"]).tolist()
    ['cloud', 'edge-0']
    """
    return _from_arrow(pa.array(values, type=pa.string()))


def _from_arrow(strings: pa.Array) -> pd.Index:
    return pd.Index(strings.to_pandas(), dtype=STRINGS)  # no copy from pandas 3


def interleave_groups(groups: tuple[DeviceGroup, ...]) -> list[str]:
    """Profiles of the fleet, numbered by cycling through the groups (the seed's ``i % 3``).

    >>> groups = (DeviceGroup(profile="mcu", count=3), DeviceGroup(profile="soc", count=1))
    >>> interleave_groups(groups)
    ['mcu', 'soc', 'mcu', 'mcu']
    """
    names = np.array([group.profile for group in groups], dtype=object)
    return names[interleave_index([group.count for group in groups])].tolist()


def interleave_index(counts: Sequence[int]) -> np.ndarray:
    """Group number of each device when devices are dealt one per group in turn.

    Item ``k`` of a group goes out in turn ``k``, after every item of earlier turns and the
    turn-``k`` items of earlier groups that still have one.

    >>> interleave_index([3, 1]).tolist()
    [0, 1, 0, 0]
    """
    counts = np.asarray(counts, dtype=np.int64)
    index = np.empty(int(counts.sum()), dtype=np.int64)
    for group, count in enumerate(counts):
        turn = np.arange(count)
        before = sum(np.minimum(other, turn) for other in counts)
        earlier = sum(other > turn for other in counts[:group])
        index[before + earlier] = group
    return index


def assign_edges(
    n_devices: int,
    n_edges: int,
    how: str | Sequence[int],
    kinds: Sequence[int] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Edge index of each device (-1 without edges), by ``topology.assign``.

    - ``round_robin``: device i below edge ``i % n_edges``;
    - ``block``: contiguous blocks of devices in fleet order;
    - ``interleave``: the devices of each kind (``kinds``: profile codes) dealt out in
      turn, kind after kind, so every edge gets each profile's count over the edges, give
      or take one;
    - ``random``: the devices dealt out in a random order seeded by ``seed``;
    - a sequence: the edge of each device, as given.

    Every rule but the last gives edges whose sizes differ by at most one.

    >>> assign_edges(5, 2, "round_robin").tolist(), assign_edges(5, 2, "block").tolist()
    ([0, 1, 0, 1, 0], [0, 0, 0, 1, 1])
    >>> assign_edges(4, 2, "interleave", kinds=[0, 1, 0, 1]).tolist()
    [0, 0, 1, 1]
    """
    if n_edges == 0:
        return np.full(n_devices, -1, dtype=np.int64)
    device = np.arange(n_devices, dtype=np.int64)
    if not isinstance(how, str):
        return np.asarray(how, dtype=np.int64)
    if how == "block":
        return device * n_edges // n_devices
    if how == "round_robin":
        return device % n_edges
    if how == "interleave":
        kinds = np.zeros(n_devices, dtype=np.int64) if kinds is None else np.asarray(kinds)
        order = np.argsort(kinds, kind="stable")
    else:
        order = np.random.default_rng([seed, STREAM_ASSIGN]).permutation(n_devices)
    edge_of = np.empty(n_devices, dtype=np.int64)
    edge_of[order] = device % n_edges
    return edge_of


def device_names(profiles: Sequence[str]) -> pd.Index:
    """``profile-number``, the number zero-padded so that names sort in fleet order.

    Built by Arrow, column-wise: a Python loop takes several times longer on a million
    devices, and the tables take their names from this Index without converting them again.

    >>> device_names(["mcu"] * 9 + ["soc"])[-2:].tolist()
    ['mcu-8', 'soc-9']
    >>> device_names(["mcu"] * 10 + ["soc"])[-2:].tolist()
    ['mcu-09', 'soc-10']
    """
    kinds = pd.Categorical(profiles)  # a Categorical is kept as it is: nothing to compare
    prefixes = pa.array(kinds.categories.tolist(), pa.string()).take(kinds.codes)
    width = len(str(len(profiles) - 1))
    numbers = pc.utf8_lpad(pa.array(np.arange(len(profiles))).cast(pa.string()), width, "0")
    return _from_arrow(pc.binary_join_element_wise(prefixes, numbers, "-"))


class Topology:
    """The backbone graph plus the fleet's order: names, profiles, edges and access links.

    ``graph`` holds the cloud, the edges and their backhauls; a device it does not hold
    reaches ``parent(i)`` over its access link, ``access_kbps[i]`` / ``access_ms[i]``
    (``access_up_kbps`` and ``access_down_kbps`` per direction, ``access_kbps`` unless
    given). Without those columns the devices' links are read from ``graph`` (a graph
    built by hand).

    Names come as lists (``devices``, ``profiles``, ``edges``) and, for the tables, as
    columns: ``names`` (an Index), ``profile_of`` (codes into ``profile_names``) and
    ``edge_of`` (into ``edges``; -1: the cloud).
    """

    def __init__(
        self,
        graph: nx.Graph,
        devices: Sequence[str],
        profiles: Sequence[str],
        edge_of: Sequence[int],
        edges: list[str],
        access_kbps: np.ndarray | None = None,
        access_ms: np.ndarray | None = None,
        access_up_kbps: np.ndarray | None = None,
        access_down_kbps: np.ndarray | None = None,
    ) -> None:
        self.backbone = graph
        self.names = pd.Index(devices, dtype=STRINGS)  # an Index of strings is kept as it is
        kinds = pd.Categorical(profiles)  # so is a Categorical
        self.profile_names, self.profile_of = kinds.categories, kinds.codes
        self.edges = edges
        self.edge_of = np.asarray(edge_of, dtype=np.int64).reshape(-1)
        if access_kbps is None or access_ms is None:
            links = [graph[name][self.parent(i)] for i, name in enumerate(self.names)]
            access_kbps = [link["bandwidth_kbps"] for link in links]
            access_ms = [link["latency_ms"] for link in links]
        self.access_kbps = np.asarray(access_kbps, dtype=np.float64).reshape(-1)
        self.access_ms = np.asarray(access_ms, dtype=np.float64).reshape(-1)
        self.access_up_kbps = self.access_kbps if access_up_kbps is None else access_up_kbps
        self.access_down_kbps = self.access_kbps if access_down_kbps is None else access_down_kbps
        order = np.argsort(self.edge_of, kind="stable")
        bounds = np.searchsorted(self.edge_of[order], np.arange(len(edges) + 1))
        self._members = np.split(order, bounds[1:-1]) if edges else []
        self._graph = graph if len(self.names) == 0 or self.names[0] in graph else None

    @cached_property
    def devices(self) -> list[str]:
        """The device names as a list (built on first use: a million take 0.1 s)."""
        return self.names.tolist()

    @cached_property
    def profiles(self) -> list[str]:
        """Each device's profile name, as a list (built on first use)."""
        return np.asarray(self.profile_names, dtype=object)[self.profile_of].tolist()

    def parent(self, device: int) -> str:
        """The node a device's access link reaches: its edge, or the cloud without edges."""
        edge = self.edge_of[device]
        return CLOUD if edge < 0 else self.edges[edge]

    def members(self, edge: int) -> np.ndarray:
        """The devices under ``edge``, in index order."""
        return self._members[edge]

    def access(self, device: int) -> Hop:
        """A device's access link, as (bandwidth_kbps, latency_ms)."""
        return (float(self.access_kbps[device]), float(self.access_ms[device]))

    @property
    def graph(self) -> nx.Graph:
        """The whole graph, devices and their access links included (built once, on demand)."""
        if self._graph is None:
            graph = self.backbone.copy()
            for i, (name, profile) in enumerate(zip(self.devices, self.profiles, strict=True)):
                graph.add_node(name, kind="device", profile=profile)
                bandwidth_kbps, latency_ms = self.access(i)
                graph.add_edge(
                    name, self.parent(i), bandwidth_kbps=bandwidth_kbps, latency_ms=latency_ms
                )
            self._graph = graph
        return self._graph


def build_topology(scenario: Scenario) -> Topology:
    """Cloud, edges under it over the backhaul, devices under edges over their access links."""
    groups = scenario.devices
    group_of = interleave_index([group.count for group in groups])
    profiles = pd.Categorical([group.profile for group in groups]).take(group_of)
    devices = device_names(profiles)
    topo = scenario.topology
    edges = [f"edge-{e}" for e in range(topo.edges)]
    edge_of = assign_edges(len(devices), topo.edges, topo.assign, profiles.codes, scenario.seed)

    graph = nx.Graph()
    graph.add_node(CLOUD, kind="cloud", profile=topo.cloud_profile)
    for e, edge in enumerate(edges):
        backhaul = topo.backhaul_of(e)
        graph.add_node(edge, kind="edge", profile=topo.edge_profile)
        graph.add_edge(
            edge, CLOUD, bandwidth_kbps=backhaul.bandwidth_kbps, latency_ms=backhaul.latency_ms
        )
    links = [scenario.profile(group.profile) for group in groups]

    def column(get) -> np.ndarray:
        return np.array([get(link) for link in links], dtype=np.float64)[group_of]

    return Topology(
        graph, devices, profiles, edge_of, edges,
        column(lambda p: p.bandwidth_kbps), column(lambda p: p.latency_ms),
        column(lambda p: p.up_kbps), column(lambda p: p.down_kbps),
    )
