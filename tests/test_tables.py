"""The tables' names: built column-wise, they equal what pandas makes of plain lists."""

from __future__ import annotations

import pandas as pd
import pytest

import hierfl
from hierfl.topology import CLOUD, build_topology, device_names, string_index
from hierfl.trace import Trace

FLEET = [{"profile": "soc", "count": 2}, {"profile": "mcu", "count": 3},
         {"profile": "soc", "count": 4}]


def test_string_index_equals_pd_index():
    """string_index gives the Index pd.Index gives a list of strings, dtype included."""
    values = ["cloud", "edge-0", "mcu-1"]
    pd.testing.assert_index_equal(string_index(values), pd.Index(values), exact=True)
    pd.testing.assert_index_equal(device_names(["a", "b"]), pd.Index(["a-0", "b-1"]), exact=True)


@pytest.mark.parametrize(("topology", "edges"), [
    ({"mode": "hierarchical", "edges": 2, "assign": "block"}, 2),
    ({"mode": "cloud_only", "edges": 0}, 0),
])
def test_tables_name_nodes_as_plain_lists_would(make_scenario, topology, edges):
    """Node categories, and the devices table's device, profile and edge columns, equal
    pandas built from lists of names; the summary groups by profile name, in name order."""
    scenario = make_scenario(topology=topology, devices=FLEET)
    topo = build_topology(scenario)
    result = hierfl.run(scenario)
    parents = [CLOUD if e < 0 else topo.edges[e] for e in topo.edge_of]
    assert len(topo.edges) == edges and topo.profiles == [
        "soc", "mcu", "soc", "soc", "mcu", "soc", "mcu", "soc", "soc"]

    nodes = pd.Index([CLOUD, *topo.edges, *topo.devices])
    for column in ("node", "edge"):
        pd.testing.assert_index_equal(result.events[column].cat.categories, nodes, exact=True)
    devices = result.devices
    expected = pd.DataFrame({"device": topo.devices, "profile": topo.profiles, "edge": parents})
    pd.testing.assert_frame_equal(devices[["device", "profile", "edge"]], expected)

    infrastructure = result.events["node"].isin([CLOUD, *topo.edges])
    assert result.summary["infrastructure_energy_j"] == result.events.loc[
        infrastructure, "energy_j"].sum()
    by_name = devices.groupby("profile")["device"].size()
    assert [(row["profile"], row["devices"]) for row in result.summary["per_profile"]] == list(
        by_name.items())


def test_trace_keeps_an_index_of_names_as_given():
    """A trace built on an Index keeps that very Index (a million names are not copied)."""
    names = pd.Index(["cloud", "edge-0", "d0"])
    assert Trace(names).nodes is names
    assert Trace(["cloud", "d0"]).nodes.tolist() == ["cloud", "d0"]
    assert Trace(names).to_frame().empty
