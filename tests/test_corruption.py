"""Random damage to checkpoints, npz files and run folders, driven through the CLI.

Whatever the damage, a command either succeeds (the damage left a valid file) or says so
in one line with exit status 2, no traceback; it writes nothing outside its own output,
and no file of a finished run is lost or changed. A damaged checkpoint never resumes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from clirun import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hierfl
from hierfl.sim.runner import simulate

SCENARIO = """
name = "pristine"
seed = 3
[run]
cloud_rounds = 2
local_epochs = 1
[data]
kind = "npz"
path = "data.npz"
samples_per_device = 5
[model]
name = "tiny"
[[devices]]
profile = "mcu"
count = 2
"""
RUN_DATA = ("events.parquet", "rounds.csv", "devices.csv", "summary.json", "model.pt")


class Stop(Exception):
    """Ends the run after its first cloud round, leaving a checkpoint."""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A folder with a scenario, its npz data, a finished run and a run stopped mid-way."""
    root = tmp_path_factory.mktemp("pristine")
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.normal(size=(40, 4)).astype(np.float32),
             y=rng.integers(0, 3, size=40))
    (root / "scenario.toml").write_text(SCENARIO)
    with contextlib.chdir(root):
        done = invoke("run", "scenario.toml", "--out", "finished", "--quiet", "--no-plots")
        assert done.code == 0, done
        scenario = hierfl.load_scenario("scenario.toml")

        def stop(row: dict) -> None:
            raise Stop

        with pytest.raises(Stop):
            simulate(scenario, on_round=stop, checkpoint_dir="stopped")
    return root


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


damages = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 0.999)),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
    st.sampled_from([("empty",), ("delete",), ("folder",)]),
)


def damage(path: Path, how: tuple) -> None:
    """Flip bits of one byte, cut, replace, extend, empty, delete, or make it a folder."""
    data = path.read_bytes()
    kind = how[0]
    if kind == "flip":
        at = int(how[1] * (len(data) - 1))
        path.write_bytes(data[:at] + bytes([data[at] ^ how[2]]) + data[at + 1 :])
    elif kind == "truncate":
        path.write_bytes(data[: int(how[1] * len(data))])
    elif kind == "garbage":
        path.write_bytes(how[1])
    elif kind == "append":
        path.write_bytes(data + how[1])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        if kind == "folder":
            path.mkdir()


TARGETS = {
    # damaged file -> (command, the folder or file the command may write)
    "stopped/checkpoint.pt": (["run", "--resume", "stopped", "--quiet", "--no-trace"], "stopped"),
    "data.npz": (["run", "scenario.toml", "--out", "new", "--quiet", "--no-plots"], "new"),
    **{
        f"finished/{name}": (["plot", "finished"], "finished")
        for name in ("events.parquet", "rounds.csv", "summary.json", "model.pt")
    },
    "finished/devices.csv": (["compare", "finished", "finished", "--out", "cmp.png"], "cmp.png"),
}


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(sorted(TARGETS)), how=damages)
def test_random_damage_is_one_line_and_loses_nothing(pristine, target, how):
    """Any damage: success, or one error line and exit 2; nothing written outside the
    command's output; the finished run's files unchanged; a damaged checkpoint refused."""
    command, output = TARGETS[target]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(pristine, work)
        damage(work / target, how)
        before = files(work)
        with contextlib.chdir(work):
            done = invoke(*command)
        after = files(work)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["work"]
    assert "Traceback" not in done.err
    assert done.code == 0 or done.one_error_line, done
    if target.endswith("checkpoint.pt"):
        assert done.one_error_line, done
    if done.code != 0:
        assert after == before  # a refused command writes nothing and removes nothing
        return
    outside = {n: b for n, b in before.items() if not n.startswith(output)}
    finished = {n: before[n] for n in (f"finished/{name}" for name in RUN_DATA) if n in before}
    assert {n: after.get(n) for n in {**outside, **finished}} == {**outside, **finished}
    assert all(n.startswith(output) for n in set(after) - set(before))
