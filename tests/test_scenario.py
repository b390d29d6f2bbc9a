"""Scenario files: bad input gives one ScenarioError naming the key; overrides are validated."""

from __future__ import annotations

import textwrap

import pytest

import hierfl
from hierfl.errors import HierflError, ModelDoesNotFitError, ScenarioError
from hierfl.profiles import BUILTIN_PROFILES
from hierfl.sim.engine import prepare

DEVICES = """
[[devices]]
profile = "mcu"
count = 2
"""


def write(tmp_path, text: str):
    path = tmp_path / "scenario.toml"
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        hierfl.load_scenario(write(tmp_path, text))
    return caught.value


def test_good_file_loads(tmp_path):
    """A minimal file loads with every default filled in and the file's values kept."""
    scenario = hierfl.load_scenario(write(tmp_path, 'name = "ok"\nseed = 3\n' + DEVICES))
    assert scenario.name == "ok" and scenario.seed == 3
    assert scenario.devices[0].profile == "mcu" and scenario.n_devices == 2
    assert scenario.run.cloud_rounds == 30 and scenario.topology.mode == "hierarchical"


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        pytest.param("[run]\nnope = 1\n" + DEVICES, "run.nope", "cloud_rounds", id="unknown key"),
        pytest.param("colour = 'red'\n" + DEVICES, "colour", "seed", id="unknown top key"),
        pytest.param("[profiles.mcu]\nflops = 3\n" + DEVICES, "profiles.mcu.flops", "memory_kb",
                     id="unknown profile key"),
        pytest.param("[topology]\nbackhaul = { bandwidth_kbps = -5, latency_ms = 20 }\n"
                     + DEVICES, "topology.backhaul.bandwidth_kbps", "-5", id="negative bandwidth"),
        pytest.param('[[devices]]\nprofile = "nope"\ncount = 2\n', "devices[0].profile", "'nope'",
                     id="unknown profile"),
        pytest.param('[[devices]]\nprofile = "mcu"\ncount = 0\n', "devices[0].count", "0",
                     id="zero count"),
        pytest.param('[profiles.edge]\nmemory_kb = 512\ncompute_mflops = 10\n'
                     'bandwidth_kbps = 100\nlatency_ms = 10\nvoltage_v = 3\n'
                     'power_compute_w = 1\npower_tx_w = 1\npower_rx_w = 1\npower_idle_w = 0\n'
                     '[[devices]]\nprofile = "edge"\ncount = 2\n', "devices[0].profile",
                     "reserved", id="profile named edge"),
        pytest.param("devices = []\n", "devices", "at least 1", id="empty devices"),
        pytest.param("[run]\ncloud_rounds = 2\n", "devices", "missing", id="no devices"),
        pytest.param('[run]\ncloud_rounds = "3"\n' + DEVICES, "run.cloud_rounds", "'3'",
                     id="wrong type"),
        pytest.param("[run]\ncloud_rounds = true\n" + DEVICES, "run.cloud_rounds", "True",
                     id="bool for int"),
        pytest.param("[run]\nlearning_rate = nan\n" + DEVICES, "run.learning_rate", "nan",
                     id="nan"),
        pytest.param("[profiles.mcu]\ncompute_mflops = inf\n" + DEVICES,
                     "profiles.mcu.compute_mflops", "inf", id="inf in profile"),
        pytest.param('[model]\nname = "huge"\n' + DEVICES, "model.name", "'huge'",
                     id="unknown model"),
        pytest.param('[compression]\nquantize = "int4"\n' + DEVICES, "compression.quantize",
                     "int4", id="unknown quantizer"),
        pytest.param('[selection]\npolicy = "best"\n' + DEVICES, "selection.policy", "'best'",
                     id="unknown policy"),
        pytest.param('[topology]\nedge_profile = "nope"\n' + DEVICES, "topology.edge_profile",
                     "'nope'", id="unknown edge profile"),
        pytest.param("[topology]\nedges = 0\n" + DEVICES, "edges", "hierarchical",
                     id="no edges in hierarchy"),
        pytest.param("[data]\nsamples_per_device = [5, 2]\n" + DEVICES, "samples_per_device",
                     "[5, 2]", id="inverted range"),
        pytest.param("[profiles.board]\nmemory_kb = 64\n" + DEVICES, "profiles.board",
                     "missing", id="incomplete custom profile"),
    ],
)
def test_bad_file_names_the_key(tmp_path, text, key, shown):
    """Each bad file gives a ScenarioError whose first line names the key and the value."""
    error = load_error(tmp_path, text)
    assert isinstance(error, HierflError) and isinstance(error, ValueError)
    first = str(error).splitlines()[0]
    assert key in first, first
    assert shown in first, first
    assert str(write(tmp_path, text)) in first, "the message names the file"


