"""The generated scenario reference and the outputs page say what the code really does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hierfl
from hierfl import docgen
from hierfl.profiles import Profile
from hierfl.scenario import (
    AggregationConfig,
    AvailabilityConfig,
    CompressionConfig,
    DataConfig,
    DeviceGroup,
    DistillationConfig,
    LinkConfig,
    ModelConfig,
    RunConfig,
    Scenario,
    SelectionConfig,
    SharedLinkConfig,
    TopologyConfig,
    VariabilityConfig,
)
from hierfl.trace import KINDS

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODELS = (
    Scenario,
    AvailabilityConfig,
    RunConfig,
    DataConfig,
    ModelConfig,
    CompressionConfig,
    SelectionConfig,
    TopologyConfig,
    LinkConfig,
    SharedLinkConfig,
    VariabilityConfig,
    AggregationConfig,
    DistillationConfig,
    DeviceGroup,
    Profile,
)


def _sections(text: str) -> dict[str, str]:
    """The page split at its ``## `` headings, keyed by the heading without backticks."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {title.strip("`"): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _row(section: str, key: str) -> str:
    """The table row of ``key`` in a section of the reference."""
    rows = [line for line in section.splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, f"expected one row for {key!r}, found {len(rows)}"
    return rows[0]


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    return _sections(docgen.scenario_reference())


def test_committed_page_is_current():
    """docs/scenario.md is exactly what the generator prints from today's models."""
    committed = (DOCS / "scenario.md").read_text(encoding="utf-8")
    assert committed == docgen.scenario_reference(), (
        f"docs/scenario.md is stale; regenerate it with `{docgen.COMMAND}`"
    )


def test_page_says_it_is_generated():
    """The first line names the command that regenerates the page."""
    first = docgen.scenario_reference().splitlines()[0]
    assert docgen.COMMAND in first and "do not edit" in first


def test_main_prints_the_reference(capsys):
    """``python -m hierfl.docgen`` prints the page and nothing else."""
    docgen.main()
    assert capsys.readouterr().out == docgen.scenario_reference()


def test_every_model_has_a_section():
    """Each scenario model, nested ones included, is documented under its TOML heading."""
    headings = {model: heading for heading, model, _ in docgen.sections()}
    assert set(headings) == set(MODELS)
    assert headings[LinkConfig] == "[topology.backhaul]"
    assert headings[DeviceGroup] == "[[devices]]"
    assert headings[VariabilityConfig] == "[variability]"
    cells = [heading for heading, model, _ in docgen.sections() if model is SharedLinkConfig]
    assert cells == ["[topology.cell]", "[topology.core]"]
    assert headings[Profile] == "[profiles.NAME]"


def test_every_field_appears(reference):
    """Every field of every model has a row in its model's section."""
    for heading, model, _ in docgen.sections():
        for name in model.model_fields:
            _row(reference[heading], name)


def test_constraints_and_units_are_rendered(reference):
    """Numeric bounds come from field metadata and units from the name suffix."""
    for heading in ("[profiles.NAME]", "[topology.backhaul]"):
        row = _row(reference[heading], "bandwidth_kbps")
        assert "| > 0 |" in row and "kbps" in row
    assert "| > 0, <= 1 |" in _row(reference["[run]"], "target_accuracy")
    assert "| >= 0, < 1 |" in _row(reference["[compression]"], "prune_ratio")
    assert "| mAh |" in _row(reference["[profiles.NAME]"], "battery_mah")
    assert "at least 1" in _row(reference["Top level"], "devices")


def test_literal_choices_are_listed(reference):
    """A Literal field lists the values it allows."""
    assert "`none`, `int8`" in _row(reference["[compression]"], "quantize")
    assert "`hierarchical`, `cloud_only`" in _row(reference["[topology]"], "mode")
    assert "`iid`, `dirichlet`" in _row(reference["[data]"], "partition")


def test_per_edge_links_read_as_table_or_array(reference):
    """A key that takes one table or one per edge says both, and says when it is optional."""
    topology = reference["[topology]"]
    assert "| table or array of tables | *its keys' defaults* |" in _row(topology, "backhaul")
    assert "| table or array of tables (optional) | *unset* |" in _row(topology, "cell")
    assert "| table (optional) | *unset* |" in _row(topology, "core")
    assert "one table per edge" in _row(topology, "cell")
    assert "| *required* |" in _row(reference["[topology.cell]"], "bandwidth_kbps")


def test_defaults_are_toml_literals(reference):
    """Defaults read as TOML; keys without one say required."""
    assert "| `30` |" in _row(reference["[run]"], "cloud_rounds")
    assert '| `"cpu"` |' in _row(reference["[run]"], "device")
    assert "| `[20, 80]` |" in _row(reference["[data]"], "samples_per_device")
    assert "| *required* |" in _row(reference["[[devices]]"], "profile")


def test_validator_rules_name_real_fields():
    """Every extra rule the generator adds belongs to a field that exists."""
    by_name = {model.__name__: model for model in MODELS}
    for model_name, field in docgen.RULES:
        assert field in by_name[model_name].model_fields, (model_name, field)


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("bandwidth_kbps", "kbps (10^3 bit/s)"),
        ("latency_ms", "ms"),
        ("battery_mah", "mAh"),
        ("voltage_v", "V"),
        ("power_tx_w", "W"),
        ("memory_kb", "KiB"),
        ("compute_mflops", "MFLOP/s (10^6 FLOP/s)"),
        ("sim_time_s", "s"),
        ("test_samples", ""),
        ("alpha", ""),
    ],
)
def test_unit_from_suffix(name, unit):
    """A key's unit is read from its name suffix; other names have none."""
    assert docgen.unit_of(name) == unit


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[hierfl.Result, Path]:
    """A timing-only run of 2 cloud rounds on 1 edge, and its written run folder."""
    scenario = hierfl.parse_scenario(
        {
            "name": "docs",
            "seed": 3,
            "run": {"cloud_rounds": 2, "learning": False, "target_accuracy": 0.5},
            "topology": {"edges": 1},
            "devices": [{"profile": "mcu", "count": 2}, {"profile": "soc", "count": 1}],
        }
    )
    result = hierfl.run(scenario)
    return result, result.write(tmp_path_factory.mktemp("run"))


def _outputs_missing(names) -> list[str]:
    page = (DOCS / "outputs.md").read_text(encoding="utf-8")
    return [name for name in names if f"`{name}`" not in page]


def test_outputs_page_names_every_file(small_run):
    """Every file a run folder holds is described in docs/outputs.md."""
    _, folder = small_run
    assert not _outputs_missing(sorted(p.name for p in folder.iterdir()))


def test_outputs_page_names_every_column(small_run):
    """Every column of the events, rounds and devices tables is described."""
    result, _ = small_run
    for table in (result.events, result.rounds, result.devices, result.links, result.link_load):
        assert not _outputs_missing(table.columns)


def test_outputs_page_names_every_event_kind():
    """Every event kind the trace can record is described."""
    assert not _outputs_missing(KINDS)


def test_outputs_page_names_every_summary_key(small_run):
    """Every summary.json key, and the keys of its model and per_profile objects."""
    summary = small_run[0].summary
    assert not _outputs_missing(summary)
    assert not _outputs_missing(summary["model"])
    assert not _outputs_missing(summary["per_profile"][0])
