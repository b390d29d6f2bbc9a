"""Scenario -> graph: fleet order, edge assignment, link attributes and lowest-latency routes."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from hierfl.errors import ScenarioError
from hierfl.profiles import BUILTIN_PROFILES
from hierfl.scenario import DeviceGroup
from hierfl.topology import CLOUD, assign_edges, build_topology, interleave_groups

SEED_FLEET = (
    DeviceGroup(profile="mcu", count=7),
    DeviceGroup(profile="soc", count=7),
    DeviceGroup(profile="mobile", count=6),
)


def test_interleave_groups_cycles_like_the_seed():
    """20 devices in groups 7/7/6 get the seed's profile ['mcu', 'soc', 'mobile'][i % 3]."""
    profiles = interleave_groups(SEED_FLEET)
    assert profiles == [["mcu", "soc", "mobile"][i % 3] for i in range(20)]


def test_interleave_groups_uneven():
    """When a group runs out, the cycle goes on over the groups that remain."""
    groups = (DeviceGroup(profile="a", count=1), DeviceGroup(profile="b", count=3))
    assert interleave_groups(groups) == ["a", "b", "b", "b"]
    assert interleave_groups((DeviceGroup(profile="a", count=2),)) == ["a", "a"]


def test_assign_edges():
    """round_robin puts device i on edge i % edges, block in contiguous runs, -1 without edges."""
    assert assign_edges(5, 2, "round_robin").tolist() == [0, 1, 0, 1, 0]
    assert assign_edges(6, 3, "block").tolist() == [0, 0, 1, 1, 2, 2]
    assert assign_edges(5, 2, "block").tolist() == [0, 0, 0, 1, 1]
    assert assign_edges(3, 0, "round_robin").tolist() == [-1, -1, -1]
    assert assign_edges(2, 3, "block").tolist() == [0, 1]


def test_interleave_assignment_balances_profiles():
    """2 profiles over 20 edges: round_robin gives every edge one profile, interleave both.

    40 devices cycle a/b, so round_robin sends the even devices (all 'a') to the even edges;
    interleave deals the 20 'a' devices over the 20 edges, then the 20 'b' devices.
    """
    kinds = [0, 1] * 20
    mixed = {
        how: [sorted({kinds[d] for d in range(40) if edge_of[d] == e}) for e in range(20)]
        for how in ("round_robin", "interleave")
        for edge_of in [assign_edges(40, 20, how, kinds=kinds).tolist()]
    }
    assert all(len(profiles) == 1 for profiles in mixed["round_robin"])
    assert all(profiles == [0, 1] for profiles in mixed["interleave"])


def test_interleave_deals_each_profile_in_turn():
    """Devices sorted by profile (stable) are dealt round robin: 3 a's and 3 b's over 2 edges."""
    kinds = [0, 0, 0, 1, 1, 1]
    # dealing order a0 a1 a2 b3 b4 b5 -> edges 0 1 0 1 0 1
    assert assign_edges(6, 2, "interleave", kinds=kinds).tolist() == [0, 1, 0, 1, 0, 1]
    kinds = [1, 0, 1, 0, 0]
    # sorted: devices 1, 3, 4 (kind 0) then 0, 2 (kind 1) -> edges 0, 1, 0, 1, 0
    assert assign_edges(5, 2, "interleave", kinds=kinds).tolist() == [1, 0, 0, 1, 0]


def test_random_assignment_is_seeded_and_balanced():
    """'random' deals a seeded permutation: reproducible, sizes differ by at most one."""
    first = assign_edges(103, 10, "random", seed=4)
    assert first.tolist() == assign_edges(103, 10, "random", seed=4).tolist()
    assert first.tolist() != assign_edges(103, 10, "random", seed=5).tolist()
    sizes = np.bincount(first, minlength=10)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 103


def test_explicit_assignment_map(make_scenario):
    """A list gives each device's edge in fleet order, as is."""
    assert assign_edges(4, 3, [2, 2, 0, 1]).tolist() == [2, 2, 0, 1]
    scenario = make_scenario(
        topology={"edges": 2, "assign": [1, 1, 0]},
        devices=[{"profile": "mcu", "count": 3}],
    )
    assert build_topology(scenario).edge_of.tolist() == [1, 1, 0]


