"""Figures are real, non-blank PNGs for learning, timing-only and large-fleet runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hierfl
from hierfl.errors import HierflError
from hierfl.plots import (
    TIMELINE_ROUNDS,
    battery_limits,
    joules,
    plot_accuracy,
    plot_run,
    plot_sweep,
    plot_timeline,
    run_label,
    sample_evenly,
    timeline_lanes,
    timeline_window,
    tradeoff_figure,
)
from hierfl.results import Result

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WEAK = {  # an mcu-like board whose 0.9 J battery empties during its first round
    "memory_kb": 512, "compute_mflops": 100, "bandwidth_kbps": 100, "latency_ms": 50,
    "battery_mah": 0.1, "voltage_v": 2.5, "power_compute_w": 0.2, "power_tx_w": 0.95,
    "power_rx_w": 0.3, "power_idle_w": 0.0,
}


def run(raw: dict) -> Result:
    return hierfl.run(hierfl.parse_scenario(raw))


@pytest.fixture(scope="module")
def learning() -> Result:
    """A small learning run whose (low) target accuracy is reached."""
    return run({
        "name": "learning", "seed": 2,
        "run": {"cloud_rounds": 2, "target_accuracy": 0.01},
        "data": {"samples_per_device": 20, "test_samples": 200},
        "topology": {"edges": 2},
        "devices": [{"profile": "mobile", "count": 3}, {"profile": "soc", "count": 1}],
    })


@pytest.fixture(scope="module")
def timing_only() -> Result:
    """Timing-only, with devices that drop out and devices the model does not fit."""
    return run({
        "name": "timing", "seed": 3,
        "run": {"cloud_rounds": 2, "learning": False},
        "selection": {"policy": "all", "min_battery": 0.0},
        "topology": {"edges": 2},
        "profiles": {"weak": WEAK, "tiny": {**WEAK, "memory_kb": 1, "battery_mah": 500}},
        "devices": [{"profile": "weak", "count": 2}, {"profile": "tiny", "count": 1},
                    {"profile": "mobile", "count": 2}],
    })


@pytest.fixture(scope="module")
def fleet() -> Result:
    """120 devices (40 of each built-in profile) under 4 edges, timing only."""
    return run({
        "name": "fleet120", "seed": 1,
        "run": {"cloud_rounds": 2, "learning": False},
        "topology": {"edges": 4},
        "selection": {"policy": "random", "fraction": 0.5},
        "devices": [{"profile": p, "count": 40} for p in ("mcu", "soc", "mobile")],
    })


def assert_real_png(path: Path, min_kb: float = 20) -> None:
    """A PNG file: magic bytes, decodable, not tiny, and not a blank canvas."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_kb * 1024, (path, len(data))
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert float(pixels[..., :3].std()) > 0.01, path


@pytest.mark.parametrize("name", ["learning", "timing_only", "fleet"])
def test_plot_run_writes_real_pngs(name: str, request, tmp_path) -> None:
    """plot_run writes timeline, accuracy (when learning), energy and links (the backhauls
    carried load) PNGs, no temporary file."""
    result = request.getfixturevalue(name)
    paths = plot_run(result, tmp_path / "plots")
    learned = ["accuracy.png"] if name == "learning" else []
    assert [p.name for p in paths] == ["timeline.png", *learned, "energy.png", "links.png"]
    for path in paths:
        assert_real_png(path)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        p.name for p in paths)


def test_timing_only_run_has_no_accuracy(timing_only: Result, tmp_path) -> None:
    """A timing-only run has NaN accuracy; asked for one, its accuracy figure says so."""
    assert timing_only.rounds["accuracy"].isna().all()
    assert_real_png(plot_accuracy(timing_only, tmp_path / "a.png"))


def test_overwrites_in_place(learning: Result, tmp_path) -> None:
    """Plotting twice to one path replaces the file and leaves nothing else behind."""
    first = plot_accuracy(learning, tmp_path / "accuracy.png")
    second = plot_accuracy(learning, tmp_path / "accuracy.png")
    assert first == second
    assert [p.name for p in tmp_path.iterdir()] == ["accuracy.png"]
    assert_real_png(second)


def test_small_fleet_shows_every_device(timing_only: Result) -> None:
    """Up to 60 devices, every device has its own lane, under its edge."""
    groups, sampled = timeline_lanes(timing_only)
    assert not sampled
    lanes = {device: edge for edge, devices in groups for device in devices}
    devices = timing_only.devices
    assert lanes == dict(zip(devices["device"], devices["edge"], strict=True))
    assert [edge for edge, _ in groups] == ["cloud", "edge-0", "edge-1"]


def test_large_fleet_samples_lanes_per_edge(fleet: Result) -> None:
    """Above 60 device lanes, each edge shows an even sample that covers every profile."""
    groups, sampled = timeline_lanes(fleet)
    assert sampled
    shown = [d for _, devices in groups for d in devices]
    assert 4 <= len(shown) <= 60 and len(set(shown)) == len(shown)
    profile = dict(zip(fleet.devices["device"], fleet.devices["profile"], strict=True))
    edge = dict(zip(fleet.devices["device"], fleet.devices["edge"], strict=True))
    for name, devices in groups[1:]:
        assert devices and all(edge[d] == name for d in devices)
        assert {profile[d] for d in devices} == {"mcu", "soc", "mobile"}


def test_sample_evenly() -> None:
    """Evenly spaced picks keep order and both ends; short lists come back whole."""
    assert sample_evenly(list(range(10)), 4) == [0, 3, 6, 9]
    assert sample_evenly([1, 2], 5) == [1, 2]
    assert sample_evenly(list("abc"), 1) == ["a"]
    assert np.all(np.diff(sample_evenly(list(range(100)), 7)) > 0)


