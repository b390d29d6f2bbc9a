"""Scenario files: bad input gives one ScenarioError naming the key; overrides are validated."""

from __future__ import annotations

import re
import textwrap

import pytest

import hierfl
from hierfl.errors import HierflError, ModelDoesNotFitError, ScenarioError
from hierfl.profiles import BUILTIN_PROFILES
from hierfl.scenario import LinkConfig
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
        pytest.param("[compression]\ncluster_bits = 9\n" + DEVICES, "compression.cluster_bits",
                     "must be <= 8: 9", id="more than 8 cluster bits"),
        pytest.param('[compression]\ncluster_bits = 4\nquantize = "int8"\n' + DEVICES,
                     "compression.cluster_bits", "'int8'", id="clustering and int8"),
        pytest.param("[compression]\ntop_k = 0\n" + DEVICES, "compression.top_k", "> 0.0: 0",
                     id="top_k of nothing"),
        pytest.param("[compression]\ntop_k = 0.1\nprune_ratio = 0.3\n" + DEVICES,
                     "compression.top_k", "prune_ratio 0.3", id="top_k and pruning"),
        pytest.param('[compression]\nerror_feedback = true\npayload = "weights"\n' + DEVICES,
                     "compression.error_feedback", "'weights'", id="error feedback on weights"),
        pytest.param('[compression]\ndownlink = "int8"\n[model]\nvariants = [1, 0.5]\n'
                     + DEVICES, "compression.downlink", "'int8'", id="int8 downlink, variants"),
        pytest.param('[compression]\nerror_feedback = true\n[model]\nvariants = [1, 0.5]\n'
                     + DEVICES, "compression.error_feedback", "true",
                     id="error feedback, variants"),
        pytest.param('[compression]\ndownlink = "int4"\n' + DEVICES, "compression.downlink",
                     "int4", id="unknown downlink codec"),
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


def test_fleet_shape_can_be_overridden(tmp_path):
    """devices.N.KEY sets group N; index len(devices) adds a group (fleet size and mix)."""
    path = write(tmp_path, DEVICES)
    scenario = hierfl.load_scenario(path, ["devices.0.count=5"])
    assert scenario.devices[0].count == 5 and scenario.n_devices == 5
    mixed = hierfl.load_scenario(
        path, ["devices.0.profile=soc", "devices.1.profile=mobile", "devices.1.count=3"]
    )
    assert [(g.profile, g.count) for g in mixed.devices] == [("soc", 2), ("mobile", 3)]
    assert mixed.with_overrides(["devices.1.count=1"]).n_devices == 3


@pytest.mark.parametrize(
    ("assignment", "shown"),
    [
        ("devices.2.count=5", "'devices' is an array of 1 tables, not a table: give an index "
         "from 0 to 1 (1 adds one): '2'"),
        ("devices.x.count=5", "'devices' is an array of 1 tables"),
        ("devices.-1.count=5", "index from 0 to 1 (1 adds one): '-1'"),
        ("devices.1.count=5", "devices[1].profile: required key is missing"),
        ("devices.0.count=0", "devices[0].count: must be >= 1: 0"),
    ],
)
def test_fleet_overrides_are_validated(tmp_path, assignment, shown):
    """A group index past the end, or a group left incomplete, is one error naming the key."""
    with pytest.raises(ScenarioError, match=re.escape(shown)):
        hierfl.load_scenario(write(tmp_path, DEVICES), [assignment])


def test_profile_override_keeps_other_fields(tmp_path):
    """A [profiles.<built-in>] table changes only the keys it gives."""
    text = "[profiles.mcu]\nbattery_mah = 1.5\n" + DEVICES
    scenario = hierfl.load_scenario(write(tmp_path, text))
    mcu, builtin = scenario.profile("mcu"), BUILTIN_PROFILES["mcu"]
    assert mcu.battery_mah == 1.5
    changed = {"battery_mah", "source"}  # the source says battery_mah was overridden
    assert mcu.model_dump(exclude=changed) == builtin.model_dump(exclude=changed)
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