def test_zero_count_is_one_error(tmp_path):
    """A group with count 0 is reported once, not also as an empty device list."""
    error = load_error(tmp_path, '[[devices]]\nprofile = "mcu"\ncount = 0\n')
    assert len(error.messages) == 1, error.messages
    assert "devices[0].count: must be >= 1: 0" in error.messages[0]


def test_every_error_is_reported(tmp_path):
    """Several bad keys give one error listing them all; the first line counts the rest."""
    error = load_error(tmp_path, "[run]\ncloud_rounds = 0\nbatch_size = -1\n" + DEVICES)
    assert len(error.messages) == 2
    assert any("run.cloud_rounds" in m for m in error.messages)
    assert any("run.batch_size" in m for m in error.messages)
    assert "(and 1 more error)" in str(error)


def test_not_toml_and_missing_file(tmp_path):
    """A file that is not TOML, or is not there, is a ScenarioError naming the path."""
    error = load_error(tmp_path, "[run\ncloud_rounds = 2\n")
    assert "not valid TOML" in str(error)
    with pytest.raises(ScenarioError, match="no such scenario file"):
        hierfl.load_scenario(tmp_path / "absent.toml")


def test_model_too_large_for_every_device(tmp_path):
    """A model that fits no device's memory is ModelDoesNotFitError naming model.name.

    mobile has 32*128+128 + 128*64+64 + 64*10+10 = 13_130 parameters: at least 105_040 bytes
    to train, and the only board has 1 KiB.
    """
    board = {**BUILTIN_PROFILES["mcu"].model_dump(exclude_none=True), "memory_kb": 1}
    table = "\n".join(f"{k} = {v!r}" for k, v in board.items())
    text = ('[model]\nname = "mobile"\n[run]\nlearning = false\n'
            f"[profiles.board]\n{table}\n" + '[[devices]]\nprofile = "board"\ncount = 3\n')
    scenario = hierfl.load_scenario(write(tmp_path, text))
    for build in (prepare, hierfl.run):
        with pytest.raises(ModelDoesNotFitError, match="model.name") as caught:
            build(scenario)
        assert "'mobile'" in str(caught.value)
        assert isinstance(caught.value, ScenarioError)


def test_cloud_only_needs_one_edge_round(make_scenario):
    """cloud_only has no edge aggregation, so edge_rounds other than 1 is refused by name."""
    with pytest.raises(ScenarioError, match="run.edge_rounds"):
        hierfl.run(make_scenario(topology={"mode": "cloud_only"}, run={"edge_rounds": 2}))


def test_overrides_are_applied(tmp_path):
    """load_scenario and with_overrides set key paths to TOML literals, then validate."""
    path = write(tmp_path, "[run]\ncloud_rounds = 9\n" + DEVICES)
    scenario = hierfl.load_scenario(path, ["run.cloud_rounds=2", "compression.quantize=int8",
                                           "topology.backhaul.latency_ms=5", "seed=11"])
    assert scenario.run.cloud_rounds == 2
    assert scenario.compression.quantize == "int8"
    assert scenario.topology.backhaul.latency_ms == 5
    assert scenario.topology.backhaul.bandwidth_kbps == 100_000
    assert scenario.seed == 11
    again = scenario.with_overrides(["run.cloud_rounds=3", 'selection.policy="random"'])
    assert again.run.cloud_rounds == 3 and again.selection.policy == "random"
    assert again.compression.quantize == "int8", "earlier values survive a second override"
    assert scenario.run.cloud_rounds == 2, "with_overrides returns a copy"
    same = scenario.with_overrides([])
    assert same == scenario