def test_timing_only_run_writes_no_accuracy_png(timing_only: Result, tmp_path) -> None:
    """A run without accuracy gets timeline, energy and links figures, no empty accuracy.png."""
    paths = plot_run(timing_only, tmp_path)
    assert [p.name for p in paths] == ["timeline.png", "energy.png", "links.png"]
    assert not (tmp_path / "accuracy.png").exists()


def test_long_run_timeline_shows_its_first_rounds(tmp_path) -> None:
    """Past TIMELINE_ROUNDS cloud rounds the timeline draws the first ones, unless told."""
    long = run({
        "name": "long", "seed": 1, "run": {"cloud_rounds": 12, "learning": False},
        "topology": {"edges": 2}, "devices": [{"profile": "mcu", "count": 4}],
    })
    ends = long.rounds["sim_time_s"].tolist()
    assert timeline_window(long) == (0.0, ends[TIMELINE_ROUNDS - 1], True)
    assert timeline_window(long, (ends[6], ends[8])) == (ends[6], ends[8], True)
    assert timeline_window(long, (0.0, ends[-1])) == (0.0, ends[-1], False)
    with pytest.raises(HierflError, match="--to must be > --from"):
        timeline_window(long, (3.0, 2.0))
    assert_real_png(plot_timeline(long, tmp_path / "t.png", (ends[6], ends[8])))


def test_battery_axis_spans_at_least_twenty_points() -> None:
    """A 0.12% drain is drawn on an axis of at least 20 points, so it looks as small as it is."""
    bottom, top = battery_limits(np.array([100.0, 99.94, 99.88]))
    assert bottom <= 80.0 and top >= 100.0
    bottom, _ = battery_limits(np.array([100.0, 40.0, 10.0]))
    assert 0.0 <= bottom < 10.0


def test_energy_labels_have_no_exponents() -> None:
    """Joules print with grouped digits or mJ / uJ, never as 6.96e+03 J."""
    for value in (6960.4, 123456.0, 12.3, 0.449, 0.0053, 1.2e-5, 0.0):
        assert "e+" not in joules(value) and "e-" not in joules(value)
    assert joules(6960.4) == "6,960 J"


def test_titles_name_the_overrides(learning: Result) -> None:
    """A run made with --set shows its overrides after its name in every title."""
    summary = {**learning.summary, "overrides": ["selection.policy=all", "seed=3"]}
    changed = Result(learning.events, learning.rounds, learning.devices, summary)
    assert run_label(changed) == "learning [selection.policy=all, seed=3]"
    assert run_label(learning) == "learning"


def test_sweep_tradeoff_starts_at_zero_and_shows_devices_trained(tmp_path) -> None:
    """Trade-off axes start at 0; both figures give each variant's devices per round."""
    for name, trained in (("a", [10, 10]), ("b", [8, 8])):
        (tmp_path / name).mkdir()
        pd.DataFrame({"cloud_round": [0, 1], "sim_time_s": [25.0, 50.0 + len(name)],
                      "accuracy": [0.5, 0.6], "devices_trained": trained}).to_csv(
            tmp_path / name / "rounds.csv", index=False)
    table = pd.DataFrame({"run": ["a", "b"], "variant": ["edges=1", "edges=4"],
                          "status": ["ok", "ok"], "sim_time_s": [50.1, 50.3],
                          "energy_j": [800.0, 640.0], "final_accuracy": [0.6, 0.6]})
    fig = tradeoff_figure(table, {"edges=1": 10.0, "edges=4": 8.0})
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert any("10 devices trained per cloud round" in label for label in labels)
    assert any("8 devices trained per cloud round" in label for label in labels)
    paths = plot_sweep(table, tmp_path)
    assert [p.name for p in paths] == ["sweep_accuracy.png", "sweep_tradeoff.png"]


@pytest.fixture(scope="module")
def churning() -> Result:
    """A learning run with markov availability, charging and timed evaluations."""
    return run({
        "name": "churn", "seed": 4,
        "run": {"cloud_rounds": 4, "round_interval_s": 60.0, "eval_every_s": 30.0,
                "max_wait_s": 120.0},
        "data": {"samples_per_device": 20, "test_samples": 200},
        "model": {"name": "tiny"},
        "availability": {"model": "markov", "mean_online_s": 40.0, "mean_offline_s": 40.0,
                         "plugged_probability": 0.5},
        "profiles": {"mobile": {"charge_w": 2.0}},
        "devices": [{"profile": "mobile", "count": 6}],
    })


def test_availability_and_charging_are_drawn(churning: Result, tmp_path) -> None:
    """The timeline shades offline spans and marks charging; the battery panel marks
    charging; the accuracy panel adds the timed evaluations; all are real PNGs."""
    from hierfl import plots

    kinds = set(churning.events["kind"].astype(str))
    assert {"offline", "online", "charge"} <= kinds
    events = churning.events
    frame = pd.DataFrame({"kind": events["kind"].astype(str), "node": events["node"].astype(str),
                          "t_start": events["t_start"], "t_end": events["t_end"]})
    row = {name: k for k, name in enumerate(churning.devices["device"])}
    ax = plots.new_figure(4, 4).add_subplot()
    labels = [h.get_label() for h in plots._availability_lanes(ax, frame, row, 1e3)]
    assert labels == ["offline", "charging (plugged in)"]
    battery_ax = plots.new_figure(4, 4).add_subplot()
    labels = [h.get_label() for h in plots._battery_line(battery_ax, churning)]
    assert any(label.startswith("some device charging") for label in labels)
    for path in plot_run(churning, tmp_path / "plots"):
        assert_real_png(path)
