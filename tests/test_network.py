"""Shared links in whole runs: cells, backhauls and the core shared as flows, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hierfl
from hierfl.sim.network import DOWN, UP, Links, merge_intervals
from hierfl.sim.variability import STREAM_COMPUTE, lognormal

DENSE_BYTES = 4 * 4522  # the compact model, float32: 18_088 bytes
FAST = {  # an mcu-like board with a 1 Mbit/s radio
    "memory_kb": 512, "compute_mflops": 100, "bandwidth_kbps": 1000, "latency_ms": 50,
    "battery_mah": 500.0, "voltage_v": 3.7, "power_compute_w": 0.2, "power_tx_w": 0.95,
    "power_rx_w": 0.3, "power_idle_w": 0.0,
}


def kind_rows(result: hierfl.Result, kind: str) -> pd.DataFrame:
    return result.events[result.events["kind"].astype(str) == kind]


def test_a_cell_shares_its_capacity_among_the_edges_devices(make_scenario):
    """20 mcu (100 kbps each) behind a 1 Mbit/s cell get 50 kbps each; 5 get their own 100.

    Each transfer: access 50 ms + cell 5 ms of latency, then 18_088 bytes at the fair rate.
    """
    cell = {"bandwidth_kbps": 1000, "latency_ms": 5}
    for count, rate_kbps in ((20, 50), (5, 100)):
        scenario = make_scenario(run={"cloud_rounds": 1}, topology={"edges": 1, "cell": cell},
                                 devices=[{"profile": "mcu", "count": count}])
        result = hierfl.run(scenario)
        flow_s = 0.055 + 8 * DENSE_BYTES / (rate_kbps * 1000)
        for kind in ("download", "upload"):
            rows = kind_rows(result, kind)
            assert len(rows) == count
            np.testing.assert_allclose(rows["t_end"] - rows["t_start"], flow_s, rtol=1e-12)
        links = result.links.set_index("link")
        down = links.loc["edge-0 cell down"]
        assert down["bytes"] == count * DENSE_BYTES and down["flows"] == count
        assert down["busy_s"] == pytest.approx(8 * DENSE_BYTES / (rate_kbps * 1000), rel=1e-12)
        assert down["utilisation_peak"] == pytest.approx(count * rate_kbps / 1000, rel=1e-12)


def test_core_holds_one_flow_while_a_radio_holds_the_other(make_scenario):
    """cloud_only over a 300 kbps core: the mcu is held by its 100 kbps radio, the fast board
    by the core, at the 200 kbps the mcu leaves; both wait 50 + 20 ms of latency first."""
    scenario = make_scenario(
        run={"cloud_rounds": 1},
        topology={"mode": "cloud_only", "edges": 1, "core": {"bandwidth_kbps": 300}},
        devices=[{"profile": "mcu", "count": 1}, {"profile": "fast", "count": 1}],
        profiles={"fast": FAST},
    )
    result = hierfl.run(scenario)
    downloads = kind_rows(result, "download").set_index(
        kind_rows(result, "download")["node"].astype(str))
    assert downloads.loc["fast-1", "t_end"] == pytest.approx(0.07 + 8 * DENSE_BYTES / 200_000)
    assert downloads.loc["mcu-0", "t_end"] == pytest.approx(0.07 + 8 * DENSE_BYTES / 100_000)
    core = result.links.set_index("link").loc["cloud core down"]
    assert core["bytes"] == 2 * DENSE_BYTES and core["utilisation_peak"] == pytest.approx(1.0)


def test_cloud_only_devices_share_the_core(make_scenario):
    """Two mcu under two edges share a 100 kbps core: 50 kbps each, after 70 ms latency."""
    scenario = make_scenario(
        run={"cloud_rounds": 1},
        topology={"mode": "cloud_only", "edges": 2, "core": {"bandwidth_kbps": 100}},
    )
    result = hierfl.run(scenario)
    downloads = kind_rows(result, "download")
    np.testing.assert_allclose(downloads["t_end"], 0.07 + 8 * DENSE_BYTES / 50_000, rtol=1e-12)
    assert result.rounds["bytes_backhaul"].iloc[0] == 4 * DENSE_BYTES


def test_an_edge_without_devices_takes_no_part(make_scenario):
    """Of 3 edges, the one without devices receives nothing, sends nothing, only idles."""
    scenario = make_scenario(topology={"edges": 3})
    result = hierfl.run(scenario)
    mine = result.events[result.events["node"].astype(str) == "edge-2"]
    assert mine["kind"].astype(str).tolist() == ["idle"]
    links = result.links.set_index("link")
    assert links.loc["edge-2 backhaul down", "flows"] == 0
    assert links.loc["edge-0 backhaul down", "flows"] == 2  # one per cloud round


def test_edges_share_the_core_on_their_backhauls(make_scenario):
    """Two edges' downloads share a 1 Mbit/s core; each edge's own backhaul is per-edge."""
    scenario = make_scenario(
        run={"cloud_rounds": 1},
        topology={"edges": 2, "core": {"bandwidth_kbps": 1000, "latency_ms": 10},
                  "backhaul": [{"bandwidth_kbps": 100_000, "latency_ms": 20},
                               {"bandwidth_kbps": 400, "latency_ms": 40}]},
    )
    result = hierfl.run(scenario)
    rows = kind_rows(result, "cloud_download").set_index(
        kind_rows(result, "cloud_download")["node"].astype(str))
    # edge-0 sends alone from 0.03 s (2_500 bytes at 125_000 B/s until 0.05 s); from 0.05 s
    # edge-1 is held by its 400 kbps backhaul and edge-0 takes the 600 kbps left on the core
    assert rows.loc["edge-1", "t_end"] == pytest.approx(0.05 + 8 * DENSE_BYTES / 400_000)
    assert rows.loc["edge-0", "t_end"] == pytest.approx(0.05 + (DENSE_BYTES - 2500) / 75_000)


def test_radio_tail_replaces_idle_until_the_next_phase(make_scenario):
    """After its upload the radio draws power_tail_w for tail_s, then idle power again; a
    tail the next download cuts, or the run's end, stops there."""
    tailed = {**FAST, "power_idle_w": 0.01, "tail_s": 0.5, "power_tail_w": 1.0}
    scenario = make_scenario(run={"cloud_rounds": 2}, devices=[{"profile": "t", "count": 1}],
                             profiles={"t": tailed})
    result = hierfl.run(scenario)
    device = result.events[result.events["node"].astype(str) == "t-0"]
    uploads, downloads = kind_rows(result, "upload"), kind_rows(result, "download")
    tails = device[device["kind"].astype(str) == "tail"]
    end_s = result.summary["sim_time_s"]
    gap_s = downloads["t_start"].iloc[1] - uploads["t_end"].iloc[0]  # < 0.5: cut there
    last_s = end_s - uploads["t_end"].iloc[1]  # < 0.5: cut by the run's end
    assert gap_s < 0.5 and last_s < 0.5
    assert tails["t_end"].sub(tails["t_start"]).sum() == pytest.approx(gap_s + last_s)
    devices = result.devices.set_index("device")
    assert devices.at["t-0", "energy_tail_j"] == pytest.approx(1.0 * (gap_s + last_s))
    assert tails["energy_j"].sum() == pytest.approx(devices.at["t-0", "energy_tail_j"])
    busy_s = device[device["kind"].astype(str).isin(["download", "compute", "upload"])]
    idle_s = end_s - (busy_s["t_end"] - busy_s["t_start"]).sum() - (gap_s + last_s)
    assert devices.at["t-0", "energy_idle_j"] == pytest.approx(0.01 * idle_s)