TWO_EDGES = "[topology]\nedges = 2\n"


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        pytest.param('[topology]\nmode = "cloud_only"\nedges = 0\ncell = { bandwidth_kbps = 1 }\n',
                     "topology.cell", "edges >= 1", id="cell without edges"),
        pytest.param(TWO_EDGES + "backhaul = [{ bandwidth_kbps = 1000 }]\n", "topology.backhaul",
                     "2 wanted, 1 given", id="short per-edge backhaul"),
        pytest.param(TWO_EDGES + "cell = [{ bandwidth_kbps = 1 }, { bandwidth_kbps = 2 }, "
                     "{ bandwidth_kbps = 3 }]\n", "topology.cell", "2 wanted, 3 given",
                     id="long per-edge cell"),
        pytest.param("[topology]\ncell = { bandwidth_kbps = 0 }\n", "topology.cell.bandwidth_kbps",
                     "> 0.0: 0", id="zero cell bandwidth"),
        pytest.param("[topology]\ncell = { latency_ms = 2 }\n", "topology.cell.bandwidth_kbps",
                     "missing", id="cell without bandwidth"),
        pytest.param("[topology]\ncore = { bandwidth_kbps = 1e6, latency_ms = -1 }\n",
                     "topology.core.latency_ms", ">= 0.0: -1", id="negative core latency"),
        pytest.param("[topology]\ncore = { bandwidth_kbps = -3 }\n", "topology.core.bandwidth_kbps",
                     "> 0.0: -3", id="negative core bandwidth"),
        pytest.param(TWO_EDGES + "backhaul = [{}, { bandwidth_kbps = -5 }]\n",
                     "topology.backhaul[1].bandwidth_kbps", "> 0.0: -5",
                     id="bad per-edge backhaul"),
        pytest.param("[topology]\ncell = { bandwidth_kbps = 1, capacity = 2 }\n",
                     "topology.cell.capacity", "allowed: bandwidth_kbps, latency_ms",
                     id="unknown cell key"),
        pytest.param(TWO_EDGES + "backhaul = [{ bw = 1 }, {}]\n", "topology.backhaul[0].bw",
                     "allowed: bandwidth_kbps, latency_ms", id="unknown per-edge key"),
        pytest.param("[topology]\ncore = { speed = 1, bandwidth_kbps = 1 }\n",
                     "topology.core.speed", "allowed: bandwidth_kbps", id="unknown core key"),
        pytest.param("[topology]\nbackhaul = 3\n", "topology.backhaul", "3",
                     id="backhaul not a table"),
        pytest.param("[variability]\ncompute_sigma = -0.1\n", "variability.compute_sigma",
                     ">= 0.0: -0.1", id="negative sigma"),
        pytest.param("[variability]\nsigma = 1\n", "variability.sigma", "bandwidth_sigma",
                     id="unknown variability key"),
        pytest.param("[profiles.mcu]\nuplink_kbps = 0\n", "profiles.mcu.uplink_kbps", "> 0.0: 0",
                     id="zero uplink"),
        pytest.param("[profiles.mcu]\ntail_s = -1\n", "profiles.mcu.tail_s", ">= 0.0: -1",
                     id="negative tail"),
    ],
)
def test_bad_link_is_one_error_naming_the_key(tmp_path, text, key, shown):
    """Each bad link, variability or radio key is exactly one line naming the key and value."""
    error = load_error(tmp_path, text + DEVICES)
    assert len(error.messages) == 1, error.messages
    assert key in error.messages[0] and shown in error.messages[0], error.messages[0]


def test_per_edge_links_resolve_by_edge(tmp_path):
    """backhaul_of/cell_of give edge i its own table, or the one shared table, or no cell."""
    text = (TWO_EDGES + "backhaul = [{ bandwidth_kbps = 1000 }, { latency_ms = 5 }]\n"
            "cell = { bandwidth_kbps = 54000 }\ncore = { bandwidth_kbps = 1e6 }\n" + DEVICES)
    topology = hierfl.load_scenario(write(tmp_path, text)).topology
    assert (topology.backhaul_of(0).bandwidth_kbps, topology.backhaul_of(0).latency_ms) == (
        1000, 20), "a per-edge table's missing key takes the backhaul default"
    assert (topology.backhaul_of(1).bandwidth_kbps, topology.backhaul_of(1).latency_ms) == (
        100_000, 5)
    assert topology.cell_of(0) == topology.cell_of(1)
    assert (topology.cell_of(1).bandwidth_kbps, topology.cell_of(1).latency_ms) == (54000, 0)
    assert (topology.core.bandwidth_kbps, topology.core.latency_ms) == (1e6, 0)
    assert isinstance(topology.cell_of(0), LinkConfig)
    with pytest.raises(IndexError, match="edge must be in"):
        topology.backhaul_of(2)


def test_without_new_keys_nothing_changes(make_scenario):
    """A scenario without cell, core or variability has none; its backhaul stays one table."""
    scenario = make_scenario(topology={"edges": 3})
    assert scenario.topology.cell is None and scenario.topology.core is None
    assert [scenario.topology.cell_of(e) for e in range(3)] == [None] * 3
    assert {scenario.topology.backhaul_of(e) for e in range(3)} == {LinkConfig()}
    resolved = scenario.to_dict()
    assert resolved["topology"]["backhaul"] == {"bandwidth_kbps": 100_000, "latency_ms": 20}
    assert "cell" not in resolved["topology"] and "core" not in resolved["topology"]
    assert resolved["variability"] == {"compute_sigma": 0, "bandwidth_sigma": 0}