@pytest.mark.parametrize(
    ("assignment", "key"),
    [
        ("topology.backhaul.bandwidth_kbps=-5", "topology.backhaul.bandwidth_kbps"),
        ("run.nope=1", "run.nope"),
        ("run.cloud_rounds=nan", "run.cloud_rounds"),
        ("model.name=huge", "model.name"),
        ("run.cloud_rounds", "run.cloud_rounds"),
        ("run.cloud_rounds.x=1", "cloud_rounds"),
        ("devices=[]", "devices"),
    ],
)
def test_overrides_are_validated(make_scenario, tmp_path, assignment, key):
    """A bad override is a ScenarioError naming its key, from a Scenario or from a file."""
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.").replace("[", r"\[")):
        make_scenario().with_overrides([assignment])
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.").replace("[", r"\[")):
        hierfl.load_scenario(write(tmp_path, DEVICES), [assignment])


def test_profile_override_keeps_other_fields(tmp_path):
    """A [profiles.<built-in>] table changes only the keys it gives."""
    text = "[profiles.mcu]\nbattery_mah = 1.5\n" + DEVICES
    scenario = hierfl.load_scenario(write(tmp_path, text))
    mcu, builtin = scenario.profile("mcu"), BUILTIN_PROFILES["mcu"]
    assert mcu.battery_mah == 1.5
    assert mcu.model_dump(exclude={"battery_mah"}) == builtin.model_dump(exclude={"battery_mah"})
    assert BUILTIN_PROFILES["mcu"].battery_mah == 500, "the built-in itself is untouched"
    soc = scenario.with_overrides(["profiles.soc.compute_mflops=7"]).profile("soc")
    assert soc.compute_mflops == 7
    assert soc.memory_kb == BUILTIN_PROFILES["soc"].memory_kb
    assert soc.battery_mah == BUILTIN_PROFILES["soc"].battery_mah
    again = scenario.with_overrides(["run.cloud_rounds=2"])
    assert again.profile("mcu") == mcu, "overrides keep earlier profile changes"


def test_profile_override_changes_the_run(make_scenario):
    """An overridden access link shows in the run: a 10x faster mcu link downloads faster."""
    slow = hierfl.run(make_scenario(run={"cloud_rounds": 1}))
    fast = hierfl.run(make_scenario(run={"cloud_rounds": 1},
                                    profiles={"mcu": {"bandwidth_kbps": 1000}}))

    def download_s(result):
        events = result.events[result.events["kind"] == "download"].iloc[0]
        return events["t_end"] - events["t_start"]

    # 0.05 + 8 * 18088 / 100_000 = 1.49704 vs 0.05 + 8 * 18088 / 1_000_000 = 0.194704
    assert download_s(slow) == pytest.approx(1.49704, rel=1e-9)
    assert download_s(fast) == pytest.approx(0.194704, rel=1e-9)


def test_scenario_is_frozen(make_scenario):
    """A Scenario cannot be changed in place; overrides make a new one."""
    scenario = make_scenario()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        scenario.seed = 3  # type: ignore[misc]


def test_partial_backhaul_keeps_the_other_default(tmp_path):
    """A backhaul table or override that gives one key keeps the default of the other."""
    scenario = hierfl.load_scenario(write(tmp_path, "[topology]\nbackhaul = { latency_ms = 5 }\n"
                                          + DEVICES))
    assert scenario.topology.backhaul.latency_ms == 5
    assert scenario.topology.backhaul.bandwidth_kbps == 100_000
    path = write(tmp_path, DEVICES)
    from_file = hierfl.load_scenario(path, ["topology.backhaul.bandwidth_kbps=7"])
    from_scenario = hierfl.load_scenario(path).with_overrides(
        ["topology.backhaul.bandwidth_kbps=7"])
    assert from_file == from_scenario
    assert from_file.topology.backhaul.latency_ms == 20