def test_a_short_tail_gives_way_to_idle(make_scenario):
    """A 1 ms tail: after the download, compute covers it (power_compute_w is the device's
    whole draw); after the upload it costs 1 ms at tail power, then idle to the end."""
    tailed = {**FAST, "power_idle_w": 0.01, "tail_s": 0.001, "power_tail_w": 1.0}
    scenario = make_scenario(run={"cloud_rounds": 1}, devices=[{"profile": "t", "count": 1}],
                             profiles={"t": tailed})
    result = hierfl.run(scenario)
    assert result.devices["energy_tail_j"].iloc[0] == pytest.approx(0.001)
    (tail,) = kind_rows(result, "tail").itertuples()
    assert tail.t_start == kind_rows(result, "upload")["t_end"].iloc[0]
    assert tail.t_end - tail.t_start == pytest.approx(0.001)


def test_paths_by_mode(make_scenario):
    """Hierarchical devices reach their edge over its cell; cloud-only ones the cloud over
    cell, backhaul and core; edges the cloud over their backhaul and the core."""
    scenario = make_scenario(topology={
        "edges": 2, "cell": [{"bandwidth_kbps": 10, "latency_ms": 1},
                             {"bandwidth_kbps": 20, "latency_ms": 2}],
        "core": {"bandwidth_kbps": 30, "latency_ms": 3}})
    links = Links.build(scenario.topology, ["edge-0", "edge-1"])
    assert links.names[:4] == ["edge-0 cell up", "edge-0 cell down", "edge-0 backhaul up",
                               "edge-0 backhaul down"]
    assert links.names[-2:] == ["cloud core up", "cloud core down"]
    paths, latency_s = links.device_paths(np.array([1, 0]), UP, to_cloud=False)
    assert paths.tolist() == [[4], [0]] and latency_s.tolist() == [0.002, 0.001]
    paths, latency_s = links.device_paths(np.array([1]), DOWN, to_cloud=True)
    assert paths.tolist() == [[5, 7, 9]]
    assert latency_s[0] == pytest.approx(0.002 + 0.020 + 0.003)
    paths, latency_s = links.edge_paths(np.array([0, 1]), UP)
    assert paths.tolist() == [[2, 8], [6, 8]]
    np.testing.assert_allclose(latency_s, 0.023)
    assert links.capacity_bytes_s[0] == 10 * 1000 / 8


