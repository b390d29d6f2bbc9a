"""`hierfl export`: ONNX (float and static int8) that predicts as PyTorch does, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from clirun import invoke
from conftest import WEAK, small_raw
from torch import nn

import hierfl
from hierfl.export import export_module, onnx_predict, run_data, run_model
from hierfl.learn.models import build_model

LEARNING = small_raw(
    run={"cloud_rounds": 4, "learning": True, "learning_rate": 0.05},
    data={"kind": "synthetic", "samples_per_device": 60, "test_samples": 400},
    devices=[{"profile": "mcu", "count": 2}, {"profile": "soc", "count": 2}],
)


def run_folder(tmp_path_factory, name: str, raw: dict) -> Path:
    """The run folder of scenario table ``raw``, written under a fresh temporary ``name``."""
    folder = tmp_path_factory.mktemp(name)
    hierfl.run(hierfl.parse_scenario(raw)).write(folder)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder of a short learning run (compact MLP on synthetic data)."""
    return run_folder(tmp_path_factory, "trained", LEARNING)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_float_export_predicts_as_pytorch(trained, tmp_path):
    """The float ONNX agrees with PyTorch on >= 99% of the run's test set; PyTorch's accuracy
    on the rebuilt test set is the run's final accuracy; the report says so in JSON too."""
    out = tmp_path / "m.onnx"
    done = invoke("export", str(trained), "--format", "onnx", "--out", str(out))
    assert done.code == 0, done
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    summary = json.loads((trained / "summary.json").read_text())
    assert report["agreement"] >= 0.99
    assert report["accuracy_torch"] == pytest.approx(summary["final_accuracy"], abs=1e-6)
    assert report["test_samples"] == 400 and report["int8"] is False
    assert report["file_bytes"] == out.stat().st_size
    onnx.checker.check_model(onnx.load(out))
    assert "agreement with PyTorch" in done.out and f"{report['agreement']:.2%}" in done.out


def test_int8_export_is_quantized_and_close(trained):
    """--int8 writes a QDQ model with int8 weights next to the run (model.int8.onnx),
    calibrated on 64 training samples; its predictions stay close to PyTorch's."""
    done = invoke("export", str(trained), "--int8")
    assert done.code == 0, done
    path = trained / "model.int8.onnx"
    report = json.loads((trained / "model.int8.onnx.json").read_text())
    graph = onnx.load(path).graph
    assert any(node.op_type == "DequantizeLinear" for node in graph.node)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)
    assert report["int8"] is True and report["calibration_samples"] == 64
    assert report["agreement"] >= 0.9
    assert abs(report["accuracy_export"] - report["accuracy_torch"]) <= 0.05


def test_size_is_set_against_every_profile(trained, tmp_path):
    """A profile fits when the file's bytes are at most memory_kb * 1024; fleet profiles are
    marked."""
    out = tmp_path / "m.onnx"
    assert invoke("export", str(trained), "--out", str(out)).code == 0
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    size = out.stat().st_size
    mcu = report["profiles"]["mcu"]
    assert mcu == {"memory_kb": 512, "fits": size <= 512 * 1024, "in_fleet": True}
    assert report["profiles"]["rpi4"]["in_fleet"] is False
    assert all(p["fits"] == (size <= p["memory_kb"] * 1024) for p in report["profiles"].values())


def test_any_module_exports_with_its_input_shape(tmp_path):
    """export_module takes any torch module and input shape: the DS-CNN on (1, 8, 8) and a
    module of your own give the same logits through onnxruntime as through torch."""

    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(5, 7), nn.Linear(7, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.a(x)))

    for model, shape in ((build_model("dscnn", (1, 8, 8), 10, seed=1), (1, 8, 8)),
                         (Mine(), (5,))):
        path = tmp_path / f"{type(model).__name__}.onnx"
        export_module(model, shape, path)
        x = torch.randn(33, *shape, generator=torch.Generator().manual_seed(0))
        import onnxruntime

        logits = onnxruntime.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-5)
        assert (onnx_predict(path, x) == model(x).argmax(1).numpy()).all()


def test_run_data_and_model_rebuild_the_run(trained):
    """The rebuilt model on the rebuilt test set scores the run's final accuracy exactly."""
    summary = json.loads((trained / "summary.json").read_text())
    scenario = hierfl.parse_scenario(summary["scenario"])
    model = run_model(scenario, torch.load(trained / "model.pt", weights_only=True))
    data = run_data(scenario)
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy == pytest.approx(summary["final_accuracy"], abs=1e-6)