def test_shipped_scenarios_keep_one_backhaul_table(scenario_files):
    """Every scenario file written before per-edge links still resolves its backhaul as a table."""
    for path in scenario_files:
        if path.stem != "network":
            assert isinstance(hierfl.load_scenario(path).topology.backhaul, LinkConfig), path


def test_network_example_uses_every_network_key(scenario_files):
    """scenarios/network.toml has per-edge backhauls and cells, a core, variability, sourced
    profiles."""
    scenario = hierfl.load_scenario(next(p for p in scenario_files if p.stem == "network"))
    topology = scenario.topology
    assert [topology.backhaul_of(e).bandwidth_kbps for e in range(3)] == [50000, 10000, 2000]
    assert [topology.cell_of(e).bandwidth_kbps for e in range(3)] == [30000, 60000, 20000]
    assert topology.core is not None and topology.edge_profile == "jetson_edge"
    assert scenario.variability.compute_sigma > 0 and scenario.variability.bandwidth_sigma > 0
    assert {g.profile for g in scenario.devices} == {"esp32s3_wifi", "phone_lte", "rpi4",
                                                      "nbiot_node"}


def test_per_edge_links_survive_overrides(tmp_path):
    """A per-edge list round-trips through to_dict; --set may replace it or add a cell."""
    text = TWO_EDGES + "cell = [{ bandwidth_kbps = 1 }, { bandwidth_kbps = 2 }]\n" + DEVICES
    scenario = hierfl.load_scenario(write(tmp_path, text))
    assert scenario.with_overrides([]) == scenario
    assert scenario.to_dict()["topology"]["cell"][1] == {"bandwidth_kbps": 2, "latency_ms": 0}
    listed = scenario.with_overrides(
        ["topology.backhaul=[{ bandwidth_kbps = 10 }, { bandwidth_kbps = 20 }]"])
    assert listed.topology.backhaul_of(1).bandwidth_kbps == 20
    with_cell = hierfl.load_scenario(write(tmp_path, DEVICES), ["topology.cell.bandwidth_kbps=9"])
    assert with_cell.topology.cell_of(0).bandwidth_kbps == 9
    with pytest.raises(ScenarioError, match="'topology.cell' is an array of 2 tables"):
        scenario.with_overrides(["topology.cell.bandwidth_kbps=7"])
    assert scenario.with_overrides(["topology.cell.1.bandwidth_kbps=7"]).topology.cell_of(
        1).bandwidth_kbps == 7


def test_data_path_is_relative_to_the_scenario_file(tmp_path, monkeypatch):
    """A relative data.path in a file names a file beside it, whatever the working directory;
    one given with --set is relative to the working directory. Both are stored absolute."""
    study = tmp_path / "study"
    study.mkdir()
    path = write(study, '[data]\nkind = "npz"\npath = "data/x.npz"\n' + DEVICES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert hierfl.load_scenario(path).data.path == str(study / "data" / "x.npz")
    overridden = hierfl.load_scenario(path, ["data.path=../y.npz"])
    assert overridden.data.path == str(tmp_path / "y.npz")
    absolute = hierfl.load_scenario(path, [f"data.path={tmp_path / 'z.npz'}"])
    assert absolute.data.path == str(tmp_path / "z.npz")
    assert absolute.with_overrides(["run.cloud_rounds=1"]).data.path == absolute.data.path
    assert absolute.with_overrides(["data.path=w.npz"]).data.path == str(elsewhere / "w.npz")


def test_overriding_a_builtin_profile_says_so_in_its_source(make_scenario):
    """A built-in's source names the figures a scenario overrode; a given source is kept."""
    scenario = make_scenario(profiles={"mcu": {"compute_mflops": 200.0, "latency_ms": 5.0}})
    source = scenario.profile("mcu").source
    assert source.startswith(BUILTIN_PROFILES["mcu"].source)
    assert source.endswith("Overridden in the scenario: compute_mflops, latency_ms.")
    again = hierfl.parse_scenario(scenario.to_dict())
    assert again.profile("mcu").source == source
    mine = make_scenario(profiles={"mcu": {"compute_mflops": 200.0, "source": "my bench"}})
    assert mine.profile("mcu").source == "my bench"
    unchanged = BUILTIN_PROFILES["mcu"].compute_mflops
    same = make_scenario(profiles={"mcu": {"compute_mflops": unchanged}})
    assert same.profile("mcu").source == BUILTIN_PROFILES["mcu"].source
