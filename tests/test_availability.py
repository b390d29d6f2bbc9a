"""Availability: spans of online time (markov, diurnal, trace) and what they do to a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clirun import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hierfl
from hierfl.errors import ScenarioError
from hierfl.scenario import DEFAULT_ONLINE_BY_HOUR, load_scenario, parse_scenario
from hierfl.sim.availability import (
    HOUR_S,
    Cursor,
    Diurnal,
    Listed,
    Markov,
    build,
)
from hierfl.sim.availability_trace import read_trace
from hierfl.topology import build_topology

WORK = ("download", "compute", "upload")
PHONE = {
    "memory_kb": 1e6, "compute_mflops": 50.0, "bandwidth_kbps": 100.0, "latency_ms": 0.0,
    "battery_mah": 1000.0, "voltage_v": 3.7, "power_compute_w": 1.0, "power_tx_w": 2.0,
    "power_rx_w": 0.5, "power_idle_w": 0.01,
}


def listed(spans: dict[int, list[tuple[float, float, bool]]], n: int) -> Listed:
    """A Listed model from ``{device: [(start_s, end_s, plugged), ...]}``."""
    rows = [(d, *span) for d in range(n) for span in spans.get(d, [])]
    offsets = np.searchsorted(np.array([r[0] for r in rows], dtype=np.int64), np.arange(n + 1))
    start_s, end_s, plugged = (np.array([r[k] for r in rows]) for k in (1, 2, 3))
    return Listed(offsets, start_s.astype(float), end_s.astype(float), plugged.astype(bool))


def scenario(**tables) -> hierfl.Scenario:
    """A one-edge fleet of ``phone`` devices (timing-only) with the given tables merged in."""
    raw = {
        "seed": 3,
        "run": {"cloud_rounds": 2, "learning": False},
        "model": {"name": "tiny"},
        "data": {"samples_per_device": 20},
        "profiles": {"phone": PHONE},
        "devices": [{"profile": "phone", "count": 1}],
    }
    for key, table in tables.items():
        raw[key] = {**raw.get(key, {}), **table} if isinstance(table, dict) else table
    return parse_scenario(raw)


def write_trace(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def of(events: pd.DataFrame, kind: str, node: str | None = None) -> pd.DataFrame:
    rows = events[events["kind"] == kind]
    return rows if node is None else rows[rows["node"] == node]


# --- the models, pure ---


def test_cursor_reads_listed_spans():
    """A device is online in [start, end); ``until_s`` is the next change; changes in
    (from, to] come out in order; online time sums the spans' parts within [0, to]."""
    cursor = Cursor(listed({0: [(10.0, 20.0, False), (30.0, 50.0, True)]}, 2), 2)
    one = np.array([0])
    state = cursor.at(one, 5.0)
    assert not state.online[0] and state.until_s[0] == 10.0
    state = cursor.at(one, 10.0)
    assert state.online[0] and not state.plugged[0] and state.until_s[0] == 20.0
    state = cursor.at(one, 35.0)
    assert state.plugged[0] and state.until_s[0] == 50.0
    state = cursor.at(one, 12.0)  # back in time: the cursor rewinds
    assert state.online[0] and state.until_s[0] == 20.0
    where, when, rising = cursor.changes(one, np.array([10.0]), 40.0)
    assert when.tolist() == [20.0, 30.0] and rising.tolist() == [False, True]
    assert cursor.online_s(np.array([0, 1]), 40.0).tolist() == [20.0, 0.0]
    assert cursor.at(np.array([1]), 0.0).until_s[0] == np.inf


def test_markov_devices_are_independent():
    """A device's spans depend on the seed and its number only: a bigger fleet changes none."""
    small = Cursor(Markov(5, np.full(3, 60.0), np.full(3, 30.0), 0.5), 3)
    big = Cursor(Markov(5, np.full(9, 60.0), np.full(9, 30.0), 0.5), 9)
    for t_s in (0.0, 100.0, 1000.0):
        a, b = small.at(np.arange(3), t_s), big.at(np.arange(3), t_s)
        assert np.array_equal(a.online, b.online) and np.array_equal(a.until_s, b.until_s)


