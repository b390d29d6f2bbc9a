"""The studies in scenarios/: each scenario file runs, each script writes a figure and a table."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

import hierfl

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["hierfl_vs_cloud", "cell_scaling", "compression", "battery", "digits", "heterofl",
           "optimizers", "mnist1d_tiers", "diurnal", "power", "protocol", "fedbuff"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the study figures need matplotlib"
)


def load_study(name: str) -> ModuleType:
    """Import scenarios/studies/NAME.py from its path (scenarios/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"study_{name}", ROOT / "scenarios" / "studies" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_study(name: str, out: Path, rounds: int) -> pd.DataFrame:
    """Run a study on a small budget; check its PNG and CSV; return the table it returned."""
    table = load_study(name).main(out, rounds=rounds)
    check_outputs(name, out, table)
    return table


@pytest.mark.parametrize("name", STUDIES)
def test_study_scenario_runs(name):
    """Each study's scenario file loads and runs 2 cloud rounds (timing only)."""
    path = ROOT / "scenarios" / f"{name}.toml"
    scenario = hierfl.load_scenario(path, ["run.cloud_rounds=2", "run.learning=false"])
    result = hierfl.run(scenario)
    assert result.summary["name"] == name
    assert len(result.rounds) == 2


def check_outputs(name: str, out: Path, table: pd.DataFrame) -> None:
    """The study wrote its PNG (small) and its CSV, which holds the table it returned."""
    figure = out / f"{name}.png"
    assert figure.read_bytes()[:8] == PNG_MAGIC
    assert figure.stat().st_size < 400_000
    written = pd.read_csv(out / f"{name}.csv")
    assert list(written.columns) == list(table.columns)
    assert len(written) == len(table)


@needs_matplotlib
def test_hierfl_vs_cloud_study(tmp_path):
    """Each grid cell and seed runs both sides on the same devices, seed and training budget;
    cloud-only sends every device's model over the backhaul, two-tier one model per edge."""
    study = load_study("hierfl_vs_cloud")
    runs = study.main(tmp_path, quick=True)
    check_outputs("hierfl_vs_cloud", tmp_path, runs)
    grid = study.QUICK
    cells = len(grid.backhaul_kbps) * len(grid.devices_per_edge)
    assert len(runs) == 2 * cells * len(grid.seeds)
    assert runs["same_devices"].all()
    sides = runs.groupby(["backhaul_kbps", "devices_per_edge", "seed"])
    variants = [label for label, *_ in study.VARIANTS]
    assert all(list(side) == variants for side in sides["variant"].apply(list))
    assert (sides["updates"].nunique() == 1).all()  # same devices trained as often
    assert (runs["cloud_rounds"] * runs["edge_rounds"] == grid.edge_rounds).all()
    cloud = runs[runs["edge_rounds"] == 1].set_index(["backhaul_kbps", "devices_per_edge", "seed"])
    two = runs[runs["edge_rounds"] > 1].set_index(cloud.index.names)
    assert (cloud["bytes_backhaul"] > two["bytes_backhaul"]).all()
    speedup = pd.read_csv(tmp_path / "hierfl_vs_cloud_speedup.csv")
    assert len(speedup) == cells
    assert (speedup["seeds"] == len(grid.seeds)).all()
    slow_crowded = speedup.set_index(["backhaul_kbps", "devices_per_edge"]).loc[
        (min(grid.backhaul_kbps), max(grid.devices_per_edge))
    ]
    assert slow_crowded["round_speedup_min"] > 1  # many devices over a slow backhaul: two-tier wins


def test_fleet_keeps_the_tutorial_mix():
    """fleet() splits devices_per_edge * edges in the 7:7:6 mix by largest remainders;
    a profile whose share rounds to none is left out."""
    fleet = load_study("hierfl_vs_cloud").fleet
    assert fleet(10, 2) == (
        '[{ profile = "mcu", count = 7 }, { profile = "soc", count = 7 }, '
        '{ profile = "mobile", count = 6 }]'
    )
    assert fleet(2, 2) == (  # 1.4, 1.4, 1.2: the one seat left goes to the first 0.4
        '[{ profile = "mcu", count = 2 }, { profile = "soc", count = 1 }, '
        '{ profile = "mobile", count = 1 }]'
    )
    assert fleet(1, 1) == '[{ profile = "mcu", count = 1 }]'


@needs_matplotlib
def test_cell_scaling_study(tmp_path):
    """Every profile, regime and fleet size runs; a lone ESP32-S3 is held by its own 20 Mbit/s
    link, 40 of them by the 100 Mbit/s cell; only the LTE phone pays a radio tail."""
    study = load_study("cell_scaling")
    table = study.main(tmp_path, quick=True)
    check_outputs("cell_scaling", tmp_path, table)
    assert len(table) == len(study.PROFILES) * len(study.REGIMES) * len(study.QUICK.devices)
    parts = table[list(study.PARTS)]
    assert (parts >= 0).all().all()
    assert parts.sum(axis=1).to_numpy() == pytest.approx(table["energy_per_update_j"].to_numpy())
    every = table[table["regime"] == study.REGIMES[0][0]].set_index(["profile", "devices"])
    assert (every["updates_per_round"] == every.index.get_level_values("devices")).all()
    model_bytes = 4 * (64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10)  # the 'mobile' MLP, dense
    latency_s = (5 + 2) / 1000  # esp32s3_wifi access + cell
    alone_s = latency_s + 8 * model_bytes / 20_000e3  # its own 20 Mbit/s link is the bottleneck
    crowd_s = latency_s + 40 * 8 * model_bytes / 100_000e3  # 40 share the 100 Mbit/s cell
    power_w = 0.30 + 0.95  # receive the model, then send the update
    assert every.at[("esp32s3_wifi", 1), "radio_j"] == pytest.approx(power_w * alone_s)
    assert every.at[("esp32s3_wifi", 40), "radio_j"] == pytest.approx(power_w * crowd_s)
    tails = table.groupby("profile")["tail_j"].max()
    assert tails["esp32s3_wifi"] == tails["rpi4"] == 0
    rested = table[(table["regime"] == study.REGIMES[1][0]) & (table["devices"] == 40)]
    phone = rested.set_index("profile").at["phone_lte", "tail_j"]
    assert phone > every.at[("phone_lte", 40), "tail_j"] > 0  # resting devices run their tails


@needs_matplotlib
def test_compression_study(tmp_path):
    """Each codec runs; the real payloads shrink in the order none > prune > int8 > both,
    clustering with the bits, top-k alike with and without error feedback; an int8 downlink
    shrinks the bytes down and an mcu's downloads."""
    study = load_study("compression")
    table = run_study("compression", tmp_path, rounds=2).set_index("variant")
    assert list(table.index) == [label for label, *_ in study.VARIANTS]
    payload = table["uplink_payload_bytes"]
    assert payload["none"] > payload["prune 0.3"] > payload["int8"] > payload["int8 + prune 0.3"]
    assert payload["int8"] > payload["cluster 6 bits"] > payload["cluster 4 bits"]
    assert payload["cluster 4 bits"] > payload["cluster 2 bits"]
    assert payload["top-k 0.1"] == payload["top-k 0.1 + error feedback"] < payload["int8"]
    assert table.at["none", "payload_reduction"] == 1.0
    assert (table["bytes_up"] > 0).all()
    down = table.loc[["none", "int8 downlink"]]
    assert down["downlink_payload_bytes"].tolist() == [4 * 4522, 4522 + 6 * 8]
    assert down.at["int8 downlink", "bytes_down"] < down.at["none", "bytes_down"]
    assert down.at["int8 downlink", "mcu_download_s"] < down.at["none", "mcu_download_s"]


@needs_matplotlib
def test_battery_study(tmp_path):
    """Each selection policy runs and reports survival, dropouts and accuracy."""
    table = run_study("battery", tmp_path, rounds=2).set_index("policy")
    assert list(table.index) == ["all", "random", "battery"]
    assert (table["rounds_survived"] == 2).all()  # nobody runs empty in 2 rounds
    assert (table["devices_dropped"] == 0).all()
    assert table.at["all", "updates_aggregated"] == 2 * table.at["battery", "updates_aggregated"]


@needs_matplotlib
def test_protocol_study(tmp_path):
    """Each trigger runs on each seed: all waits for everyone (nothing late), first_k uses
    exactly k = 8 updates per edge and round, and late work is counted as wasted energy."""
    table = run_study("protocol", tmp_path, rounds=2)
    assert list(table["trigger"].unique()) == ["all", "deadline 2 s", "first_k 8 of 11"]
    assert sorted(table["seed"].unique()) == [0, 1, 2]
    by = table.set_index(["trigger", "seed"])
    assert (by.loc["all", "updates_late"] == 0).all()
    assert (by.loc["all", "energy_wasted_j"] == 0).all()
    assert (by.loc["first_k 8 of 11", "updates_used"] == 2 * 2 * 8).all()
    assert (by.loc["first_k 8 of 11", "updates_late"] > 0).all()
    late = table["updates_late"] > 0
    assert (table.loc[late, "energy_wasted_j"] > 0).all()


@needs_matplotlib
def test_fedbuff_study(tmp_path):
    """Every variant runs up to the same simulated time (and is evaluated there); sync all
    discards nothing; buffered aggregates every update it counts as used, more than sync all;
    a 2 s deadline and max_staleness 8 drop every NB-IoT update (about 5 s a job, some 25
    aggregations stale: late), while plain buffered aggregates some of them."""
    study = load_study("fedbuff")
    table = study.main(tmp_path, seed=0, time_s=10.0)
    check_outputs("fedbuff", tmp_path, table)
    variants = [label for label, _ in study.VARIANTS]
    assert list(table["variant"]) == variants and (table["seed"] == 0).all()
    assert (table["evaluated_until_s"] == 10.0).all()
    assert (table["updates_used"] == table["updates_aggregated"]).all()
    by = table.set_index("variant")
    sync, deadline, buffered, capped = variants
    assert by.at[sync, "updates_late"] == 0 and by.at[sync, "energy_wasted_j"] == 0
    assert by.at[buffered, "updates_used"] > by.at[sync, "updates_used"]
    for dropping in (deadline, capped):
        assert by.at[dropping, "straggler_updates_used"] == 0
        assert by.at[dropping, "straggler_updates_late"] > 0
    assert by.at[buffered, "straggler_updates_used"] > 0
    late = table["updates_late"] > 0
    assert (table.loc[late, "energy_wasted_j"] > 0).all()
    summary = pd.read_csv(tmp_path / "fedbuff_summary.csv")
    assert list(summary["variant"]) == variants and (summary["seeds"] == 1).all()


def test_power_study(tmp_path):
    """Power-aware selection trains only the cheap Wi-Fi half (the NB-IoT boards cost about a
    hundred times more joules per round); 'all' trains every board; every seed is written."""
    table = run_study("power", tmp_path, rounds=3).set_index("policy")
    assert list(table.index) == ["all", "random", "battery", "power"]
    assert table.at["power", "never_trained"] == 10 and table.at["all", "never_trained"] == 0
    assert table.at["power", "energy_j"] < table.at["battery", "energy_j"]
    assert len(pd.read_csv(tmp_path / "power_runs.csv")) == 12


@needs_matplotlib
def test_diurnal_study(tmp_path):
    """With require_plugged no training energy comes from a battery; without it some does,
    and more updates are aggregated."""
    table = run_study("diurnal", tmp_path, rounds=4).set_index("require_plugged")
    assert list(table.index) == [True, False]
    assert (table["cloud_rounds"] == 4).all()
    assert table.at[True, "training_from_battery_j"] == 0.0
    assert table.at[False, "training_from_battery_j"] > 0.0
    assert table.at[False, "updates_aggregated"] > table.at[True, "updates_aggregated"]


@needs_matplotlib
def test_digits_study(tmp_path):
    """dscnn fits the mcu with batch 8 but not 16: then the mcus are skipped."""
    pytest.importorskip("sklearn", reason="data.kind = 'digits' needs scikit-learn")
    table = run_study("digits", tmp_path, rounds=2).set_index("variant")
    assert list(table.index) == [
        "dscnn, batch 8",
        "dscnn, batch 16",
        "compact MLP, batch 8 (reference)",
    ]
    assert table.at["dscnn, batch 8", "devices_training"] == 18
    assert table.at["dscnn, batch 16", "devices_training"] == 12
    assert table.at["dscnn, batch 16", "skip_events"] > 0
    profiles = pd.read_csv(tmp_path / "digits_profiles.csv")
    mcu = profiles[(profiles["profile"] == "mcu") & (profiles["variant"] == "dscnn, batch 16")]
    assert not mcu["fits"].item()


@needs_matplotlib
def test_heterofl_study(tmp_path):
    """HeteroFL trains each profile its widest fitting variant; dropping what does not fit
    leaves the mcus and socs without a model; the smallest for all gives everyone width 1/4."""
    table = load_study("heterofl").main(tmp_path, rounds=2, seed=42)
    check_outputs("heterofl", tmp_path, table)
    widths = table.set_index(["strategy", "profile"])["width"]
    assert widths["HeteroFL"].to_dict() == {"mcu": 0.25, "soc": 0.5, "mobile": 1.0}
    dropped = widths["drop what does not fit"]
    assert dropped["mobile"] == 1.0 and dropped[["mcu", "soc"]].isna().all()
    assert set(widths["smallest for all"]) == {0.25}
    assert (table["seeds"] == 1).all()
    runs = pd.read_csv(tmp_path / "heterofl_runs.csv")
    assert len(runs) == 3 * 3


@needs_matplotlib
def test_optimizers_study(tmp_path):
    """Every optimiser variant runs on each of the three seeds, one row each."""
    pytest.importorskip("sklearn", reason="data.kind = 'digits' needs scikit-learn")
    table = run_study("optimizers", tmp_path, rounds=2)
    study = load_study("optimizers")
    assert list(table["variant"].unique()) == list(study.VARIANTS)
    assert (table.groupby("variant")["seed"].apply(tuple) == study.SEEDS).all()
    assert table["final_accuracy"].between(0, 1).all()


@needs_matplotlib
def test_mnist1d_tiers_study(tmp_path):
    """Each side of each partition runs as many aggregations (4 with one two-tier cloud
    round); the summary has one row per variant, in the study's order."""
    study = load_study("mnist1d_tiers")
    table = study.main(tmp_path, rounds=1, seed=42)
    check_outputs("mnist1d_tiers", tmp_path, table)
    assert list(table["variant"]) == [label for label, *_ in study.VARIANTS]
    assert (table["aggregations"] == 4).all()
    assert table["final_accuracy"].between(0, 1).all()
    summary = pd.read_csv(tmp_path / "mnist1d_tiers_summary.csv")
    assert list(summary["variant"]) == list(table["variant"]) and (summary["seeds"] == 1).all()
