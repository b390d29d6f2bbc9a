"""The worked example in docs/concepts.md is what hierfl's own functions compute."""

from pathlib import Path

import pytest

from hierfl.compression import Codec
from hierfl.costs import capacity_j, compute_s, energy_j, train_bytes, train_flops, transfer_s
from hierfl.learn.models import build_model, model_stats
from hierfl.learn.trainer import ParamSpace
from hierfl.profiles import BUILTIN_PROFILES

DOC = (Path(__file__).parents[1] / "docs" / "concepts.md").read_text()


def _in_doc(text: str) -> None:
    assert text in DOC, f"docs/concepts.md no longer shows {text!r}"


def test_worked_example_matches_the_code():
    """Every row of the worked example is recomputed from costs, codecs and the mcu profile."""
    mcu = BUILTIN_PROFILES["mcu"]
    model = build_model("compact", (32,), 10, seed=0)
    stats = model_stats(model, (32,))
    assert (stats.n_params, stats.forward_flops, stats.activations_per_sample) == (4522, 8832, 266)
    flops = train_flops(stats.forward_flops, 50, 2)
    assert flops == 2_649_600
    _in_doc("| 2,649,600 |")
    assert compute_s(flops, mcu.compute_mflops) == pytest.approx(0.026496)
    assert energy_j(mcu.power_compute_w, 0.026496) == pytest.approx(0.0052992)
    link = [(mcu.bandwidth_kbps, mcu.latency_ms)]
    assert transfer_s(4 * stats.n_params, link) == pytest.approx(1.49704)
    assert energy_j(mcu.power_rx_w, 1.49704) == pytest.approx(0.449112)
    uplink = Codec("int8", 0.3).payload_bytes(ParamSpace.of(model).specs)
    assert uplink == 3798
    assert transfer_s(uplink, link) == pytest.approx(0.35384)
    assert energy_j(mcu.power_tx_w, 0.35384) == pytest.approx(0.336148)
    assert train_bytes(stats.n_params, 8, stats.activations_per_sample) == 44_688
    assert capacity_j(mcu.battery_mah, mcu.voltage_v) == pytest.approx(6660)
    for shown in ("0.026496 s", "0.0052992 J", "1.49704 s", "0.449112 J", "3,798 B",
                  "0.35384 s", "0.336148 J", "44,688 B", "6,660 J"):
        _in_doc(shown)


@pytest.mark.parametrize("page", ["README.md", "docs/index.md", "docs/sweeps.md"])
def test_python_examples_of_the_pages_run(page, tmp_path, monkeypatch):
    """Every ```python block of README.md, docs/index.md and docs/sweeps.md runs as written."""
    root = Path(__file__).parents[1]
    blocks = (root / page).read_text().split("```python\n")[1:]
    assert blocks, f"{page} has no Python example"
    (tmp_path / "scenarios").symlink_to(root / "scenarios")
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block.split("```")[0], page, "exec"), {})


def test_study_backhaul_bytes_are_what_hierfl_computes():
    """docs/studies/hierfl_vs_cloud.md states the bytes crossing the backhauls per edge round
    (cloud-only with 5 devices per edge; two-tier, 4 edge rounds) as one cloud round measures."""
    import hierfl

    root = Path(__file__).parents[1]
    study = (root / "docs" / "studies" / "hierfl_vs_cloud.md").read_text()
    fleet = '[{ profile = "mcu", count = 4 }, { profile = "soc", count = 3 }, ' \
        '{ profile = "mobile", count = 3 }]'
    base = hierfl.load_scenario(
        root / "scenarios" / "hierfl_vs_cloud.toml", ["run.cloud_rounds=1", f"devices={fleet}"]
    )
    cloud = hierfl.run(base.with_overrides(["topology.mode=cloud_only", "run.edge_rounds=1"]))
    two = hierfl.run(base)  # hierarchical, 4 edge rounds per cloud round
    per_edge_round = (
        int(cloud.rounds["bytes_backhaul"].sum()),
        int(two.rounds["bytes_backhaul"].sum()) / base.run.edge_rounds,
    )
    assert per_edge_round == (218_860, 10_943)
    assert "cloud-only 219 KB with 5" in study
    assert "two-tier\n10.9 KB whatever the fleet" in study


def test_no_page_cites_a_file_the_project_lacks():
    """Docs, code and tests cite docs/concepts.md, never a design file outside the project."""
    root = Path(__file__).parents[1]
    files = [root / "README.md", *root.glob("docs/**/*.md"), *root.glob("benchmarks/*.md"),
             *root.glob("hierfl/**/*.py"), *root.glob("tests/*.py"), *root.glob("examples/*.py")]
    citing = [str(f.relative_to(root)) for f in files if "DESIGN" + ".md" in f.read_text()]
    assert citing == []


def test_data_page_states_the_limits_the_code_enforces():
    """docs/data.md gives the label limit, the test-set share and allow_reuse as data.py does."""
    from hierfl.learn import data

    page = (Path(__file__).parents[1] / "docs" / "data.md").read_text()
    assert f"at most {data.MAX_CLASSES:,}" in page
    assert f"{data._TEST_SHARE:.0%} of the samples" in page
    assert "allow_reuse = true" in page