def test_markov_matches_its_means():
    """Online spans average mean_online_s, offline ones mean_offline_s, and the share online at
    any instant is on / (on + off) (statistical, 20,000 devices)."""
    n = 20_000
    cursor = Cursor(Markov(1, np.full(n, 100.0), np.full(n, 300.0), 0.0), n)
    everyone = np.arange(n)
    assert cursor.at(everyone, 0.0).online.mean() == pytest.approx(0.25, abs=0.015)
    assert cursor.at(everyone, 5000.0).online.mean() == pytest.approx(0.25, abs=0.015)
    fresh = Cursor(cursor.model, n)
    first_end_s = fresh.end_s.copy()
    fresh.step(everyone)
    assert (fresh.end_s - fresh.start_s).mean() == pytest.approx(100.0, rel=0.03)
    assert (fresh.start_s - first_end_s).mean() == pytest.approx(300.0, rel=0.03)


def test_markov_plugged_share():
    """Each online span is plugged in with ``plugged_probability``."""
    n = 20_000
    cursor = Cursor(Markov(2, np.full(n, 10.0), np.full(n, 10.0), 0.3), n)
    assert cursor.plugged.mean() == pytest.approx(0.3, abs=0.015)


def test_diurnal_share_follows_the_curve():
    """With no phase spread, the share online in each hour is that hour's value, and a device
    changes state only on the hour."""
    n = 20_000
    curve = np.array(DEFAULT_ONLINE_BY_HOUR)
    cursor = Cursor(Diurnal(4, n, curve, 0.0, 0.0), n)
    for hour in (1, 9, 22, 30):
        share = cursor.at(np.arange(n), (hour + 0.5) * HOUR_S).online.mean()
        assert share == pytest.approx(curve[hour % 24], abs=0.015)
    _, when, _ = cursor.changes(np.arange(200), np.zeros(200), 3 * 24 * HOUR_S)
    assert np.allclose(when / HOUR_S, np.round(when / HOUR_S))


def test_diurnal_phase_spread_shifts_local_clocks():
    """With a spread, devices change state off the hour, within the spread of it."""
    n = 500
    cursor = Cursor(Diurnal(4, n, np.array(DEFAULT_ONLINE_BY_HOUR), 2.0, 0.0), n)
    _, when, _ = cursor.changes(np.arange(n), np.zeros(n), 2 * 24 * HOUR_S)
    off_hour = np.abs(when / HOUR_S - np.round(when / HOUR_S))
    assert off_hour.max() <= 1.0 and (off_hour > 1e-6).mean() > 0.9


# --- the trace file ---