def test_devices_without_an_edge_reach_the_cloud_over_the_core_only(make_scenario):
    """cloud_only with no edges: a device's path is its access link and the core."""
    scenario = make_scenario(topology={"mode": "cloud_only", "edges": 0,
                                       "core": {"bandwidth_kbps": 30}})
    links = Links.build(scenario.topology, [])
    paths, latency_s = links.device_paths(np.array([-1, -1]), UP, to_cloud=True)
    assert paths.tolist() == [[-1, -1, 0], [-1, -1, 0]] and latency_s.tolist() == [0.0, 0.0]


def test_merge_intervals_is_the_union():
    """Overlapping and touching intervals merge; disjoint ones stay apart, sorted."""
    start, end = merge_intervals(np.array([5.0, 0.0, 1.0, 3.0]), np.array([6.0, 2.0, 3.0, 4.0]))
    assert start.tolist() == [0.0, 5.0] and end.tolist() == [4.0, 6.0]


def test_variability_draws_belong_to_each_device_and_round():
    """A device's multiplier depends on (seed, device, round) alone, with median about 1."""
    many = lognormal(3, STREAM_COMPUTE, np.arange(20_000), 4, 0.5)
    assert lognormal(3, STREAM_COMPUTE, np.array([17]), 4, 0.5)[0] == many[17]
    assert np.median(many) == pytest.approx(1.0, abs=0.03)
    assert np.log(many).std() == pytest.approx(0.5, rel=0.03)
    assert not np.array_equal(many[:10], lognormal(3, STREAM_COMPUTE, np.arange(10), 5, 0.5))


def test_adding_a_device_changes_no_one_elses_draws(make_scenario):
    """With compute and bandwidth variability, a larger fleet leaves the first devices'
    compute and download times as they were."""
    variability = {"compute_sigma": 0.4, "bandwidth_sigma": 0.3}
    times = []
    for count in (2, 3):
        result = hierfl.run(make_scenario(variability=variability, topology={"edges": 1},
                                          devices=[{"profile": "fast", "count": count}],
                                          profiles={"fast": FAST}))
        device = result.events[result.events["node"].astype(str).isin(["fast-0", "fast-1"])]
        compute = device[device["kind"].astype(str) == "compute"]
        times.append((compute["t_end"] - compute["t_start"]).to_numpy())
    np.testing.assert_array_equal(*times)
    assert len(set(np.round(times[0], 15))) == len(times[0])  # every draw its own


class Stop(Exception):
    """Raised from the round callback to interrupt a run after its checkpoint."""


def test_checkpoint_keeps_links_and_tails(make_scenario, tmp_path):
    """A run stopped after round 1 and resumed writes the same events, links and load as the
    uninterrupted one, radio tails across the cut included."""
    from hierfl.sim.runner import resume, simulate

    tailed = {**FAST, "power_idle_w": 0.01, "tail_s": 5.0, "power_tail_w": 1.0}
    scenario = make_scenario(run={"cloud_rounds": 3},
                             topology={"edges": 1, "cell": {"bandwidth_kbps": 150}},
                             devices=[{"profile": "t", "count": 3}], profiles={"t": tailed})
    whole = simulate(scenario)

    def stop(row: dict) -> None:
        if row["cloud_round"] == 1:
            raise Stop

    with pytest.raises(Stop):
        simulate(scenario, on_round=stop, checkpoint_dir=tmp_path)
    resumed = resume(tmp_path)
    for table in ("events", "devices", "links", "link_load"):
        pd.testing.assert_frame_equal(getattr(resumed, table), getattr(whole, table))
    assert (whole.devices["energy_tail_j"] > 0).all()


