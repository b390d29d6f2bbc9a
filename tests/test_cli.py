"""The command line end to end, through a subprocess: exit codes, run folders, one-line errors."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from clirun import invoke

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
        "link_load.parquet",
        "links.csv",
        "links.png",
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
    "variant fits no device": (
        "[model]\nvariants = [1, 0.5]\n[[devices]]\nprofile = 'mcu'\ncount = 2\n"
        "[profiles.mcu]\nmemory_kb = 40\n",
        "model.variants: width 1 needs 44688 bytes to train (batch_size 8) and fits no device",
    ),
    "variant width zero": (GOOD + "[model]\nvariants = [1, 0]\n", "model.variants: must be"),
    "variant repeated": (GOOD + "[model]\nvariants = [0.5, 0.5]\n", "must not repeat"),
    "time budget missing": (
        GOOD + "[model]\nvariants = [1]\nassign = 'memory_and_time'\n",
        "compute_budget_s is required",
    ),
    "cluster bits over 8": (
        GOOD + "[compression]\ncluster_bits = 9\n", "compression.cluster_bits: must be <= 8: 9"
    ),
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
    """`profiles` shows every built-in profile, its directions and tail, and its sources."""
    done = hierfl("profiles")
    assert done.returncode == 0
    for name in ("mcu", "soc", "mobile", "edge_server", "datasheet", "esp32s3_wifi", "rpi4",
                 "phone_lte", "nbiot_node", "jetson_edge"):
        assert name in done.stdout
    assert "13,000" in done.stdout and "11.576" in done.stdout, "phone_lte downlink and tail"


def test_plot_redraws_and_compare_overlays(tmp_path):
    """`plot` redraws a run folder's figures (and, with --trace, trace.json); `compare` writes
    one figure and a table."""
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
    redrawn = hierfl("plot", runs[0], "--trace")
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
    for args in ([], ["run"], ["validate"], ["profiles"], ["plot"], ["compare"], ["export"]):
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


# --- trust: names, markup, --out checks, locks, --force, disk full (issue 12) ---


def in_tmp(tmp_path: Path, monkeypatch, text: str = GOOD) -> str:
    """Work in ``tmp_path`` (so default runs/NAME land there) with a small scenario file."""
    monkeypatch.chdir(tmp_path)
    return write(tmp_path, text)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ['"../../escaped"', '"/tmp/abs"', '"a\\nb"', '""', '"a b"'])
def test_unsafe_names_are_refused(tmp_path, monkeypatch, name):
    """A name that is not one plain folder name is one line, exit 2, and nothing written."""
    scenario = in_tmp(tmp_path, monkeypatch)
    before = tree(tmp_path.parent)
    done = invoke("run", scenario, "--quiet", "--set", f"name={name}")
    assert done.one_error_line, done
    assert "name: must be letters, digits" in done.err
    assert tree(tmp_path.parent) == before


def test_markup_in_user_text_prints_as_typed(tmp_path, monkeypatch):
    """'[/bold]' in a value and '[low, high]' in a rule reach stderr verbatim, on one line."""
    scenario = in_tmp(tmp_path, monkeypatch)
    bold = invoke("run", scenario, "--set", "model.name=[/bold]")
    assert bold.one_error_line, bold
    assert "'[/bold]'" in bold.err
    bracket = invoke("run", scenario, "--set", "data.samples_per_device=[5, 1]")
    assert bracket.one_error_line, bracket
    assert "[low, high]" in bracket.err
    listed = invoke("validate", str(tmp_path / "[red]x.toml"))
    assert listed.one_error_line and "[red]x.toml" in listed.err


@pytest.mark.parametrize(
    ("where", "needle"),
    [("f", "is a file, not a folder"), ("f/run", "a folder above it is a file")],
)
def test_out_that_cannot_be_a_folder_is_one_line(tmp_path, monkeypatch, where, needle):
    """--out naming a file, or a path under a file, is one line, exit 2, files untouched."""
    scenario = in_tmp(tmp_path, monkeypatch)
    (tmp_path / "f").write_text("a file")
    out = tmp_path / where
    before = tree(tmp_path)
    done = invoke("run", scenario, "--out", str(out), "--quiet")
    assert done.one_error_line, done
    assert needle in done.err
    assert tree(tmp_path) == before


def test_read_only_out_is_found_before_round_one(tmp_path, monkeypatch):
    """A folder that refuses files stops the run before it simulates anything.

    (Tests may run as root, whom a read-only mode does not stop, so the refusal is the
    system's PermissionError raised where hierfl first creates a file in the folder.)
    """
    scenario = in_tmp(tmp_path, monkeypatch)
    (tmp_path / "ro").mkdir()

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("hierfl.rundir._open_lock", refuse)
    monkeypatch.setattr("hierfl.cli.simulate", lambda *a, **k: pytest.fail("simulated"))
    done = invoke("run", scenario, "--out", str(tmp_path / "ro"), "--quiet")
    assert done.one_error_line, done
    assert "cannot write into it: Permission denied" in done.err


def test_disk_full_while_writing_is_one_line_and_resumable(tmp_path, monkeypatch):
    """ENOSPC while writing a table: one line naming the file, no temporary file left,
    and the checkpoint stays so that --resume finishes the run once there is room."""
    scenario = in_tmp(tmp_path, monkeypatch)
    out = tmp_path / "run"

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_parquet", full)
        done = invoke("run", scenario, "--out", str(out), "--quiet", "--no-plots")
    assert done.one_error_line, done
    assert f"cannot write {out / 'events.parquet'}: No space left on device" in done.err
    assert not list(out.glob(".*tmp")) and not (out / "events.parquet").exists()
    assert (out / "checkpoint.pt").exists()
    resumed = invoke("run", "--resume", str(out), "--quiet")
    assert resumed.code == 0, resumed
    assert (out / "events.parquet").exists() and not (out / "checkpoint.pt").exists()
    assert not (out / "timeline.png").exists()  # the original --no-plots holds on resume


def test_validate_a_folder_is_one_line(tmp_path):
    """`validate DIR` says the path is not a readable scenario file: exit 2, one line."""
    done = invoke("validate", str(tmp_path))
    assert done.one_error_line, done
    assert "cannot read the scenario file: Is a directory" in done.err


def test_validate_refuses_a_custom_model_that_run_cannot_import(tmp_path, monkeypatch):
    """validate finds the module a scenario names as run would, without running it."""
    scenario = in_tmp(tmp_path, monkeypatch)
    missing = invoke("validate", scenario, "--set", "model.name=nosuchmodule_12:Wide")
    assert missing.one_error_line, missing
    assert "model.name: cannot load 'nosuchmodule_12:Wide'" in missing.err
    (tmp_path / "wide_12.py").write_text(
        "raise SystemExit('imported')\nclass Wide:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = invoke("validate", scenario, "--set", "model.name=wide_12:Wide")
    assert found.code == 0, found  # found and read, never imported (it would exit)


def test_policy_with_a_wrong_signature_leaves_no_out(tmp_path, monkeypatch):
    """A custom policy that cannot take (candidates, battery, fraction, rng) is one line
    and leaves no --out folder, whether its source shows it or only its import does."""
    scenario = in_tmp(tmp_path, monkeypatch)
    (tmp_path / "pol_12.py").write_text(
        "def bad(candidates):\n    return candidates\n\n"
        "def make():\n    return lambda candidates, battery: candidates\n\nmade = make()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("bad", "made"):
        out = tmp_path / f"out-{name}" / "deeper" / "run"
        policy = f"selection.policy=pol_12:{name}"
        done = invoke("run", scenario, "--out", str(out), "--set", policy)
        assert done.one_error_line, done
        assert "a policy takes (candidates, battery, fraction, rng)" in done.err
        assert not (tmp_path / f"out-{name}").exists()


def test_force_clears_the_old_runs_outputs(tmp_path, monkeypatch):
    """--force removes every file a run writes (and stale temporary files) before the new
    run writes; files hierfl does not write stay."""
    scenario = in_tmp(tmp_path, monkeypatch)
    out = tmp_path / "run"
    out.mkdir()
    old = ["model.pt", "trace.json", "timeline.png", "accuracy.png", "energy.png",
           "checkpoint.pt", "summary.json", ".summary.json.abc.hierfl-tmp"]
    for name in [*old, "keep.txt"]:
        (out / name).write_text("old")
    done = invoke("run", scenario, "--out", str(out), "--quiet", "--no-plots", "--no-trace",
                  "--force")
    assert done.code == 0, done
    names = {p.name for p in out.iterdir()}
    assert names == {"events.parquet", "rounds.csv", "devices.csv", "summary.json", "keep.txt",
                     "links.csv", "link_load.parquet"}
    assert (out / "summary.json").read_text() != "old"


def test_a_held_out_folder_refuses_a_second_run(tmp_path, monkeypatch):
    """While one run holds --out, a second one (even with --force) is one line, exit 2,
    and writes nothing; once released, the folder is usable again."""
    from hierfl.rundir import claim

    scenario = in_tmp(tmp_path, monkeypatch)
    out = tmp_path / "run"
    with claim(out):
        done = invoke("run", scenario, "--out", str(out), "--quiet", "--force")
        assert done.one_error_line, done
        assert "another hierfl run is writing into it" in done.err
        assert [p.name for p in out.iterdir()] == [".hierfl.lock"]
    assert list(out.iterdir()) == []  # the holder released it and wrote nothing
    assert invoke("run", scenario, "--out", str(out), "--quiet", "--no-plots").code == 0


def test_two_processes_into_one_out(tmp_path):
    """A second `hierfl run` into the --out of a run in progress is refused at once."""
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "hierfl", "run", TUTORIAL, "--rounds", "200", "--quiet",
         "--no-plots", "--no-trace", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.pt").exists() and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = hierfl("run", TUTORIAL, "--rounds", "2", "--quiet", "--force", "--out", str(out))
        assert second.returncode == 2 and "another hierfl run is writing into it" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait(timeout=60)


def test_model_pt_is_byte_deterministic(tmp_path, monkeypatch):
    """Two runs of one scenario and seed write byte-identical model.pt files."""
    scenario = in_tmp(tmp_path, monkeypatch, GOOD.replace("learning = false", "learning = true")
                      + "[model]\nname = 'tiny'\n")
    for out in ("a", "b"):
        done = invoke("run", scenario, "--out", out, "--quiet", "--no-plots", "--no-trace")
        assert done.code == 0, done
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished timing-only run folder, written by the library."""
    import hierfl

    out = tmp_path_factory.mktemp("finished") / "run"
    scenario = hierfl.parse_scenario({
        "run": {"cloud_rounds": 2, "learning": False},
        "devices": [{"profile": "mcu", "count": 2}],
    })
    hierfl.run(scenario).write(out)
    return out


def _edit_csv(name: str, edit):
    def apply(folder: Path) -> None:
        edit(pd.read_csv(folder / name)).to_csv(folder / name, index=False)

    return apply


def _edit_summary(edit):
    def apply(folder: Path) -> None:
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps(edit(summary)))

    return apply


