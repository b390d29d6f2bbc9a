"""The simulated clock: causality of events, determinism, hand-timed runs, memory skips."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import timing_scenarios

import hierfl
from hierfl.results import Result
from hierfl.scenario import Scenario

INTERVALS = ("download", "compute", "upload", "tail")
RUN_LONG = ("idle",)  # an infrastructure node's idle draw spans the whole run
DEVICE_WORK = ("download", "compute", "upload", "tail", "dropout", "late", "nic_tx", "nic_rx")
AFTER_MODEL = ("download", "compute", "upload", "skip", "edge_aggregate", "edge_upload")
TOL = 1e-12


def kinds(events: pd.DataFrame) -> pd.Series:
    return events["kind"].astype(str)


def names(column: pd.Series) -> pd.Series:
    """Node names as plain strings, '-' where there is none (the cloud's edge)."""
    return column.astype(object).where(column.notna(), "-")


def check_causality(result: Result, scenario: Scenario) -> None:
    """The trace's causality rules (uploads end before the aggregation using them, ...)."""
    events = result.events.assign(kind=kinds(result.events), node=names(result.events["node"]),
                                  edge=names(result.events["edge"]))
    idle = events[events["kind"].isin(RUN_LONG)]
    assert (idle["t_start"] == 0).all() and (idle["t_end"] == result.summary["sim_time_s"]).all()
    events = events[~events["kind"].isin(RUN_LONG)]
    hierarchical = scenario.topology.mode == "hierarchical"
    assert (events["t_end"] >= events["t_start"]).all(), "an interval ends before it starts"
    assert (events["t_start"] >= 0).all()

    clouds = events[events["kind"] == "cloud_aggregate"].set_index("cloud_round")
    assert clouds.index.is_unique
    aggregates = events[events["kind"] == "edge_aggregate"].set_index(
        ["edge", "cloud_round", "edge_round"])
    assert aggregates.index.is_unique
    drops = events[events["kind"] == "dropout"]
    assert drops["node"].is_unique, "a device drops out once"
    died = drops.set_index("node")["t_start"]

    # a device's upload ends before the aggregation that uses it starts; a late one (its
    # ``late`` instant is its end) ends after the aggregation of its round began
    lates = events[events["kind"] == "late"].set_index(["node", "cloud_round", "edge_round"])
    assert lates.index.is_unique and (lates["t_start"] == lates["t_end"]).all()
    for row in events[events["kind"] == "upload"].itertuples():
        dropped_here = row.node in died.index and math.isclose(died[row.node], row.t_end)
        late = (row.node, row.cloud_round, row.edge_round) in lates.index
        if late:
            assert lates.loc[(row.node, row.cloud_round, row.edge_round), "t_start"] == row.t_end
        if row.bytes == 0 and scenario.aggregation.trigger != "all":
            assert dropped_here, row  # lost to an empty battery, maybe after the aggregation
            continue
        key = (row.edge, row.cloud_round, row.edge_round) if hierarchical else row.cloud_round
        aggregations = aggregates if hierarchical else clouds
        if key not in aggregations.index:
            assert dropped_here or late, f"upload without aggregation: {row}"
            continue
        if late:
            assert row.t_end >= aggregations.loc[key, "t_start"] - TOL, row
        else:
            assert row.t_end <= aggregations.loc[key, "t_start"] + TOL, row
    assert len(lates) == 0 or scenario.aggregation.trigger != "all"

    # every edge_upload ends before the cloud aggregation of its round starts
    for row in events[events["kind"] == "edge_upload"].itertuples():
        assert hierarchical
        assert row.t_end <= clouds.loc[row.cloud_round, "t_start"] + TOL, row
    # an edge aggregates before it uploads, in the same cloud round
    for row in events[events["kind"] == "edge_upload"].itertuples():
        mine = aggregates.xs((row.edge, row.cloud_round), level=("edge", "cloud_round"))
        assert len(mine) >= 1 and (mine["t_end"] <= row.t_start + TOL).all()

    # nothing of a cloud round starts before that round's cloud_download at that edge
    if hierarchical:
        downloads = events[events["kind"] == "cloud_download"].set_index(["edge", "cloud_round"])
        assert downloads.index.is_unique
        # offline, online and charge are the device's own state, recorded when settled: not
        # work of the round they are recorded in, so they may precede its start
        state = events["kind"].isin(["offline", "online", "charge"])
        local = events[(events["kind"] != "cloud_download") & (events["edge"] != "-") & ~state]
        for row in local.itertuples():
            key = (row.edge, row.cloud_round)
            assert key in downloads.index, f"event of a round its edge never received: {row}"
            assert row.t_start >= downloads.loc[key, "t_start"] - TOL, row
            if row.kind in AFTER_MODEL:
                assert row.t_start >= downloads.loc[key, "t_end"] - TOL, row
    else:
        assert "cloud_download" not in set(events["kind"])
        assert not (events["kind"].isin(["edge_aggregate", "edge_upload"])).any()

    # a cloud round starts when the previous one is closed, and closes after its events;
    # work a trigger did not wait for (and its edge's NIC time) goes on after the close
    ends = result.rounds.set_index("cloud_round")["sim_time_s"]
    waited = ~events["kind"].isin(DEVICE_WORK) | (scenario.aggregation.trigger == "all")
    for cloud_round, group in events[waited].groupby("cloud_round"):
        assert (group["t_end"] <= ends[cloud_round] + TOL).all()
        if cloud_round > 0:
            assert (group["t_start"] >= ends[cloud_round - 1] - TOL).all()

    # per device, intervals do not overlap; nothing starts after a dropout, and only an
    # update already sent (a delivered upload still crossing relays) may end after it
    for node, group in events[events["kind"].isin(INTERVALS)].groupby("node"):
        group = group.sort_values(["t_start", "t_end"], kind="stable")
        starts, ends_ = group["t_start"].to_numpy(), group["t_end"].to_numpy()
        assert (starts[1:] >= ends_[:-1] - TOL).all(), f"overlapping intervals on {node}"
        if node in died.index:
            assert (starts <= died[node] + TOL).all()
            late = group[group["t_end"] > died[node] + TOL]
            assert ((late["kind"] == "upload") & (late["bytes"] > 0)).all(), late

    # battery energy by category is the energy of the device's events
    devices = result.devices.set_index("device")
    for category, kind in (("compute", "compute"), ("tx", "upload"), ("rx", "download"),
                           ("tail", "tail")):
        spent = events[events["kind"] == kind].groupby("node")["energy_j"].sum()
        spent = spent.reindex(devices.index, fill_value=0.0)
        np.testing.assert_allclose(devices[f"energy_{category}_j"], spent, rtol=1e-9, atol=1e-12)
    assert set(devices.index[devices["dropped"]]) == set(died.index)

    # the tables add up: round energy and bytes are the devices' and the events'
    assert result.rounds["energy_j"].sum() == pytest.approx(devices["energy_j"].sum(), rel=1e-9)
    assert result.summary["energy_j"] == pytest.approx(devices["energy_j"].sum(), rel=1e-9)
    uplink = events["kind"].isin(["upload", "edge_upload"])
    assert result.rounds["bytes_up"].sum() == events.loc[uplink, "bytes"].sum()
    assert result.summary["devices_dropped"] == len(died)


def reduced(path, rounds: int = 3, *more: str) -> Scenario:
    return hierfl.load_scenario(path, [f"run.cloud_rounds={rounds}", *more])


def test_causality_tutorial066(scenario_files):
    """The seed's experiment (3 cloud rounds) keeps every causality rule."""
    scenario = reduced(next(p for p in scenario_files if p.stem == "tutorial066"))
    result = hierfl.run(scenario)
    assert len(result.rounds) == 3
    assert set(kinds(result.events)) >= {"cloud_download", "download", "compute", "upload",
                                          "edge_aggregate", "edge_upload", "cloud_aggregate"}
    check_causality(result, scenario)


def test_causality_tutorial066_two_edge_rounds(scenario_files):
    """With two edge rounds per cloud round the rules still hold, edge round by edge round."""
    path = next(p for p in scenario_files if p.stem == "tutorial066")
    scenario = reduced(path, 2, "run.edge_rounds=2", "run.learning=false")
    result = hierfl.run(scenario)
    check_causality(result, scenario)
    aggregates = result.events[kinds(result.events) == "edge_aggregate"]
    assert sorted(set(aggregates["edge_round"])) == [0, 1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=timing_scenarios())
def test_causality_on_random_topologies(scenario):
    """On random small fleets and topologies every causality rule holds, and reruns agree; a
    run stops before its cloud_rounds only when no device can ever train again."""
    result = hierfl.run(scenario)
    assert 1 <= len(result.rounds) <= scenario.run.cloud_rounds
    if len(result.rounds) < scenario.run.cloud_rounds:  # ended: no device can train again
        devices = result.devices
        skipped = result.events.loc[result.events["kind"] == "skip", "node"].astype(str)
        hopeless = devices["dropped"] | (devices["battery"] < scenario.selection.min_battery)
        assert (hopeless | devices["device"].isin(skipped)).all()
    check_causality(result, scenario)
    pd.testing.assert_frame_equal(result.events, hierfl.run(scenario).events)


def test_same_seed_same_events(scenario_files):
    """The same scenario and seed give an identical events table, learning included."""
    scenario = reduced(next(p for p in scenario_files if p.stem == "tutorial066"), 2)
    first, second = hierfl.run(scenario), hierfl.run(scenario)
    pd.testing.assert_frame_equal(first.events, second.events)
    pd.testing.assert_frame_equal(first.rounds, second.rounds)
    pd.testing.assert_frame_equal(first.devices, second.devices)


def test_different_seed_different_events(scenario_files):
    """Another seed draws other sample counts, hence other compute times and events."""
    path = next(p for p in scenario_files if p.stem == "tutorial066")
    first = hierfl.run(reduced(path, 2, "run.learning=false"))
    other = hierfl.run(reduced(path, 2, "run.learning=false", "seed=43"))
    assert not first.events.equals(other.events)
    assert not np.array_equal(first.events["t_end"].to_numpy(), other.events["t_end"].to_numpy())


def test_every_scenario_file_runs(scenario_files):
    """Each scenarios/*.toml loads and runs on 2 cloud rounds, keeping causality."""
    for path in scenario_files:
        scenario = reduced(path, 2)
        result = hierfl.run(scenario)
        assert len(result.rounds) == 2, path
        assert result.rounds["sim_time_s"].is_monotonic_increasing, path
        assert np.isfinite(result.rounds["accuracy"]).all() == scenario.run.learning, path
        check_causality(result, scenario)


def test_device_without_memory_is_skipped(make_scenario, weak_profile):
    """A device whose memory cannot hold training gets a skip each edge round, never trains.

    compact needs 4 * (2 * 4522 + 8 * 266) = 44_688 bytes; 40 KiB = 40_960 bytes is short.
    """
    small = {**weak_profile, "memory_kb": 40, "battery_mah": 500.0}
    scenario = make_scenario(
        run={"cloud_rounds": 2, "edge_rounds": 2},
        devices=[{"profile": "small", "count": 1}, {"profile": "mcu", "count": 1}],
        profiles={"small": small},
    )
    result = hierfl.run(scenario)
    mine = result.events[result.events["node"] == "small-0"]
    assert kinds(mine).tolist() == ["skip"] * 4
    assert sorted(zip(mine["cloud_round"], mine["edge_round"], strict=True)) == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    assert (mine["t_start"] == mine["t_end"]).all()
    devices = result.devices.set_index("device")
    assert devices.at["small-0", "rounds_trained"] == 0
    assert devices.at["mcu-1", "rounds_trained"] == 4
    assert devices.at["small-0", "energy_compute_j"] == 0.0
    check_causality(result, scenario)


# Hand timing of the 1-edge, 1-mcu run: compact has 4522 parameters (18_088 dense bytes) and
# 8832 forward FLOPs; the device holds 40 samples and trains 2 local epochs.
DENSE_BYTES = 4 * 4522  # 18_088
BACKHAUL_S = 20 / 1000 + 8 * 18_088 / (100_000 * 1000)  # 0.02 + 0.00144704 = 0.02144704
ACCESS_S = 50 / 1000 + 8 * 18_088 / (100 * 1000)  # 0.05 + 1.44704 = 1.49704
COMPUTE_S = 3 * 8832 * 40 * 2 / (100 * 1e6)  # 2_119_680 FLOP at 100 MFLOP/s = 0.0211968
AGGREGATE_S = 2 * 4522 * 1 / (1_400_000 * 1e6)  # one update on the edge server: 6.46e-9


def test_timing_pinned_by_hand_hierarchical(make_scenario):
    """One edge, one mcu: every event starts and ends where the formulas put it."""
    scenario = make_scenario(run={"cloud_rounds": 1}, devices=[{"profile": "mcu", "count": 1}])
    result = hierfl.run(scenario)
    assert result.summary["model"]["n_params"] == 4522
    assert result.summary["model"]["forward_flops"] == 8832
    events = result.events.assign(kind=kinds(result.events))
    spans = [
        ("cloud_download", BACKHAUL_S, DENSE_BYTES, 12.0),
        ("download", ACCESS_S, DENSE_BYTES, 0.3),
        ("compute", COMPUTE_S, 0, 0.2),
        ("upload", ACCESS_S, DENSE_BYTES, 0.95),
        ("edge_aggregate", AGGREGATE_S, 0, 30.0),
        ("edge_upload", BACKHAUL_S, DENSE_BYTES, 12.0),
        ("cloud_aggregate", AGGREGATE_S, 0, 30.0),
    ]
    infrastructure = events[events["kind"].isin(["nic_tx", "nic_rx", "idle"])]
    events = events.drop(infrastructure.index)
    assert events["kind"].tolist() == [kind for kind, *_ in spans]
    now = 0.0
    for (kind, seconds, nbytes, power_w), row in zip(spans, events.itertuples(), strict=True):
        assert row.t_start == pytest.approx(now, rel=1e-12, abs=1e-15), kind
        assert row.t_end == pytest.approx(now + seconds, rel=1e-12), kind
        assert row.bytes == nbytes, kind
        assert row.energy_j == pytest.approx(power_w * seconds, rel=1e-9), kind
        now += seconds
    assert result.rounds["sim_time_s"].iloc[0] == pytest.approx(now, rel=1e-12)
    # idle: 0.0008 W whenever the radio and CPU rest (the whole run but 2 access hops + compute)
    device = result.devices.iloc[0]
    idle_s = now - 2 * ACCESS_S - COMPUTE_S
    assert device["energy_idle_j"] == pytest.approx(0.0008 * idle_s, rel=1e-9)
    assert device["energy_j"] == pytest.approx(
        0.3 * ACCESS_S + 0.2 * COMPUTE_S + 0.95 * ACCESS_S + 0.0008 * idle_s, rel=1e-9)
    # the NICs (12 W each way) work while their own flows are active; both nodes idle at 10 W
    nic = infrastructure.assign(node=infrastructure["node"].astype(str))
    nic = nic.set_index(["node", "kind"])["energy_j"]
    assert nic[("cloud", "nic_tx")] == pytest.approx(12.0 * BACKHAUL_S, rel=1e-9)
    assert nic[("edge-0", "nic_tx")] == pytest.approx(12.0 * ACCESS_S, rel=1e-9)
    assert nic[("edge-0", "nic_rx")] == pytest.approx(12.0 * ACCESS_S, rel=1e-9)
    assert nic[("cloud", "nic_rx")] == pytest.approx(12.0 * BACKHAUL_S, rel=1e-9)
    assert nic[("cloud", "idle")] == nic[("edge-0", "idle")] == pytest.approx(10.0 * now)


def test_timing_pinned_by_hand_cloud_only(make_scenario):
    """cloud_only: one flow per transfer over access and backhaul, cut-through: the path's
    latency (50 + 20 ms), then the bytes at the slower link's rate; the radio works the
    whole flow."""
    scenario = make_scenario(run={"cloud_rounds": 1}, devices=[{"profile": "mcu", "count": 1}],
                             topology={"mode": "cloud_only", "edges": 1})
    result = hierfl.run(scenario)
    events = result.events.assign(kind=kinds(result.events))
    device = events[events["node"].astype(str) == "mcu-0"]
    assert device["kind"].tolist() == ["download", "compute", "upload"]
    download, compute, upload = device.itertuples()
    flow_s = (50 + 20) / 1000 + 8 * DENSE_BYTES / (100 * 1000)  # 1.51704
    assert download.t_start == 0.0
    assert download.t_end == pytest.approx(flow_s, rel=1e-12)
    assert download.energy_j == pytest.approx(0.3 * flow_s, rel=1e-9)
    assert compute.t_end == pytest.approx(flow_s + COMPUTE_S, rel=1e-12)
    assert upload.t_end == pytest.approx(2 * flow_s + COMPUTE_S, rel=1e-12)
    assert upload.energy_j == pytest.approx(0.95 * flow_s, rel=1e-9)
    (aggregate,) = events[events["kind"] == "cloud_aggregate"].itertuples()
    assert aggregate.t_start == upload.t_end
    assert aggregate.t_end == pytest.approx(upload.t_end + AGGREGATE_S, rel=1e-12)
    assert not events["kind"].isin(["cloud_download", "edge_upload", "edge_aggregate"]).any()
    assert result.rounds["bytes_backhaul"].tolist() == [2 * DENSE_BYTES]


def test_compressed_upload_is_shorter(make_scenario):
    """int8 updates shrink the upload to the codec's bytes, and its time with them.

    compact has 6 tensors (3 weights, 3 biases) and 4522 elements; int8 sends 1 byte per
    element plus 8 per tensor: 4522 + 6 * 8 = 4570 bytes, in 0.05 + 8 * 4570 / 100_000 s.
    """
    scenario = make_scenario(run={"cloud_rounds": 1}, devices=[{"profile": "mcu", "count": 1}],
                             compression={"quantize": "int8"})
    events = hierfl.run(scenario).events
    upload = events[kinds(events) == "upload"].iloc[0]
    assert upload["bytes"] == 4522 + 6 * 8
    assert upload["t_end"] - upload["t_start"] == pytest.approx(
        0.05 + 8 * 4570 / 100_000, rel=1e-9)