@pytest.mark.parametrize(
    ("assign", "message"),
    [
        ([0, 2, 1], r"topology.assign: every edge must be in \[0, 1\].*: 2"),
        ([0, 1], "one edge per device \\(3 devices\\): 2 entries"),
        ("spread", "topology.assign"),
    ],
)
def test_bad_assignment_is_refused(make_scenario, assign, message):
    """An edge out of range, a list of the wrong length or an unknown rule: ScenarioError."""
    with pytest.raises(ScenarioError, match=message):
        make_scenario(topology={"edges": 2, "assign": assign},
                      devices=[{"profile": "mcu", "count": 3}])


def test_build_topology_nodes_and_links(make_scenario):
    """Node kinds are cloud/edge/device; device links come from profiles, edge links backhaul."""
    scenario = make_scenario(
        topology={"edges": 2, "backhaul": {"bandwidth_kbps": 7000, "latency_ms": 9}},
        devices=[{"profile": "mcu", "count": 2}, {"profile": "mobile", "count": 2}],
    )
    topo = build_topology(scenario)
    graph = topo.graph
    assert topo.devices == ["mcu-0", "mobile-1", "mcu-2", "mobile-3"]
    assert topo.edges == ["edge-0", "edge-1"]
    assert topo.edge_of.tolist() == [0, 1, 0, 1]
    assert topo.profiles == ["mcu", "mobile", "mcu", "mobile"]
    assert topo.names.tolist() == topo.devices
    kinds = nx.get_node_attributes(graph, "kind")
    assert kinds == {
        "cloud": "cloud", "edge-0": "edge", "edge-1": "edge",
        "mcu-0": "device", "mobile-1": "device", "mcu-2": "device", "mobile-3": "device",
    }
    assert graph.nodes["mobile-1"]["profile"] == "mobile"
    assert graph.number_of_edges() == 2 + 4
    for edge in topo.edges:
        assert graph[edge][CLOUD] == {"bandwidth_kbps": 7000, "latency_ms": 9}
    mcu, mobile = BUILTIN_PROFILES["mcu"], BUILTIN_PROFILES["mobile"]
    assert graph["mcu-0"]["edge-0"] == {"bandwidth_kbps": mcu.bandwidth_kbps,
                                        "latency_ms": mcu.latency_ms}
    assert graph["mobile-3"]["edge-1"] == {"bandwidth_kbps": mobile.bandwidth_kbps,
                                           "latency_ms": mobile.latency_ms}
    assert topo.parent(0) == "edge-0" and topo.parent(3) == "edge-1"


def test_custom_profile_sets_access_link(make_scenario, weak_profile):
    """A device's access link takes its own profile's bandwidth and latency."""
    weak = {**weak_profile, "bandwidth_kbps": 33, "latency_ms": 7}
    scenario = make_scenario(devices=[{"profile": "weak", "count": 1}], profiles={"weak": weak})
    topo = build_topology(scenario)
    assert topo.graph["weak-0"]["edge-0"] == {"bandwidth_kbps": 33, "latency_ms": 7}



def test_cloud_only_without_edges_hangs_devices_under_the_cloud(make_scenario):
    """With edges = 0 devices hang under the cloud, over their access links alone."""
    scenario = make_scenario(topology={"mode": "cloud_only", "edges": 0})
    topo = build_topology(scenario)
    assert topo.edges == [] and topo.edge_of.tolist() == [-1, -1]
    assert topo.parent(0) == CLOUD
    assert topo.graph["mcu-0"][CLOUD]["bandwidth_kbps"] == BUILTIN_PROFILES["mcu"].bandwidth_kbps


@pytest.mark.parametrize("n", [1, 10, 11])
def test_device_names_are_zero_padded(make_scenario, n):
    """Device names carry the profile and a zero-padded index, so they sort in fleet order."""
    topo = build_topology(make_scenario(devices=[{"profile": "mcu", "count": n}]))
    assert topo.devices == sorted(topo.devices)
    assert len(set(topo.devices)) == n
    assert topo.devices[-1] == f"mcu-{n - 1}"
