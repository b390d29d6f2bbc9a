"""Sweeps: grids times seeds, one folder per run, failures recorded, finished runs skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hierfl.errors import HierflError, ScenarioError
from hierfl.sweep import grid_combos, parse_grid, plan_sweep, run_sweep, scenario_hash

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


def test_grid_is_the_cartesian_product_times_seeds(tmp_path):
    """Two grids of 2 and 3 values with 2 seeds give 12 points with distinct folder names."""
    combos = grid_combos(["a.b=1,2", "c=x,y,z"], seeds=2, base_seed=10)
    assert len(combos) == 12 and {seed for _, seed in combos} == {10, 11}
    assert combos[0] == (("a.b=1", "c=x"), 10)
    plan = plan_sweep(scenario(tmp_path), ["run.cloud_rounds=1,2", "topology.edges=1,2,3"], 2,
                      tmp_path / "s")
    assert len({p.name for p in plan.points}) == 12
    first = plan.points[0]
    assert first.name == f"run.cloud_rounds-1__topology.edges-1__seed-5__{first.digest[:12]}"
    assert first.digest == scenario_hash(first.scenario)
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


def test_folders_of_lookalike_values_never_collide(tmp_path, monkeypatch):
    """data.path=d1/x.npz,d1_x.npz read alike but are two scenarios: two folders, two results.

    The files differ in feature count (4 and 6), so the compact model's size tells them apart.
    """
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d1").mkdir()
    for path, features in (("d1/x.npz", 4), ("d1_x.npz", 6)):
        np.savez(tmp_path / path, x=np.ones((40, features)), y=np.arange(40) % 2)
    base = BASE + '[data]\nkind = "npz"\npath = "d1/x.npz"\n'
    plan = plan_sweep(scenario(tmp_path, base), ["data.path=d1/x.npz,d1_x.npz"], 1, tmp_path / "s")
    names = [point.name for point in plan.points]
    assert len(set(names)) == 2 and all(n.startswith("data.path-d1_x.npz__seed-5__") for n in names)
    table = run_sweep(plan, workers=1)
    assert (table["status"] == "ok").all()
    used = {}
    for name in names:
        summary = json.loads((plan.out / name / "summary.json").read_text())
        used[summary["scenario"]["data"]["path"]] = summary["model"]["n_params"]
    # compact is features -> 64 -> 32 -> classes: 64 weights per feature
    assert set(used) == {str(tmp_path / "d1" / "x.npz"), str(tmp_path / "d1_x.npz")}
    assert used[str(tmp_path / "d1_x.npz")] - used[str(tmp_path / "d1" / "x.npz")] == 2 * 64


def test_seeds_can_be_a_grid(tmp_path):
    """--grid seed=3,8 runs exactly those seeds; together with --seeds N it is refused."""
    plan = plan_sweep(scenario(tmp_path), ["seed=3,8", "compression.quantize=none,int8"], 1,
                      tmp_path / "s")
    assert [(p.variant, p.seed) for p in plan.points] == [
        ("compression.quantize=none", 3),
        ("compression.quantize=none", 8),
        ("compression.quantize=int8", 3),
        ("compression.quantize=int8", 8),
    ]
    assert [p.scenario.seed for p in plan.points] == [3, 8, 3, 8]
    table = run_sweep(plan, workers=1)
    assert table["seed"].tolist() == [3, 8, 3, 8] and "seed" not in table["variant"].iloc[0]
    with pytest.raises(ScenarioError, match="drop --seeds 2"):
        plan_sweep(scenario(tmp_path), ["seed=3,8"], 2, tmp_path / "s")
    with pytest.raises(ScenarioError, match="integers >= 0: 'x'"):
        plan_sweep(scenario(tmp_path), ["seed=3,x"], 1, tmp_path / "s")


def test_same_scenario_twice_is_refused(tmp_path):
    """Two points that resolve to one scenario (even from different text), or a key given
    twice, stop the plan."""
    with pytest.raises(ScenarioError, match="resolve to the same scenario"):
        plan_sweep(scenario(tmp_path), ["run.cloud_rounds=2,2"], 1, tmp_path / "s")
    with pytest.raises(ScenarioError, match="resolve to the same scenario"):
        plan_sweep(scenario(tmp_path), ["run.cloud_rounds=2,3", "seed=5,5"], 1, tmp_path / "s")
    with pytest.raises(ScenarioError, match="run.cloud_rounds=2 .* and run.cloud_rounds=0x2 "):
        plan_sweep(scenario(tmp_path), ["run.cloud_rounds=2,0x2"], 1, tmp_path / "s")
    with pytest.raises(ScenarioError, match="run.cloud_rounds is given twice"):
        plan_sweep(scenario(tmp_path), ["run.cloud_rounds=2", "run.cloud_rounds=3"], 1,
                   tmp_path / "s")


def test_an_edited_scenario_reruns(tmp_path):
    """After the scenario file changes (local epochs, device count) no old result is reused."""
    path = scenario(tmp_path)
    grids = ["compression.quantize=none,int8"]
    first = run_sweep(plan_sweep(path, grids, 1, tmp_path / "s"), workers=1)
    edited = BASE.replace("cloud_rounds = 2", "cloud_rounds = 2\nlocal_epochs = 3")
    path.write_text(edited.replace("count = 2\n", "count = 3\n", 1))
    plan = plan_sweep(path, grids, 1, tmp_path / "s")
    ran = []
    again = run_sweep(plan, workers=1, on_done=lambda row: ran.append(row["wall_s"] > 0))
    assert ran == [True, True]
    assert set(first["run"]).isdisjoint(again["run"])
    assert (again["sim_time_s"] > first["sim_time_s"]).all()
    assert plan.stale_folders() == sorted(plan.out / name for name in first["run"])
    for name in again["run"]:
        assert len(pd.read_csv(plan.out / name / "devices.csv")) == 5


def test_fleet_size_and_mix_are_sweepable(tmp_path):
    """--grid devices.0.count=1,3 and devices.1.profile=mobile,soc change the fleet run."""
    grids = ["devices.0.count=1,3", "devices.1.profile=mobile,soc"]
    table = run_sweep(plan_sweep(scenario(tmp_path), grids, 1, tmp_path / "s"), workers=1)
    assert (table["status"] == "ok").all()
    for _, row in table.iterrows():
        devices = pd.read_csv(tmp_path / "s" / row["run"] / "devices.csv")
        expected = {"mcu": int(row["devices.0.count"]), row["devices.1.profile"]: 2}
        assert devices["profile"].value_counts().to_dict() == expected


def test_workers_must_be_positive(tmp_path):
    """--workers -1 or 0 is one error line, exit 2, and no sweep folder."""
    plan = plan_sweep(scenario(tmp_path), [], 1, tmp_path / "s")
    for workers in (-1, 0):
        with pytest.raises(HierflError, match=f"--workers must be >= 1: {workers}"):
            run_sweep(plan, workers=workers)
    done = hierfl_cli("sweep", str(scenario(tmp_path)), "--out", str(tmp_path / "s"),
                      "--workers", "-1")
    assert done.returncode == 2
    assert done.stderr == "error: --workers must be >= 1: -1\n"
    assert not (tmp_path / "s").exists()


def test_cli_sweep_with_a_failed_run_exits_1_and_names_it(tmp_path):
    """A sweep whose run failed writes its table, names the run on stderr and exits 1."""
    text = BASE + "[profiles.mcu]\nmemory_kb = 40\n[profiles.mobile]\nmemory_kb = 40\n"
    out = tmp_path / "s"
    done = hierfl_cli("sweep", str(scenario(tmp_path, text)), "--grid", "model.name=tiny,mobile",
                      "--out", str(out), "--workers", "1")
    assert done.returncode == 1, done.stderr
    table = pd.read_csv(out / "sweep.csv")
    failed = table.loc[table["status"] == "failed", "run"].item()
    assert failed.startswith("model.name-mobile__seed-5__")
    assert done.stderr.startswith(f"failed: {failed}: ModelDoesNotFitError: model.name:")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_stopping_the_sweep_ends_its_workers(tmp_path, how):
    """SIGKILL or Ctrl-C of the sweep process: its pool workers exit too (they would hold
    430 MB each); Ctrl-C is one line and exit 130, and each run keeps its checkpoint."""
    long = BASE.replace("cloud_rounds = 2", "cloud_rounds = 1000000")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "hierfl", "sweep", str(scenario(tmp_path, long)), "--grid",
         "seed=1,2,3", "--out", str(tmp_path / "s"), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while len(list((tmp_path / "s").glob("*/checkpoint.pt"))) < 2:
            assert time.monotonic() < deadline, "the workers never ran a round"
            time.sleep(0.2)
        workers = [pid for pid in _children(sweep.pid) if b"spawn_main" in _cmdline(pid)]
        assert len(workers) == 2
        sweep.send_signal(how)
        _, stderr = sweep.communicate(timeout=120)
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
        if how == signal.SIGINT:
            assert sweep.returncode == 130
            assert stderr == "interrupted: a run folder keeps its last checkpoint " \
                "(hierfl run --resume)\n"
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        sweep.kill()
        sweep.wait()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is no zombie (an orphan's zombie may wait for its reaper)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def hierfl_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hierfl", *args], capture_output=True, text=True, timeout=300
    )
