"""The command line end to end, through a subprocess: exit codes, run folders, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parents[1]
TUTORIAL = str(ROOT / "scenarios" / "tutorial066.toml")


def hierfl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hierfl", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


GOOD = """
[run]
cloud_rounds = 2
learning = false
[[devices]]
profile = "mcu"
count = 2
"""


def test_run_writes_the_run_folder(tmp_path):
    """`hierfl run` exits 0 and writes events, rounds, devices and summary that agree."""
    out = tmp_path / "run"
    done = hierfl("run", TUTORIAL, "--out", str(out), "--rounds", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png",
        "devices.csv",
        "energy.png",
        "events.parquet",
        "model.pt",
        "rounds.csv",
        "summary.json",
        "timeline.png",
        "trace.json",
    ]
    rounds = pd.read_csv(out / "rounds.csv")
    events = pd.read_parquet(out / "events.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert len(rounds) == 2
    assert summary["sim_time_s"] == pytest.approx(events["t_end"].max())
    assert summary["scenario"]["run"]["cloud_rounds"] == 2
    assert list(events.columns) == [
        "t_start",
        "t_end",
        "kind",
        "node",
        "edge",
        "cloud_round",
        "edge_round",
        "bytes",
        "energy_j",
    ]


def test_set_overrides_are_applied_and_validated(tmp_path):
    """--set changes the resolved scenario; a bad --set value exits 2 naming the key."""
    out = tmp_path / "run"
    done = hierfl(
        "run",
        write(tmp_path, GOOD),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "compression.quantize=int8",
        "--seed",
        "7",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"]["compression"]["quantize"] == "int8"
    assert summary["seed"] == 7
    bad = hierfl(
        "run",
        write(tmp_path, GOOD),
        "--out",
        str(tmp_path / "x"),
        "--set",
        "compression.quantize=int4",
    )
    assert bad.returncode == 2
    assert "compression.quantize" in bad.stderr and "int4" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_non_empty_out_is_refused_unless_forced(tmp_path):
    """An existing non-empty --out exits 2 and is left alone; --force writes into it."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = hierfl("run", write(tmp_path, GOOD), "--out", str(out), "--quiet")
    assert refused.returncode == 2
    assert "--force" in refused.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    forced = hierfl("run", write(tmp_path, GOOD), "--out", str(out), "--quiet", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "summary.json").exists() and (out / "keep.txt").exists()


