"""Checkpoints at cloud-round boundaries: a resumed run equals the uninterrupted one."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from clirun import invoke

import hierfl
from hierfl.checkpoint import CHECKPOINT, MAGIC, load_checkpoint, write_state
from hierfl.errors import HierflError
from hierfl.sim.runner import resume, simulate

ROOT = Path(__file__).parents[1]
TUTORIAL = ROOT / "scenarios" / "tutorial066.toml"


class Stop(Exception):
    """Raised from the round callback to interrupt a run after a checkpoint."""


def interrupt_after(scenario, folder: Path, cloud_round: int) -> None:
    """Run ``scenario`` with a checkpoint in ``folder`` and stop it once ``cloud_round`` closed."""

    def stop(row: dict) -> None:
        if row["cloud_round"] == cloud_round:
            raise Stop

    with pytest.raises(Stop):
        simulate(scenario, on_round=stop, checkpoint_dir=folder)


def assert_same(a: hierfl.Result, b: hierfl.Result) -> None:
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.rounds, b.rounds)
    pd.testing.assert_frame_equal(a.devices, b.devices)
    pd.testing.assert_frame_equal(a.links, b.links)
    pd.testing.assert_frame_equal(a.link_load, b.link_load)
    assert (a.model is None) == (b.model is None)
    if a.model is not None:
        assert a.model.keys() == b.model.keys()
        assert all(torch.equal(a.model[name], b.model[name]) for name in a.model)


FEEDBACK = ["compression.prune_ratio=0", "compression.top_k=0.1",
            "compression.error_feedback=true", "compression.downlink=int8"]


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("hierarchical", []), ("cloud_only", []), ("hierarchical", FEEDBACK)],
    ids=["hierarchical", "cloud_only", "error_feedback"],
)
def test_resume_in_process_equals_uninterrupted(tmp_path, mode, extra):
    """Stopping after round 2 and resuming gives identical events, rounds, devices, model;
    with error feedback, the senders' residuals come back from the checkpoint."""
    scenario = hierfl.load_scenario(
        TUTORIAL,
        ["run.cloud_rounds=5", f"topology.mode={mode}", "selection.policy=random", *extra],
    )
    whole = simulate(scenario)

    interrupt_after(scenario, tmp_path, 2)
    state = load_checkpoint(tmp_path)
    assert state["next_round"] == 3
    senders = set(state["residuals"]["nodes"].tolist())  # nodes 1, 2: edges; 3..22: devices
    assert ({1, 2} < senders <= set(range(1, 23))) if extra else not senders
    assert_same(whole, resume(tmp_path))


def test_checkpoint_is_data_loaded_weights_only(tmp_path):
    """Between its magic and its checksums, a checkpoint is a torch file that loads with
    torch.load(weights_only=True) and names its scenario."""
    scenario = hierfl.load_scenario(TUTORIAL, ["run.cloud_rounds=2"])
    simulate(scenario, checkpoint_dir=tmp_path)
    data = (tmp_path / CHECKPOINT).read_bytes()
    assert data.startswith(MAGIC)
    state = torch.load(io.BytesIO(data[len(MAGIC) : -64]), weights_only=True)
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
    """A run killed with SIGKILL mid-way and resumed from the CLI equals an uninterrupted run;
    the temporary file of a write the kill cut short is gone afterwards."""
    args = [str(TUTORIAL), "--rounds", "40", "--quiet", "--no-plots"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli("run", *args, "--out", str(whole)).wait(timeout=600) == 0
    proc = cli("run", *args, "--out", str(killed))
    wait_for_round(killed, proc, at_least=3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    (killed / ".checkpoint.pt.k1ll3d.hierfl-tmp").write_bytes(b"a write cut short")
    resumed = cli("run", "--resume", str(killed), "--quiet", "--no-plots")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert_same(hierfl.results.read_result(whole), hierfl.results.read_result(killed))
    assert not (killed / CHECKPOINT).exists()
    assert not list(killed.glob(".*")), "temporary or bookkeeping files left behind"


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


# --- damaged and foreign checkpoints (issue 12) ---


@pytest.fixture
def stopped(tmp_path, make_scenario) -> Path:
    """A run folder whose 3-round timing-only run stopped after cloud round 0."""
    scenario = make_scenario(run={"cloud_rounds": 3})
    folder = tmp_path / "run"

    def stop_after_round_0(row: dict) -> None:
        raise Stop

    with pytest.raises(Stop):
        simulate(scenario, on_round=stop_after_round_0, checkpoint_dir=folder)
    return folder


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip one byte at a relative position
        at = int(float(how) * (len(data) - 1))
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])


