"""The studies in scenarios/: each scenario file runs, each script writes a figure and a table."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

import hierfl

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["hierfl_vs_cloud", "compression", "battery", "digits"]
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
    figure = out / f"{name}.png"
    assert figure.read_bytes()[:8] == PNG_MAGIC
    assert figure.stat().st_size < 400_000
    written = pd.read_csv(out / f"{name}.csv")
    assert list(written.columns) == list(table.columns)
    assert len(written) == len(table)
    return table


@pytest.mark.parametrize("name", STUDIES)
def test_study_scenario_runs(name):
    """Each study's scenario file loads and runs 2 cloud rounds (timing only)."""
    path = ROOT / "scenarios" / f"{name}.toml"
    scenario = hierfl.load_scenario(path, ["run.cloud_rounds=2", "run.learning=false"])
    result = hierfl.run(scenario)
    assert result.summary["name"] == name
    assert len(result.rounds) == 2


@needs_matplotlib
def test_hierfl_vs_cloud_study(tmp_path):
    """Every backhaul runs cloud-only and 1, 2, 4 edge rounds on the same edge-round budget."""
    table = run_study("hierfl_vs_cloud", tmp_path, rounds=2)
    assert table["backhaul"].nunique() == 3
    for _, part in table.groupby("backhaul"):
        assert list(part["variant"]) == [
            "cloud-only FedAvg",
            "cloud-only, shared backhaul",
            "two-tier, 1 edge round",
            "two-tier, 2 edge rounds",
            "two-tier, 4 edge rounds",
        ]
        assert list(part["edge_rounds"]) == [1, 1, 1, 2, 4]
        assert (part["cloud_rounds"] * part["edge_rounds"] >= 2).all()
    slow = table[table["backhaul"] == "1 Mbit/s, 300 ms"].set_index("variant")["s_per_edge_round"]
    assert slow["two-tier, 4 edge rounds"] < slow["cloud-only FedAvg"]
    assert slow["cloud-only FedAvg"] < slow["cloud-only, shared backhaul"]


@needs_matplotlib
def test_compression_study(tmp_path):
    """Each codec runs; the real payloads shrink in the order none > prune > int8 > both."""
    table = run_study("compression", tmp_path, rounds=2).set_index("variant")
    assert list(table.index) == [
        "none",
        "int8",
        "prune 0.3",
        "int8 + prune 0.3",
        "int8 + prune 0.3, weights (seed)",
    ]
    payload = table["uplink_payload_bytes"]
    assert payload["none"] > payload["prune 0.3"] > payload["int8"] > payload["int8 + prune 0.3"]
    assert table.at["none", "payload_reduction"] == 1.0
    assert (table["bytes_up"] > 0).all()


@needs_matplotlib
def test_battery_study(tmp_path):
    """Each selection policy runs and reports survival, dropouts and accuracy."""
    table = run_study("battery", tmp_path, rounds=2).set_index("policy")
    assert list(table.index) == ["all", "random", "battery"]
    assert (table["rounds_survived"] == 2).all()  # nobody runs empty in 2 rounds
    assert (table["devices_dropped"] == 0).all()
    assert table.at["all", "updates_aggregated"] == 2 * table.at["battery", "updates_aggregated"]


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
