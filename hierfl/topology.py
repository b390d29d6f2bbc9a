"""Scenario -> NetworkX graph of cloud, edges and devices; routes as lists of hops."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from hierfl.scenario import DeviceGroup, Scenario

CLOUD = "cloud"
Hop = tuple[float, float]  # (bandwidth_kbps, latency_ms)


def interleave_groups(groups: tuple[DeviceGroup, ...]) -> list[str]:
    """Profiles of the fleet, numbered by cycling through the groups (the seed's ``i % 3``).

    >>> groups = (DeviceGroup(profile="mcu", count=3), DeviceGroup(profile="soc", count=1))
    >>> interleave_groups(groups)
    ['mcu', 'soc', 'mcu', 'mcu']
    """
    remaining = [group.count for group in groups]
    profiles: list[str] = []
    while any(remaining):
        for index, group in enumerate(groups):
            if remaining[index]:
                remaining[index] -= 1
                profiles.append(group.profile)
    return profiles


def assign_edges(n_devices: int, n_edges: int, how: str) -> list[int]:
    """Edge index of each device: ``i % n_edges`` or contiguous blocks; -1 without edges.

    >>> assign_edges(5, 2, "round_robin"), assign_edges(5, 2, "block")
    ([0, 1, 0, 1, 0], [0, 0, 0, 1, 1])
    """
    if n_edges == 0:
        return [-1] * n_devices
    if how == "block":
        return [i * n_edges // n_devices for i in range(n_devices)]
    return [i % n_edges for i in range(n_devices)]


@dataclass
class Topology:
    """The graph plus the fleet's order: device names, profiles and edge indices."""

    graph: nx.Graph
    devices: list[str]
    profiles: list[str]
    device_edge: list[int]
    edges: list[str]
    _routes: dict[tuple[str, str], tuple[Hop, ...]] = field(default_factory=dict, repr=False)

    def parent(self, device: int) -> str:
        """The node a device's access link reaches: its edge, or the cloud without edges."""
        edge = self.device_edge[device]
        return CLOUD if edge < 0 else self.edges[edge]

    def hops(self, source: str, target: str) -> tuple[Hop, ...]:
        """Links on the lowest-latency path, as (bandwidth_kbps, latency_ms).

        A node with a single link (a device) always leaves through it, so its route is
        that link plus its neighbour's route: one search per neighbour, not per device.
        """
        key = (source, target)
        if key not in self._routes:
            self._routes[key] = self._search(source, target)
        return self._routes[key]

    def _search(self, source: str, target: str) -> tuple[Hop, ...]:
        graph = self.graph
        if source != target and graph.degree(source) == 1:
            (via,) = graph[source]
            return (_link(graph, source, via), *self.hops(via, target))
        if source != target and graph.degree(target) == 1:
            (via,) = graph[target]
            return (*self.hops(source, via), _link(graph, via, target))
        path = nx.shortest_path(graph, source, target, weight="latency_ms")
        return tuple(_link(graph, u, v) for u, v in zip(path, path[1:], strict=False))


def _link(graph: nx.Graph, u: str, v: str) -> Hop:
    return (graph[u][v]["bandwidth_kbps"], graph[u][v]["latency_ms"])


def build_topology(scenario: Scenario) -> Topology:
    """Cloud, edges under it over the backhaul, devices under edges over their access links."""
    profiles = interleave_groups(scenario.devices)
    width = len(str(len(profiles) - 1))
    devices = [f"{profile}-{i:0{width}d}" for i, profile in enumerate(profiles)]
    topo = scenario.topology
    edges = [f"edge-{e}" for e in range(topo.edges)]
    device_edge = assign_edges(len(devices), topo.edges, topo.assign)

    graph = nx.Graph()
    graph.add_node(CLOUD, kind="cloud", profile=topo.cloud_profile)
    backhaul = topo.backhaul
    for edge in edges:
        graph.add_node(edge, kind="edge", profile=topo.edge_profile)
        graph.add_edge(
            edge, CLOUD, bandwidth_kbps=backhaul.bandwidth_kbps, latency_ms=backhaul.latency_ms
        )
    for name, profile_name, edge in zip(devices, profiles, device_edge, strict=True):
        profile = scenario.profile(profile_name)
        graph.add_node(name, kind="device", profile=profile_name)
        parent = CLOUD if edge < 0 else edges[edge]
        graph.add_edge(
            name, parent, bandwidth_kbps=profile.bandwidth_kbps, latency_ms=profile.latency_ms
        )
    return Topology(graph, devices, profiles, device_edge, edges)