@pytest.mark.parametrize("how", ["empty", "truncated", "0", "0.3", "0.5", "0.97", "1"])
def test_damaged_checkpoint_is_one_line_and_kept(stopped, how):
    """An emptied, cut or one-byte-flipped checkpoint: exit 2, one line, the file kept."""
    damage(stopped / CHECKPOINT, how)
    before = (stopped / CHECKPOINT).read_bytes()
    done = invoke("run", "--resume", str(stopped), "--quiet")
    assert done.one_error_line, done
    assert str(stopped / CHECKPOINT) in done.err
    assert (stopped / CHECKPOINT).read_bytes() == before
    assert not (stopped / "summary.json").exists()


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.update(next_round=4), "next_round must be in [1, cloud_rounds = 3]: 4"),
        (lambda s: s.update(next_round=0), "next_round must be in [1, cloud_rounds = 3]: 0"),
        (lambda s: s.update(now_s=float("nan")), "now_s must be a finite time >= 0"),
        (lambda s: s.update(trained=torch.zeros(5, dtype=torch.int64)), "trained must be"),
        (lambda s: s["battery"].update(remaining_j=-s["battery"]["remaining_j"]),
         "battery.remaining_j must be finite and >= 0"),
        (lambda s: s.update(round_rows=[]), "round_rows must hold 1 rows"),
        (lambda s: s.update(scenario="{"), "scenario is not JSON"),
        (lambda s: s.update(format=1), "checkpoint format 1 unknown"),
        (lambda s: s.update(residuals={"nodes": torch.tensor([0]), "values": torch.zeros(1, 4522)}),
         "residuals.nodes must be distinct nodes in [1, 4)"),
        (lambda s: s.update(residuals={"nodes": torch.tensor([1]), "values": torch.zeros(1, 3)}),
         "residuals.values must be torch.float32 of shape (1, 4522)"),
    ],
)
def test_checkpoint_out_of_range_is_refused(stopped, edit, needle):
    """A checkpoint with a valid checksum but numbers that do not fit its scenario (a round
    beyond cloud_rounds, wrong shapes, negative energy) is one line and exit 2."""
    state = load_checkpoint(stopped)
    edit(state)
    write_state(state, stopped / CHECKPOINT)
    done = invoke("run", "--resume", str(stopped), "--quiet")
    assert done.one_error_line, done
    assert needle in done.err


EVIL = """
from pathlib import Path
Path(__file__).with_name("ran").write_text("imported")

def pick(candidates, battery, fraction, rng):
    return list(candidates)
"""


def test_checkpoint_naming_code_needs_your_signature_or_allow_code(stopped, tmp_path,
                                                                   monkeypatch):
    """A checkpoint naming package.module:Name that your hierfl did not write (another key)
    is refused before the module is found or run; --allow-code runs it; one your hierfl
    wrote resumes as its command line named it."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil_12.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(code))
    state = load_checkpoint(stopped)
    raw = json.loads(state["scenario"])
    raw["selection"]["policy"] = "evil_12:pick"
    state["scenario"] = json.dumps(raw)
    with monkeypatch.context() as elsewhere:
        elsewhere.setenv("HIERFL_CACHE_DIR", str(tmp_path / "another-account"))
        write_state(state, stopped / CHECKPOINT)
    refused = invoke("run", "--resume", str(stopped), "--quiet")
    assert refused.one_error_line, refused
    assert "selection.policy='evil_12:pick'" in refused.err and "--allow-code" in refused.err
    assert not (code / "ran").exists() and "evil_12" not in sys.modules
    write_state(state, stopped / CHECKPOINT)  # now signed with this account's key
    mine = invoke("run", "--resume", str(stopped), "--quiet", "--no-plots")
    assert mine.code == 0, mine
    assert (code / "ran").exists()


def test_allow_code_runs_a_foreign_checkpoints_code(stopped, tmp_path, monkeypatch):
    """--allow-code resumes a checkpoint from elsewhere that names code."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil_13.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(code))
    state = load_checkpoint(stopped)
    raw = json.loads(state["scenario"])
    raw["selection"]["policy"] = "evil_13:pick"
    state["scenario"] = json.dumps(raw)
    with monkeypatch.context() as elsewhere:
        elsewhere.setenv("HIERFL_CACHE_DIR", str(tmp_path / "another-account"))
        write_state(state, stopped / CHECKPOINT)
    done = invoke("run", "--resume", str(stopped), "--quiet", "--no-plots", "--allow-code")
    assert done.code == 0, done
    assert (code / "ran").exists()