def test_a_sender_that_dies_frees_its_share(make_scenario, weak_profile):
    """Two boards share a 100 kbps cell: 50 kbps each until the weak one's battery (0.45 J
    at 0.3 W rx: 1.5 s) empties mid-download; the other then gets the whole cell."""
    weak = {**weak_profile, "battery_mah": 0.05}  # 0.05 / 1000 * 3600 * 2.5 = 0.45 J
    board = {**weak_profile, "battery_mah": 500.0}
    scenario = make_scenario(run={"cloud_rounds": 1},
                             topology={"edges": 1, "cell": {"bandwidth_kbps": 100}},
                             devices=[{"profile": "weak", "count": 1},
                                      {"profile": "board", "count": 1}],
                             profiles={"weak": weak, "board": board})
    result = hierfl.run(scenario)
    downloads = kind_rows(result, "download")
    downloads = downloads.set_index(downloads["node"].astype(str))
    begin_s = 0.020 + 8 * DENSE_BYTES / 100_000_000  # the edge has the model (backhaul)
    assert downloads.loc["weak-0", "t_end"] == pytest.approx(begin_s + 1.5)
    assert downloads.loc["weak-0", "bytes"] == 0
    # bytes from begin + 0.05 s at 6_250 B/s each; from the death the board gets 12_500 B/s
    sent = (1.5 - 0.05) * 6_250
    assert downloads.loc["board-1", "t_end"] == pytest.approx(
        begin_s + 1.5 + (DENSE_BYTES - sent) / 12_500)
    links = result.links.set_index("link")
    assert links.loc["edge-0 cell down", "bytes"] == round(DENSE_BYTES + sent)


def test_a_battery_can_empty_in_the_radio_tail(make_scenario, weak_profile):
    """A 100 s tail at 1 W outlasts what a 2.25 J battery has left after one round's
    transfers, while a slow board keeps the round open: the device drops out in its tail, at
    its upload's end plus what was left over 1 W."""
    tailed = {**weak_profile, "battery_mah": 0.25, "tail_s": 100.0, "power_tail_w": 1.0}
    slow = {**weak_profile, "battery_mah": 500.0, "bandwidth_kbps": 10}
    scenario = make_scenario(run={"cloud_rounds": 1},
                             devices=[{"profile": "t", "count": 1},
                                      {"profile": "slow", "count": 1}],
                             profiles={"t": tailed, "slow": slow})
    result = hierfl.run(scenario)
    events = result.events[result.events["node"].astype(str) == "t-0"]
    kinds = events["kind"].astype(str)
    assert kinds.tolist()[-2:] == ["tail", "dropout"]
    spent = events.loc[kinds.isin(["download", "compute", "upload"]), "energy_j"].sum()
    upload_end = events.loc[kinds == "upload", "t_end"].iloc[-1]
    left_j = 0.25 / 1000 * 3600 * 2.5 - spent
    dropout = events[kinds == "dropout"].iloc[0]
    assert dropout["t_start"] == pytest.approx(upload_end + left_j / 1.0)
    assert events["energy_j"].sum() == pytest.approx(2.25)
    assert result.devices["energy_tail_j"].iloc[0] == pytest.approx(left_j)


def test_links_figure_and_trace_counters(make_scenario, tmp_path):
    """A run with a saturated cell draws links.png, and trace.json holds the cell's
    utilisation counter on its edge's process: 100 % while the 20 downloads share it,
    then 0; a run without shared links draws no links.png."""
    import json

    from hierfl.chrome_trace import write_chrome_trace
    from hierfl.plots import plot_run

    cell = {"bandwidth_kbps": 1000, "latency_ms": 5}
    result = hierfl.run(make_scenario(run={"cloud_rounds": 1},
                                      topology={"edges": 1, "cell": cell},
                                      devices=[{"profile": "mcu", "count": 20}]))
    assert (tmp_path / "a" / "links.png") in plot_run(result, tmp_path / "a")
    write_chrome_trace(result, tmp_path / "trace.json")
    records = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    edge_pid = next(r["pid"] for r in records
                    if r.get("ph") == "M" and r["args"].get("name") == "edge-0")
    down = [r for r in records if r.get("ph") == "C" and r["name"] == "cell down used %"]
    assert {r["pid"] for r in down} == {edge_pid}
    assert [r["args"]["used_pct"] for r in down] == [100.0, 0.0]
    start_s = kind_rows(result, "download")["t_start"].iloc[0] + 0.055
    assert down[0]["ts"] == pytest.approx(start_s * 1e6)
    bare = hierfl.run(make_scenario(run={"cloud_rounds": 1},
                                    topology={"mode": "cloud_only", "edges": 0}))
    assert all(p.name != "links.png" for p in plot_run(bare, tmp_path / "b"))
