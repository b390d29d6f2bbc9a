"""Scenario -> cloud, edges and devices; routes as lists of hops.

Cloud and edges live in a NetworkX graph (the backbone, where routes are searched); each
device has exactly one link, to its edge (or to the cloud without edges), so the fleet's
access links are numpy columns beside the graph: a million devices cost a few arrays, not
a million graph nodes. ``Topology.graph`` still gives the whole graph, built on demand.
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
Hop = tuple[float, float]  # (bandwidth_kbps, latency_ms); a cohort's may hold arrays
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


def assign_edges(n_devices: int, n_edges: int, how: str) -> np.ndarray:
    """Edge index of each device: ``i % n_edges`` or contiguous blocks; -1 without edges.

    >>> assign_edges(5, 2, "round_robin").tolist(), assign_edges(5, 2, "block").tolist()
    ([0, 1, 0, 1, 0], [0, 0, 0, 1, 1])
    """
    if n_edges == 0:
        return np.full(n_devices, -1, dtype=np.int64)
    device = np.arange(n_devices, dtype=np.int64)
    if how == "block":
        return device * n_edges // n_devices
    return device % n_edges


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

    ``graph`` routes between its nodes; a device it does not hold reaches ``parent(i)``
    over its access link, ``access_kbps[i]`` / ``access_ms[i]``. Without those columns the
    devices' links are read from ``graph`` (a graph built by hand).

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
        order = np.argsort(self.edge_of, kind="stable")
        bounds = np.searchsorted(self.edge_of[order], np.arange(len(edges) + 1))
        self._members = np.split(order, bounds[1:-1]) if edges else []
        self._routes: dict[tuple[str, str], tuple[Hop, ...]] = {}
        self._numbers: dict[str, int] | None = None
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

    def device_route(self, devices: np.ndarray, other: str, outward: bool) -> tuple[Hop, ...]:
        """Hops between ``devices`` (all under one parent) and node ``other``, as columns.

        ``outward``: from the devices to ``other``, else from ``other`` to them. The access
        hop holds one bandwidth and one latency per device; the others are shared.
        """
        parent = self.parent(int(devices[0]))
        access = (self.access_kbps[devices], self.access_ms[devices])
        if outward:
            return (access, *self.hops(parent, other))
        return (*self.hops(other, parent), access)

    def hops(self, source: str, target: str) -> tuple[Hop, ...]:
        """Links on the lowest-latency path, as (bandwidth_kbps, latency_ms).

        A device has a single link, so its route is that link plus its parent's route;
        routes between backbone nodes are searched once and remembered.
        """
        if source == target:
            return ()
        device = self._number(source)
        if device is not None:
            return (self.access(device), *self.hops(self.parent(device), target))
        device = self._number(target)
        if device is not None:
            return (*self.hops(source, self.parent(device)), self.access(device))
        key = (source, target)
        if key not in self._routes:
            self._routes[key] = self._search(source, target)
        return self._routes[key]

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

    def _number(self, name: str) -> int | None:
        """The device called ``name`` when the backbone does not hold it; None otherwise."""
        if name in self.backbone:
            return None
        if self._numbers is None:
            self._numbers = {device: i for i, device in enumerate(self.devices)}
        return self._numbers.get(name)

    def _search(self, source: str, target: str) -> tuple[Hop, ...]:
        graph = self.backbone
        if graph.degree(source) == 1:
            (via,) = graph[source]
            return (_link(graph, source, via), *self.hops(via, target))
        if graph.degree(target) == 1:
            (via,) = graph[target]
            return (*self.hops(source, via), _link(graph, via, target))
        path = nx.shortest_path(graph, source, target, weight="latency_ms")
        return tuple(_link(graph, u, v) for u, v in zip(path, path[1:], strict=False))


def _link(graph: nx.Graph, u: str, v: str) -> Hop:
    return (graph[u][v]["bandwidth_kbps"], graph[u][v]["latency_ms"])


def build_topology(scenario: Scenario) -> Topology:
    """Cloud, edges under it over the backhaul, devices under edges over their access links."""
    groups = scenario.devices
    group_of = interleave_index([group.count for group in groups])
    profiles = pd.Categorical([group.profile for group in groups]).take(group_of)
    devices = device_names(profiles)
    topo = scenario.topology
    edges = [f"edge-{e}" for e in range(topo.edges)]
    edge_of = assign_edges(len(devices), topo.edges, topo.assign)

    graph = nx.Graph()
    graph.add_node(CLOUD, kind="cloud", profile=topo.cloud_profile)
    backhaul = topo.backhaul
    for edge in edges:
        graph.add_node(edge, kind="edge", profile=topo.edge_profile)
        graph.add_edge(
            edge, CLOUD, bandwidth_kbps=backhaul.bandwidth_kbps, latency_ms=backhaul.latency_ms
        )
    links = [scenario.profile(group.profile) for group in groups]
    kbps = np.array([link.bandwidth_kbps for link in links], dtype=np.float64)
    ms = np.array([link.latency_ms for link in links], dtype=np.float64)
    return Topology(graph, devices, profiles, edge_of, edges, kbps[group_of], ms[group_of])