def test_resume_writes_the_outputs_the_original_command_asked_for(tmp_path, monkeypatch):
    """A run started with --no-plots --no-trace resumes without them; --trace on the resume
    command line adds trace.json."""
    scenario = tmp_path / "s.toml"
    scenario.write_text("[run]\ncloud_rounds = 2\nlearning = false\n"
                        "[[devices]]\nprofile = 'mcu'\ncount = 2\n")

    def interrupted(*args):
        raise KeyboardInterrupt

    def stop_before_writing(out: Path) -> None:
        with monkeypatch.context() as patch:
            patch.setattr("hierfl.cli._write_outputs", interrupted)
            done = invoke("run", str(scenario), "--out", str(out), "--quiet", "--no-plots",
                          "--no-trace")
        assert done.code == 130 and (out / CHECKPOINT).exists()

    tables = {"events.parquet", "rounds.csv", "devices.csv", "summary.json", "links.csv",
              "link_load.parquet"}
    stop_before_writing(tmp_path / "a")
    assert invoke("run", "--resume", str(tmp_path / "a"), "--quiet").code == 0
    assert {p.name for p in (tmp_path / "a").iterdir()} == tables
    stop_before_writing(tmp_path / "b")
    assert invoke("run", "--resume", str(tmp_path / "b"), "--quiet", "--trace").code == 0
    assert {p.name for p in (tmp_path / "b").iterdir()} == {*tables, "trace.json"}


def test_resume_of_a_folder_in_use_is_refused(stopped):
    """--resume of a folder another hierfl process holds is one line; the checkpoint stays."""
    from hierfl.rundir import claim

    before = (stopped / CHECKPOINT).read_bytes()
    with claim(stopped, resume=True):
        done = invoke("run", "--resume", str(stopped), "--quiet")
    assert done.one_error_line, done
    assert "another hierfl run is writing into it" in done.err
    assert (stopped / CHECKPOINT).read_bytes() == before


def test_resumed_run_records_the_original_overrides(tmp_path, monkeypatch):
    """A run started with --set and --seed, killed and resumed, keeps those overrides in
    summary.json (and so in its figures' titles); a corrupt record gives none, not an error."""
    from hierfl.rundir import OPTIONS

    scenario = tmp_path / "s.toml"
    scenario.write_text("[run]\ncloud_rounds = 2\nlearning = false\n"
                        "[[devices]]\nprofile = 'mcu'\ncount = 2\n")

    def interrupted(*args):
        raise KeyboardInterrupt

    for name, record in (("a", None), ("b", '{"overrides": [1, "x"]}')):
        out = tmp_path / name
        with monkeypatch.context() as patch:
            patch.setattr("hierfl.cli._write_outputs", interrupted)
            done = invoke("run", str(scenario), "--out", str(out), "--quiet", "--no-plots",
                          "--set", "selection.fraction=0.5", "--seed", "3")
        assert done.code == 130
        if record is not None:
            (out / OPTIONS).write_text(record)
        assert invoke("run", "--resume", str(out), "--quiet").code == 0
        summary = json.loads((out / "summary.json").read_text())
        expected = ["selection.fraction=0.5", "seed=3"] if record is None else []
        assert summary["overrides"] == expected


def test_resume_after_late_updates_keeps_them(tmp_path):
    """Under a 4 s deadline the slow board is late in round 0 and still at work when it
    closes (no checkpoint then); round 1 closes with nothing out, so its checkpoint holds the
    late count, and resuming from it equals the uninterrupted run."""
    from tests.test_triggers import three_boards

    scenario = three_boards({"trigger": "deadline", "deadline_s": 4.0}, cloud_rounds=4)
    whole = simulate(scenario)
    assert whole.devices.set_index("device").at["slow-1", "late_updates"] == 2

    interrupt_after(scenario, tmp_path, 1)
    state = load_checkpoint(tmp_path)
    assert state["next_round"] == 2 and state["late"].tolist() == [0, 1, 0]
    assert_same(whole, resume(tmp_path))