def test_trace_is_read_and_sorted(tmp_path):
    """Rows in any order, optional plugged column; devices without a row never come online."""
    path = write_trace(tmp_path, "device,start_s,end_s,plugged\nb,50,60,true\na,0,10,0\n"
                                 "b,5,20,no\n")
    cursor = Cursor(read_trace(path, pd.Index(["a", "b", "c"])), 3)
    state = cursor.at(np.arange(3), 6.0)
    assert state.online.tolist() == [True, True, False]
    assert cursor.at(np.array([1]), 55.0).plugged[0]
    assert cursor.online_s(np.arange(3), 100.0).tolist() == [10.0, 25.0, 0.0]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("device,start_s,end_s\nz,0,10\n", "row 1, column device: unknown device 'z'"),
        ("device,start_s,end_s\na,0,10\na,5,20\n", "row 2, column start_s: overlaps row 1"),
        ("device,start_s,end_s\na,-1,10\n", "row 1, column start_s: must be a finite"),
        ("device,start_s,end_s\na,0,nan\n", "row 1, column end_s: must be a finite"),
        ("device,start_s,end_s\na,0,ten\n", "row 1, column end_s: must be a finite"),
        ("device,start_s,end_s\na,0,1e999\n", "row 1, column end_s: must be a finite"),
        ("device,start_s,end_s\na,10,10\n", "row 1, column end_s: must be > start_s"),
        ("device,start_s,end_s,plugged\na,0,10,maybe\n", "row 1, column plugged: must be"),
        ("device,start,end_s\na,0,10\n", "the header must be device,start_s,end_s"),
        ("device,start_s,end_s\na,0,=cmd|' /C calc'!A0\n", "row 1, column end_s"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_trace_is_one_line_naming_file_row_and_column(tmp_path, text, needle):
    """A malformed or unsafe trace is refused with one line: the file, the row, the column."""
    path = write_trace(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        read_trace(path, pd.Index(["a", "b"]))
    message = str(caught.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_trace_path_is_relative_to_the_scenario_file(tmp_path):
    """``availability.path`` is resolved against the scenario file's folder, like data.path."""
    (tmp_path / "sub").mkdir()
    write_trace(tmp_path / "sub", "device,start_s,end_s\nphone-0,0,10\n")
    file = tmp_path / "sub" / "s.toml"
    file.write_text('[availability]\nmodel = "trace"\npath = "trace.csv"\n'
                    '[[devices]]\nprofile = "mcu"\ncount = 1\n')
    loaded = load_scenario(file)
    assert loaded.availability.path == str(tmp_path / "sub" / "trace.csv")


@pytest.mark.parametrize(
    ("availability", "needle"),
    [
        ({"model": "markov"}, "availability.mean_online_s: required when model = 'markov'"),
        ({"model": "markov", "mean_online_s": -5.0, "mean_offline_s": 1.0},
         "availability.mean_online_s: must be > 0"),
        ({"model": "always", "path": "x.csv"}, "path is read only when model = 'trace'"),
        ({"model": "diurnal", "mean_online_s": 5.0}, "mean_online_s is read only when model"),
        ({"model": "trace"}, "path is required when model = 'trace'"),
        ({"model": "diurnal", "online_by_hour": [0.5] * 23}, "must be 24 shares in [0, 1]"),
        ({"model": "trace", "path": "x.csv", "plugged_probability": 0.5},
         "plugged_probability is read only when model = 'markov' or 'diurnal'"),
    ],
)
def test_bad_availability_keys(availability, needle):
    """Each bad [availability] table is one error naming the key and the rule."""
    with pytest.raises(ScenarioError, match=None) as caught:
        scenario(availability=availability)
    assert needle in str(caught.value)


def test_profile_means_win_over_the_global_ones():
    """markov reads a profile's mean_online_s / mean_offline_s before the table's."""
    s = scenario(
        availability={"model": "markov", "mean_online_s": 10.0, "mean_offline_s": 10.0},
        profiles={"phone": {**PHONE, "mean_online_s": 99.0}},
    )
    topo = build_topology(s)
    model = build(s, topo.profile_of, topo.profile_names, topo.names)
    assert model.online_s.tolist() == [99.0] and model.offline_s.tolist() == [10.0]


# --- in a run ---


def test_offline_mid_upload_loses_the_round(tmp_path):
    """A device that goes offline mid-upload stops there: its upload ends at that instant
    carrying 0 bytes, its radio drew power_tx_w until then, an ``offline`` event marks the
    instant, nothing is aggregated; it comes back (``online``) when its next span starts."""
    baseline = hierfl.run(scenario())
    upload = of(baseline.events, "upload").iloc[0]
    cut_s = (upload["t_start"] + upload["t_end"]) / 2
    back_s = cut_s + 100.0
    path = write_trace(tmp_path, f"device,start_s,end_s\nphone-0,0,{float(cut_s)!r}\n"
                                 f"phone-0,{float(back_s)!r},1e9\n")
    result = hierfl.run(scenario(availability={"model": "trace", "path": str(path)}))
    events = result.events
    cut = of(events, "upload").iloc[0]
    assert cut["t_start"] == upload["t_start"] and cut["t_end"] == cut_s
    assert cut["bytes"] == 0
    assert cut["energy_j"] == pytest.approx(PHONE["power_tx_w"] * (cut_s - upload["t_start"]))
    assert of(events, "offline")["t_start"].tolist() == [cut_s]
    assert of(events, "online")["t_start"].tolist() == [back_s]
    first = events[events["cloud_round"] == 0]
    assert not len(of(first, "edge_aggregate")) and not len(of(first, "dropout"))
    assert of(events, "cloud_download")["t_start"].iloc[1] == back_s  # round 1 waited
    assert result.devices["online_s"].iloc[0] == pytest.approx(
        cut_s + result.summary["sim_time_s"] - back_s)


def test_nobody_online_waits_instead_of_spinning(tmp_path):
    """With nobody online, a cloud round waits for the next availability change; with
    ``max_wait_s`` it waits that long at most and runs empty."""
    path = write_trace(tmp_path, "device,start_s,end_s\nphone-0,1000,1e9\n")
    trace = {"model": "trace", "path": str(path)}
    result = hierfl.run(scenario(availability=trace))
    assert of(result.events, "cloud_download")["t_start"].iloc[0] == 1000.0
    assert of(result.events, "edge_aggregate")["cloud_round"].tolist() == [0, 1]
    capped = hierfl.run(scenario(availability=trace, run={"max_wait_s": 30.0}))
    starts = of(capped.events, "cloud_download")["t_start"].tolist()
    assert starts == [30.0, capped.rounds["sim_time_s"].iloc[0] + 30.0]
    assert not len(of(capped.events, "edge_aggregate"))


def test_a_fleet_that_can_never_train_again_ends_the_run():
    """When no device can ever be selected again (below min_battery, no charging) the run
    ends instead of playing empty rounds."""
    result = hierfl.run(scenario(selection={"min_battery": 1.0}, run={"cloud_rounds": 50}))
    assert len(result.rounds) == 1


def test_a_dead_fleet_ends_the_run_while_availability_churns():
    """Empty batteries that nothing charges end the run, though devices keep coming online."""
    result = hierfl.run(scenario(
        run={"cloud_rounds": 50},
        selection={"min_battery": 0.0},
        availability={"model": "markov", "mean_online_s": 5.0, "mean_offline_s": 5.0},
        profiles={"phone": {**PHONE, "battery_mah": 0.01}},
        devices=[{"profile": "phone", "count": 3}],
    ))
    assert result.devices["dropped"].all()
    assert len(result.rounds) < 50


def test_offline_devices_are_not_selected(tmp_path):
    """Only devices online at the round's start are asked."""
    path = write_trace(tmp_path, "device,start_s,end_s\nphone-0,0,1e9\nphone-2,0,1e9\n")
    result = hierfl.run(scenario(availability={"model": "trace", "path": str(path)},
                                 devices=[{"profile": "phone", "count": 3}]))
    assert sorted(set(of(result.events, "download")["node"])) == ["phone-0", "phone-2"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), on_s=st.floats(1.0, 60.0), off_s=st.floats(1.0, 60.0),
       devices=st.integers(1, 8))
def test_no_device_works_while_offline(seed, on_s, off_s, devices):
    """Every download, compute and upload lies within one online span of its device."""
    s = scenario(
        seed=seed,
        run={"cloud_rounds": 4, "max_wait_s": 200.0},
        availability={"model": "markov", "mean_online_s": on_s, "mean_offline_s": off_s},
        devices=[{"profile": "phone", "count": devices}],
    )
    result = hierfl.run(s)
    topo = build_topology(s)
    cursor = Cursor(build(s, topo.profile_of, topo.profile_names, topo.names), devices)
    work = result.events[result.events["kind"].isin(WORK)].sort_values("t_start")
    number = topo.names.get_indexer(work["node"].astype(str))
    for device, start_s, end_s in zip(number, work["t_start"], work["t_end"], strict=True):
        state = cursor.at(np.array([device]), start_s)
        assert state.online[0] and end_s <= state.until_s[0]


@pytest.mark.parametrize(
    ("trace", "toml", "needle"),
    [
        ("device,start_s,end_s\nmcu-0,0,abc\n", "", "row 1, column end_s"),
        ("device,start_s,end_s\nmcu-0,0,10\nmcu-0,5,20\n", "", "overlaps row 1"),
        ("device,start_s,end_s\nmcu-0,0,10\n", "mean_online_s = -1.0\n",
         "availability.mean_online_s: must be > 0"),
    ],
)
def test_cli_refuses_bad_availability_and_writes_nothing(tmp_path, trace, toml, needle):
    """A bad trace file or availability key: one error line, exit 2, no run folder."""
    write_trace(tmp_path, trace)
    file = tmp_path / "s.toml"
    file.write_text('[run]\ncloud_rounds = 1\nlearning = false\n[availability]\nmodel = "trace"\n'
                    f'path = "trace.csv"\n{toml}[[devices]]\nprofile = "mcu"\ncount = 2\n')
    out = tmp_path / "out"
    done = invoke("run", str(file), "--out", str(out), "--quiet")
    assert done.one_error_line and needle in done.err
    assert not out.exists()