BAD_FOLDERS = {
    "rounds.csv without a column": (
        _edit_csv("rounds.csv", lambda t: t.drop(columns="sim_time_s")),
        "rounds.csv: cannot read it back as hierfl wrote it: missing columns sim_time_s",
    ),
    "rounds.csv with text for numbers": (
        _edit_csv("rounds.csv", lambda t: t.assign(energy_j="lots")),
        "columns energy_j are not numbers",
    ),
    "rounds.csv without rows": (_edit_csv("rounds.csv", lambda t: t.iloc[:0]), "no rows"),
    "devices.csv without a column": (
        _edit_csv("devices.csv", lambda t: t.drop(columns="edge")), "missing columns edge"
    ),
    "summary.json a list": (_edit_summary(lambda s: [s]), "not a JSON object: list"),
    "summary.json with a text target": (
        _edit_summary(lambda s: {**s, "target_accuracy": "high"}), "target_accuracy is 'high'"
    ),
    "summary.json not JSON": (
        lambda d: (d / "summary.json").write_text("{"), "summary.json: cannot read it back"
    ),
    "events.parquet not parquet": (
        lambda d: (d / "events.parquet").write_bytes(b"PAR1 not really"),
        "events.parquet: cannot read it back",
    ),
    "model.pt not a torch file": (
        lambda d: (d / "model.pt").write_bytes(b"not a zip"), "model.pt: cannot read it back"
    ),
    "model.pt cut short": (
        lambda d: (d / "model.pt").write_bytes(b""), "model.pt: cannot read it back"
    ),
    "a file where the folder should be": (
        lambda d: (shutil.rmtree(d), d.write_text("x")), "not a run folder (not a folder)"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
@pytest.mark.parametrize("command", ["plot", "compare"])
def test_plot_and_compare_of_a_bad_folder_are_one_line(finished, tmp_path, case, command):
    """A run folder whose files are not what hierfl wrote: one line naming the file and
    the fault, exit 2, and nothing written (no figure, no trace.json)."""
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    damage, needle = BAD_FOLDERS[case]
    damage(folder)
    before = tree(tmp_path)
    args = ["plot", str(folder)] if command == "plot" else [
        "compare", str(folder), str(finished), "--out", str(tmp_path / "cmp.png")]
    done = invoke(*args)
    assert done.one_error_line, done
    assert needle in done.err
    assert tree(tmp_path) == before


def test_quiet_prints_no_summary_table(tmp_path):
    """--quiet prints the run folder's line and nothing else on stdout."""
    out = tmp_path / "run"
    done = hierfl("run", write(tmp_path, GOOD), "--out", str(out), "--quiet", "--no-plots")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run folder: {out}"


def test_piped_tables_keep_numbers_whole(tmp_path):
    """Output that is not a terminal gets plain columns: a row is one line, numbers unsplit."""
    runs = []
    for mode in ("hierarchical", "cloud_only"):
        out = tmp_path / f"a_rather_long_run_folder_name_{mode}"
        done = hierfl("run", TUTORIAL, "--rounds", "2", "--out", str(out), "--quiet",
                      "--no-plots", "--set", f"topology.mode={mode}")
        assert done.returncode == 0, done.stderr
        runs.append(out)
    compared = hierfl("compare", *map(str, runs), "--out", str(tmp_path / "c.png"))
    assert compared.returncode == 0, compared.stderr
    for out in runs:
        summary = json.loads((out / "summary.json").read_text())
        (line,) = [line for line in compared.stdout.splitlines() if line.startswith(out.name)]
        assert str(summary["bytes_up"]) in line.split()
        assert f"{summary['sim_time_s']:.4g}" in line.split()


def test_console_rounds_and_energy_read_like_rounds_csv(tmp_path):
    """Each round line names cloud_round as rounds.csv does; its energy is the sum so far."""
    out = tmp_path / "run"
    done = hierfl("run", TUTORIAL, "--rounds", "3", "--out", str(out), "--no-plots",
                  "--set", "run.learning=false")
    assert done.returncode == 0, done.stderr
    rounds = pd.read_csv(out / "rounds.csv")
    lines = [line for line in done.stdout.splitlines() if line.startswith("cloud_round")]
    assert len(lines) == 3
    for k, line in enumerate(lines):
        number = int(rounds.at[k, "cloud_round"])
        assert line.startswith(f"cloud_round {number} ({number + 1}/3 done)")
        so_far = rounds.loc[:k, "energy_j"].sum()
        assert f"device energy so far {so_far:,.1f} J" in line


def test_summary_reports_skipped_devices_and_no_target_without_learning(tmp_path):
    """Devices the model does not fit are counted; a timing-only run has no time-to-target."""
    text = GOOD.replace("learning = false", "learning = false\ntarget_accuracy = 0.7") + (
        '[[devices]]\nprofile = "tiny"\ncount = 3\n'
        '[profiles.tiny]\nmemory_kb = 1\ncompute_mflops = 10\nbandwidth_kbps = 10\n'
        'latency_ms = 1\nvoltage_v = 3\npower_compute_w = 1\npower_tx_w = 1\n'
        'power_rx_w = 1\npower_idle_w = 0\n'
    )
    done = hierfl("run", write(tmp_path, text), "--out", str(tmp_path / "run"), "--no-plots")
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("devices skipped")]
    assert line.split()[-1] == "3"
    assert "time to" not in done.stdout and "not reached" not in done.stdout


def test_plot_trace_and_window_options(tmp_path):
    """`plot --trace` writes trace.json; --from/--to draw a window; a bad one exits 2."""
    out = tmp_path / "run"
    done = hierfl("run", write(tmp_path, GOOD), "--out", str(out), "--quiet", "--no-plots",
                  "--no-trace")
    assert done.returncode == 0, done.stderr
    plotted = hierfl("plot", str(out), "--from", "0.5", "--to", "2")
    assert plotted.returncode == 0, plotted.stderr
    assert (out / "timeline.png").exists() and not (out / "trace.json").exists()
    assert not (out / "accuracy.png").exists()  # timing-only: nothing to draw
    traced = hierfl("plot", str(out), "--trace")
    assert traced.returncode == 0 and (out / "trace.json").stat().st_size > 1_000
    bad = hierfl("plot", str(out), "--from", "5", "--to", "2")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--to" in bad.stderr


def test_compare_says_whether_selection_was_held_fixed(tmp_path):
    """compare states whether the runs trained the same devices in every edge round."""
    runs = []
    for mode, policy in (("hierarchical", "all"), ("cloud_only", "all"),
                         ("cloud_only", "random")):
        out = tmp_path / f"{mode}_{policy}"
        done = hierfl("run", TUTORIAL, "--rounds", "2", "--out", str(out), "--quiet",
                      "--no-plots", "--set", f"topology.mode={mode}", "--set",
                      f"selection.policy={policy}", "--set", "run.learning=false")
        assert done.returncode == 0, done.stderr
        runs.append(str(out))
    same = hierfl("compare", runs[0], runs[1], "--out", str(tmp_path / "c.png"))
    assert "selection held fixed" in same.stdout
    differ = hierfl("compare", runs[0], runs[2], "--out", str(tmp_path / "c.png"))
    assert "selection differs" in differ.stdout and "in 2 of 2 edge rounds" in differ.stdout


def test_trace_json_by_default_only_below_the_limit(tmp_path, monkeypatch):
    """Above the default number of events trace.json is skipped, with a note; --trace forces it.

    GOOD has 2 mcu devices x 2 rounds: 4 downloads, computes and uploads, 2 edge and 2 cloud
    aggregations, 2 cloud downloads and 2 edge uploads, and the nodes' idle events.
    """
    import hierfl.cli

    monkeypatch.setattr(hierfl.cli, "TRACE_DEFAULT_EVENTS", 5)
    scenario = write(tmp_path, GOOD)
    skipped = invoke("run", scenario, "--out", str(tmp_path / "a"), "--quiet", "--no-plots")
    assert skipped.code == 0, skipped
    assert not (tmp_path / "a" / "trace.json").exists()
    (note,) = skipped.err.strip().splitlines()
    assert note.startswith("note: trace.json not written:") and "--trace" in note
    forced = invoke("run", scenario, "--out", str(tmp_path / "b"), "--quiet", "--no-plots",
                    "--trace")
    assert forced.code == 0 and (tmp_path / "b" / "trace.json").exists()
    assert forced.err == ""
    monkeypatch.setattr(hierfl.cli, "TRACE_DEFAULT_EVENTS", 10_000)
    small = invoke("run", scenario, "--out", str(tmp_path / "c"), "--quiet", "--no-plots")
    assert small.code == 0 and (tmp_path / "c" / "trace.json").exists() and small.err == ""