BAD = {
    "unknown key": (GOOD + "colour = 'red'\n", "colour"),
    "negative bandwidth": (
        GOOD + "[topology]\nbackhaul = { bandwidth_kbps = -5, latency_ms = 1 }\n",
        "topology.backhaul.bandwidth_kbps",
    ),
    "unknown profile": ("[[devices]]\nprofile = 'fpga'\ncount = 1\n", "fpga"),
    "cell without edges": (
        GOOD + "[topology]\nmode = 'cloud_only'\nedges = 0\ncell = { bandwidth_kbps = 1 }\n",
        "topology.cell",
    ),
    "per-edge list too short": (
        GOOD + "[topology]\nedges = 2\nbackhaul = [{ bandwidth_kbps = 1 }]\n",
        "topology.backhaul: a per-edge list needs one table per edge: 2 wanted, 1 given",
    ),
    "zero cell bandwidth": (
        GOOD + "[topology]\ncell = { bandwidth_kbps = 0 }\n",
        "topology.cell.bandwidth_kbps",
    ),
    "unknown core key": (
        GOOD + "[topology]\ncore = { bandwidth_kbps = 1, mtu = 1500 }\n",
        "topology.core.mtu",
    ),
    "zero devices": ("[[devices]]\nprofile = 'mcu'\ncount = 0\n", "devices[0].count"),
    "no devices": ("devices = []\n", "devices"),
    "model too large": (
        "[model]\nname = 'mobile'\n[[devices]]\nprofile = 'mcu'\ncount = 2\n"
        "[profiles.mcu]\nmemory_kb = 16\n",
        "fits no device",
    ),
    "not toml": ("[run\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenarios_exit_2_with_one_line(tmp_path, case):
    """Each bad scenario gives exit 2, one error line naming the key, no traceback, no folder."""
    text, needle = BAD[case]
    out = tmp_path / "run"
    done = hierfl("run", write(tmp_path, text), "--out", str(out))
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "case",
    ["cell without edges", "per-edge list too short", "zero cell bandwidth", "unknown core key"],
)
def test_validate_refuses_bad_links_in_one_line(tmp_path, case):
    """`validate` refuses each bad link with exit 2 and one line naming the key."""
    text, needle = BAD[case]
    done = hierfl("validate", write(tmp_path, text))
    assert done.returncode == 2 and not done.stdout
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_validate_prints_resolved_scenario_or_errors(tmp_path):
    """`validate` prints defaults filled in for a good file and exits 2 on a bad one."""
    good = hierfl("validate", TUTORIAL)
    assert good.returncode == 0, good.stderr
    assert '"min_battery": 0.1' in good.stdout and '"class_sep"' in good.stdout
    bad = hierfl("validate", TUTORIAL, write(tmp_path, BAD["unknown key"][0]))
    assert bad.returncode == 2
    assert "colour" in bad.stderr


def test_profiles_lists_builtins_with_sources():
    """`profiles` shows every built-in profile and where its figures come from."""
    done = hierfl("profiles")
    assert done.returncode == 0
    for name in ("mcu", "soc", "mobile", "edge_server", "datasheet"):
        assert name in done.stdout


def test_plot_redraws_and_compare_overlays(tmp_path):
    """`plot` redraws a run folder's figures; `compare` writes one figure and a table."""
    runs = []
    for mode in ("hierarchical", "cloud_only"):
        out = tmp_path / mode
        done = hierfl(
            "run",
            write(tmp_path, GOOD),
            "--out",
            str(out),
            "--quiet",
            "--no-plots",
            "--set",
            f"topology.mode={mode}",
        )
        assert done.returncode == 0, done.stderr
        assert not (out / "timeline.png").exists() and (out / "trace.json").exists()
        runs.append(str(out))
    (tmp_path / "hierarchical" / "trace.json").unlink()
    redrawn = hierfl("plot", runs[0])
    assert redrawn.returncode == 0, redrawn.stderr
    assert (tmp_path / "hierarchical" / "timeline.png").stat().st_size > 10_000
    assert (tmp_path / "hierarchical" / "trace.json").stat().st_size > 1_000
    figure = tmp_path / "cmp.png"
    compared = hierfl("compare", *runs, "--out", str(figure))
    assert compared.returncode == 0, compared.stderr
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hierarchical" in compared.stdout and "cloud_only" in compared.stdout
    not_a_run = hierfl("plot", str(tmp_path))
    assert not_a_run.returncode == 2 and "not a run folder" in not_a_run.stderr


def test_help_on_every_command():
    """--help works on the app and each command."""
    for args in ([], ["run"], ["validate"], ["profiles"], ["plot"], ["compare"]):
        done = hierfl(*args, "--help")
        assert done.returncode == 0 and "Usage" in done.stdout


def test_run_folder_files_have_the_usual_mode(tmp_path):
    """Files written atomically are readable by others (umask 022), not left at 0600."""
    out = tmp_path / "run"
    done = hierfl("run", write(tmp_path, GOOD), "--out", str(out), "--quiet", "--no-plots")
    assert done.returncode == 0, done.stderr
    for path in out.iterdir():
        assert path.stat().st_mode & 0o044, path.name


def test_no_trace_skips_only_trace_json(tmp_path):
    """--no-trace leaves trace.json out of the run folder and writes everything else."""
    out = tmp_path / "run"
    done = hierfl("run", write(tmp_path, GOOD), "--out", str(out), "--quiet", "--no-plots",
                  "--no-trace")
    assert done.returncode == 0, done.stderr
    names = {p.name for p in out.iterdir()}
    assert "trace.json" not in names
    assert {"events.parquet", "rounds.csv", "devices.csv", "summary.json"} <= names