def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path):
    """Not a run folder, a timing-only run, an unknown format, '..' in --out, an existing
    file without --force, a custom model without --allow-code: one line, exit 2, no file."""
    timing = tmp_path / "timing"
    hierfl.run(hierfl.parse_scenario(small_raw())).write(timing)
    custom = tmp_path / "custom"
    custom.mkdir()
    raw = json.loads((trained / "summary.json").read_text())
    raw["scenario"]["model"]["name"] = "examples.custom:Mine"
    (custom / "summary.json").write_text(json.dumps(raw))
    (custom / "model.pt").write_bytes((trained / "model.pt").read_bytes())
    (tmp_path / "taken.onnx").write_text("mine")
    cases = {
        "not a run folder (not a folder)": [str(tmp_path / "nothing")],
        "not a run folder (missing summary.json)": [str(tmp_path / "empty")],
        "has no model.pt to export": [str(timing)],
        "unknown format 'tflite'": [str(trained), "--format", "tflite"],
        "must not contain '..'": [str(trained), "--out", "../up.onnx"],
        "already exists (use --force": [str(trained), "--out", str(tmp_path / "taken.onnx")],
        "export with --allow-code": [str(custom)],
    }
    (tmp_path / "empty").mkdir()
    before = {folder: files(folder) for folder in (trained, tmp_path)}
    for needle, args in cases.items():
        done = invoke("export", *args)
        assert done.one_error_line, (needle, done)
        assert needle in done.err, (needle, done.err)
    assert {folder: files(folder) for folder in before} == before


def test_a_failed_quantization_leaves_no_file(trained, monkeypatch):
    """A failure while writing leaves neither the export nor a temporary file behind."""
    import hierfl.export

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hierfl.export, "_quantize", fail)
    out = trained / "failed.onnx"
    done = invoke("export", str(trained), "--int8", "--out", str(out))
    assert done.one_error_line and "No space left on device" in done.err, done
    assert not out.exists() and not list(trained.glob(".*"))


HETERO = small_raw(
    run={"cloud_rounds": 3, "learning": True, "learning_rate": 0.05},
    data={"kind": "synthetic", "samples_per_device": 60, "test_samples": 400},
    model={"name": "compact", "variants": [1, 0.5]},
    profiles={"small": {**WEAK, "memory_kb": 30}},  # compact needs 43.6 KiB, half of it less
    devices=[{"profile": "mcu", "count": 2}, {"profile": "small", "count": 2}],
)


@pytest.fixture(scope="module")
def hetero(tmp_path_factory) -> Path:
    """A HeteroFL run folder: the mcus train width 1, the 30 KiB boards width 0.5."""
    return run_folder(tmp_path_factory, "hetero", HETERO)


def test_a_tiers_variant_exports_as_the_run_scored_it(hetero):
    """--width 0.5 exports the width-0.5 variant (each parameter the leading block of the
    global one) to model.w0.5.onnx; PyTorch's accuracy on it is the tier's test accuracy in
    summary.json, and the export agrees with PyTorch; it is smaller than the full model."""
    done = invoke("export", str(hetero), "--width", "0.5")
    assert done.code == 0, done
    report = json.loads((hetero / "model.w0.5.onnx.json").read_text())
    tiers = json.loads((hetero / "summary.json").read_text())["tiers"]
    half = next(tier for tier in tiers if tier["width"] == 0.5)
    assert report["width"] == 0.5 and report["agreement"] >= 0.99
    assert report["accuracy_torch"] == pytest.approx(half["test_accuracy"], abs=1e-6)
    assert invoke("export", str(hetero)).code == 0
    assert (hetero / "model.w0.5.onnx").stat().st_size < (hetero / "model.onnx").stat().st_size


def test_a_width_that_is_not_a_variant_is_refused(hetero, trained):
    """--width must name one of the run's variants; a run without variants has none."""
    done = invoke("export", str(hetero), "--width", "0.25")
    assert done.one_error_line and "not a variant of the run (variants: 1, 0.5)" in done.err
    done = invoke("export", str(trained), "--width", "0.5")
    assert done.one_error_line and "the run trained one model, no width variants" in done.err
    assert not list(hetero.glob("*.w0.25*")) and not list(trained.glob("*.w0.5*"))


def test_a_failed_check_leaves_no_export(trained, monkeypatch):
    """When the exported file cannot be checked, neither it nor a report stays behind."""
    import hierfl.export

    def fail(*_args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hierfl.export, "onnx_predict", fail)
    out = trained / "unchecked.onnx"
    done = invoke("export", str(trained), "--out", str(out))
    assert done.one_error_line and "Input/output error" in done.err, done
    assert not out.exists() and not (trained / "unchecked.onnx.json").exists()


def test_run_force_clears_old_exports(trained, tmp_path):
    """A new run with --force into a folder removes the exports of the old model, a tier's
    variant's included."""
    folder = tmp_path / "run"
    hierfl.run(hierfl.parse_scenario(HETERO)).write(folder)
    assert invoke("export", str(folder)).code == 0
    assert invoke("export", str(folder), "--width", "0.5").code == 0
    scenario = tmp_path / "s.toml"
    scenario.write_text('[run]\ncloud_rounds = 1\nlearning = false\n'
                        '[[devices]]\nprofile = "mcu"\ncount = 1\n')
    done = invoke("run", str(scenario), "--out", str(folder), "--force", "--quiet",
                  "--no-plots", "--no-trace")
    assert done.code == 0, done
    assert not list(folder.glob("model*.onnx*"))
