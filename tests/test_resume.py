"""Checkpoints at cloud-round boundaries: a resumed run equals the uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import hierfl
from hierfl.checkpoint import CHECKPOINT, load_checkpoint
from hierfl.errors import HierflError
from hierfl.sim.runner import resume, simulate

ROOT = Path(__file__).parents[1]
TUTORIAL = ROOT / "scenarios" / "tutorial066.toml"


class Stop(Exception):
    """Raised from the round callback to interrupt a run after a checkpoint."""


def assert_same(a: hierfl.Result, b: hierfl.Result) -> None:
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.rounds, b.rounds)
    pd.testing.assert_frame_equal(a.devices, b.devices)
    assert a.model.keys() == b.model.keys()
    assert all(torch.equal(a.model[name], b.model[name]) for name in a.model)


@pytest.mark.parametrize("mode", ["hierarchical", "cloud_only"])
def test_resume_in_process_equals_uninterrupted(tmp_path, mode):
    """Stopping after round 2 and resuming gives identical events, rounds, devices, model."""
    scenario = hierfl.load_scenario(
        TUTORIAL, ["run.cloud_rounds=5", f"topology.mode={mode}", "selection.policy=random"]
    )
    whole = simulate(scenario)

    def stop_after_round_2(row: dict) -> None:
        if row["cloud_round"] == 2:
            raise Stop

    with pytest.raises(Stop):
        simulate(scenario, on_round=stop_after_round_2, checkpoint_dir=tmp_path)
    assert load_checkpoint(tmp_path)["next_round"] == 3
    assert_same(whole, resume(tmp_path))


def test_checkpoint_is_data_loaded_weights_only(tmp_path):
    """The checkpoint loads with torch.load(weights_only=True) and names its scenario."""
    scenario = hierfl.load_scenario(TUTORIAL, ["run.cloud_rounds=2"])
    simulate(scenario, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["next_round"] == 2
    assert '"cloud_rounds": 2' in state["scenario"]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    """Resuming a folder with no checkpoint says there is nothing to resume."""
    with pytest.raises(HierflError, match="nothing to resume"):
        resume(tmp_path)


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hierfl", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **kwargs,
    )


def wait_for_round(folder: Path, proc: subprocess.Popen, at_least: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (folder / CHECKPOINT).exists() and load_checkpoint(folder)["next_round"] >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of round {at_least} appeared: {proc.stderr.read()}")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    """A run killed with SIGKILL mid-way and resumed from the CLI equals an uninterrupted run."""
    args = [str(TUTORIAL), "--rounds", "40", "--quiet", "--no-plots"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli("run", *args, "--out", str(whole)).wait(timeout=600) == 0
    proc = cli("run", *args, "--out", str(killed))
    wait_for_round(killed, proc, at_least=3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    resumed = cli("run", "--resume", str(killed), "--quiet", "--no-plots")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert_same(hierfl.results.read_result(whole), hierfl.results.read_result(killed))
    assert not (killed / CHECKPOINT).exists()


def test_ctrl_c_exits_130_with_a_hint_and_a_resumable_folder(tmp_path):
    """SIGINT mid-run: exit 130, one line naming --resume, and the checkpoint resumes."""
    out = tmp_path / "run"
    proc = cli(
        "run",
        str(TUTORIAL),
        "--rounds",
        "40",
        "--quiet",
        "--no-plots",
        "--out",
        str(out),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for_round(out, proc, at_least=2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "--resume" in proc.stderr.read()
    resumed = cli("run", "--resume", str(out), "--quiet", "--no-plots")
    assert resumed.wait(timeout=600) == 0
    assert len(hierfl.results.read_result(out).rounds) == 40
