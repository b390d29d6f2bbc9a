"""Sweeps: grids times seeds, one folder per run, failures recorded, finished runs skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hierfl.errors import HierflError, ScenarioError
from hierfl.sweep import grid_points, parse_grid, plan_sweep, run_sweep

BASE = """
seed = 5
[run]
cloud_rounds = 2
learning = false
[[devices]]
profile = "mcu"
count = 2
[[devices]]
profile = "mobile"
count = 2
"""


def scenario(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "base.toml"
    path.write_text(text)
    return path


def test_grid_is_the_cartesian_product_times_seeds():
    """Two grids of 2 and 3 values with 2 seeds give 12 points with distinct folder names."""
    points = grid_points(["a.b=1,2", "c=x,y,z"], seeds=2, base_seed=10)
    assert len(points) == 12
    assert {p.seed for p in points} == {10, 11}
    assert len({p.name for p in points}) == 12
    assert points[0].overrides == ("a.b=1", "c=x") and points[0].name == "a.b-1__c-x__seed-10"
    with pytest.raises(ScenarioError, match="KEY=V1,V2"):
        parse_grid("novalues")


def test_bad_grid_values_are_refused_before_anything_runs(tmp_path):
    """A grid value the scenario rejects is a ScenarioError naming the key; no folder appears."""
    out = tmp_path / "sweep"
    with pytest.raises(ScenarioError, match="compression.quantize"):
        plan_sweep(scenario(tmp_path), ["compression.quantize=none,int4"], 1, out)
    assert not out.exists()


def test_sweeps_over_the_limit_need_confirmation(tmp_path):
    """A product above max_runs is refused unless confirmed."""
    grids = ["run.cloud_rounds=1,2,3", "seed=1,2"]
    with pytest.raises(HierflError, match="--yes"):
        plan_sweep(scenario(tmp_path), grids, 1, tmp_path / "s", max_runs=5)
    assert len(plan_sweep(scenario(tmp_path), grids, 1, tmp_path / "s", 5, True).points) == 6


def test_failing_run_is_recorded_and_others_finish(tmp_path):
    """A run that fails at run time gets status failed and error.txt; the others are ok."""
    text = BASE + "[profiles.mcu]\nmemory_kb = 40\n[profiles.mobile]\nmemory_kb = 40\n"
    plan = plan_sweep(scenario(tmp_path, text), ["model.name=tiny,mobile"], 1, tmp_path / "s")
    table = run_sweep(plan, workers=1)
    status = dict(zip(table["model.name"], table["status"], strict=True))
    assert status == {"tiny": "ok", "mobile": "failed"}
    failed = table[table["status"] == "failed"].iloc[0]
    assert "fits no device" in failed["error"]
    assert "fits no device" in (tmp_path / "s" / failed["run"] / "error.txt").read_text()
    assert (tmp_path / "s" / "sweep.csv").is_file()


def test_rerun_skips_finished_runs(tmp_path):
    """A second sweep into the same folder reruns only the missing run."""
    plan = plan_sweep(scenario(tmp_path), ["compression.quantize=none,int8"], 2, tmp_path / "s")
    first = run_sweep(plan, workers=1)
    assert (first["status"] == "ok").all()
    victim = plan.out / first["run"].iloc[1]
    for file in victim.iterdir():
        file.unlink()
    victim.rmdir()
    kept = plan.out / first["run"].iloc[0] / "events.parquet"
    before = kept.stat().st_mtime_ns
    ran = []
    again = run_sweep(plan, workers=1, on_done=lambda row: ran.append(row["wall_s"] > 0))
    assert sum(ran) == 1
    assert kept.stat().st_mtime_ns == before
    columns = ["run", "final_accuracy", "sim_time_s", "energy_j", "bytes_up"]
    pd.testing.assert_frame_equal(first[columns], again[columns])


def test_local_pool_and_ray_give_identical_results(tmp_path):
    """The same sweep on a 2-process pool and on a local Ray instance gives the same table."""
    grids = ["compression.quantize=none,int8", "selection.policy=all,random"]
    local = run_sweep(plan_sweep(scenario(tmp_path), grids, 1, tmp_path / "local"), workers=2)
    ray = run_sweep(plan_sweep(scenario(tmp_path), grids, 1, tmp_path / "ray"), backend="ray")
    assert len(local) == 4 and (local["status"] == "ok").all()
    pd.testing.assert_frame_equal(local.drop(columns="wall_s"), ray.drop(columns="wall_s"))
    for name in local["run"]:
        a = pd.read_parquet(tmp_path / "local" / name / "events.parquet")
        b = pd.read_parquet(tmp_path / "ray" / name / "events.parquet")
        pd.testing.assert_frame_equal(a, b)


def test_cli_sweep_writes_table_and_figures(tmp_path):
    """`hierfl sweep` writes sweep.csv, run folders and the two comparison figures."""
    out = tmp_path / "s"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hierfl",
            "sweep",
            str(scenario(tmp_path)),
            "--grid",
            "selection.policy=all,battery",
            "--seeds",
            "2",
            "--out",
            str(out),
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(out / "sweep.csv")) == 4
    for figure in ("sweep_accuracy.png", "sweep_tradeoff.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
