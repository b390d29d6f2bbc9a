"""On-device export: a run's trained global model as ONNX (float32 or static int8).

The exported file is checked against PyTorch on the run's own test set (rebuilt from the
scenario in summary.json): the share of test samples on which both predict the same class,
and each one's accuracy. Its size is set against each profile's ``memory_kb``. A HeteroFL
run's width variants export too (``width``): each parameter the leading block of the global
one, as the run's devices trained it. Batch-norm layers export with the static statistics
the run's evaluator gives those weights (hierfl.learn.sbn). Any torch module with an input
shape can be exported (``export_module``).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hierfl.errors import CorruptError, HierflError, OutputError, ScenarioError
from hierfl.learn.data import FederatedData, data_shape, draw_sample_counts, make_data
from hierfl.learn.models import build_model
from hierfl.learn.sbn import freeze
from hierfl.plugins import custom_references
from hierfl.profiles import BUILTIN_PROFILES
from hierfl.results import atomic_write
from hierfl.scenario import Scenario, parse_scenario
from hierfl.sim.engine import STREAM_DATA
from hierfl.topology import build_topology

__all__ = [
    "FORMATS",
    "ExportReport",
    "export_module",
    "export_run",
    "onnx_predict",
    "run_data",
    "run_model",
]

FORMATS = ("onnx",)
"""Formats ``hierfl export`` writes (no TFLite/LiteRT converter installs beside torch here)."""
CALIBRATION_SAMPLES = 64
"""Training samples the int8 quantizer calibrates its activation ranges on, by default."""
_INPUT, _OUTPUT = "x", "logits"


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it follows PyTorch on the test set."""

    file: str
    format: str
    int8: bool
    width: float
    """1 for the global model, else the HeteroFL variant's width."""
    file_bytes: int
    test_samples: int
    agreement: float
    """Share of test samples where the export and PyTorch predict the same class."""
    accuracy_torch: float
    accuracy_export: float
    calibration_samples: int
    profiles: dict[str, dict[str, Any]]
    """Per profile: ``memory_kb``, ``fits`` (file bytes <= memory_kb * 1024), ``in_fleet``."""


def export_run(
    run_dir: str | Path,
    fmt: str = "onnx",
    int8: bool = False,
    out: str | Path | None = None,
    force: bool = False,
    allow_code: bool = False,
    calibration: int = CALIBRATION_SAMPLES,
    width: float | None = None,
) -> ExportReport:
    """Export the global model of ``run_dir`` (or its width-``width`` HeteroFL variant),
    check it on the test set, write its report.

    The report goes beside the export as ``FILE.json``. Nothing is written when an input is
    bad, and each file appears whole or not at all.
    """
    if fmt not in FORMATS:
        raise HierflError(f"--format: unknown format {fmt!r} (allowed: {', '.join(FORMATS)})")
    folder = Path(run_dir)
    scenario, tensors = _load_run(folder, allow_code)
    _check_width(scenario, width)
    target = _target(folder, fmt, int8, out, force, width)
    data = run_data(scenario)
    model = freeze(run_model(scenario, tensors, width or 1.0), data.x)
    samples = _calibration_rows(data, calibration) if int8 else None
    export_module(model, data.input_shape, target, samples)
    try:
        predicted = onnx_predict(target, data.x_test)
        report = _report(target, fmt, width or 1.0, model, data, predicted, samples, scenario)
        text = json.dumps(asdict(report), indent=2) + "\n"
        atomic_write(_report_path(target), lambda temp: Path(temp).write_text(text))
    except BaseException:  # an export without its check is not left behind
        target.unlink(missing_ok=True)
        raise
    return report


def export_module(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    calibration: torch.Tensor | None = None,
) -> None:
    """Write ``model`` (inputs ``(batch, *input_shape)``) to ``path`` as ONNX, atomically.

    With ``calibration`` samples it is quantized to int8 by onnxruntime's static quantizer
    (QDQ format, activation ranges from those samples).
    """
    _need_onnx()
    path = Path(path)
    model = model.eval()
    if calibration is None:
        atomic_write(path, lambda temp: _to_onnx(model, input_shape, temp))
        return
    with tempfile.TemporaryDirectory(prefix=".hierfl-export-", dir=path.parent) as work:
        floating = Path(work) / "float.onnx"
        _to_onnx(model, input_shape, str(floating))
        atomic_write(path, lambda temp: _quantize(floating, temp, calibration))


def onnx_predict(path: str | Path, x: torch.Tensor, batch: int = 4096) -> np.ndarray:
    """Predicted class per row of ``x`` by the ONNX model at ``path`` (onnxruntime, CPU)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    rows = x.numpy().astype(np.float32, copy=False)
    parts = [
        session.run([_OUTPUT], {_INPUT: rows[i : i + batch]})[0].argmax(axis=1)
        for i in range(0, len(rows), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def run_model(
    scenario: Scenario, tensors: dict[str, torch.Tensor], width: float = 1.0
) -> nn.Module:
    """The scenario's model holding the run's final global weights, in eval mode; with
    ``width`` < 1 its HeteroFL variant, each parameter the leading block of the global one."""
    shape, classes = data_shape(scenario.data)
    model = build_model(scenario.model.name, shape, classes, seed=0, width=width)
    try:
        model.load_state_dict(
            {name: _leading(tensors, name, part.shape) for name, part in model.state_dict().items()}
        )
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        name = scenario.model.name
        raise CorruptError(f"model.pt does not fit model {name!r}: {first}") from None
    return model.eval()


def _leading(tensors: dict[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    """The leading ``shape`` block of ``tensors[name]`` (all of it at full width)."""
    if name not in tensors:
        raise RuntimeError(f"missing parameter {name!r}")
    full = tensors[name]
    if full.dim() != len(shape) or any(n > m for n, m in zip(shape, full.shape, strict=True)):
        raise RuntimeError(f"{name!r} has shape {tuple(full.shape)}, not {tuple(shape)}")
    return full[tuple(slice(0, n) for n in shape)]


def _check_width(scenario: Scenario, width: float | None) -> None:
    """``width`` must be one of the run's HeteroFL variants (or absent: the global model)."""
    if width is None:
        return
    variants = scenario.model.variants
    if variants is None:
        raise HierflError(f"--width {width:g}: the run trained one model, no width variants")
    if width not in variants:
        allowed = ", ".join(f"{v:g}" for v in variants)
        raise HierflError(f"--width {width:g}: not a variant of the run (variants: {allowed})")


def run_data(scenario: Scenario) -> FederatedData:
    """The devices' samples and test set exactly as the run drew them (same streams)."""
    devices = len(build_topology(scenario).names)
    rng = np.random.default_rng([scenario.seed, STREAM_DATA])
    counts = draw_sample_counts(scenario.data, devices, rng)
    return make_data(scenario.data, counts, rng)


def _target(
    folder: Path, fmt: str, int8: bool, out: str | Path | None, force: bool, width: float | None
) -> Path:
    """The export's path, refused when it climbs out with ``..``, or when the file (or its
    report) exists without ``force``."""
    if out is not None and ".." in Path(out).parts:
        raise HierflError(f"--out: must not contain '..' (name the file plainly): {str(out)!r}")
    tier = "" if width is None else f".w{width:g}"
    target = Path(out) if out is not None else folder / f"model{tier}{'.int8' * int8}.{fmt}"
    if not target.parent.is_dir():
        raise OutputError(f"--out {target}: no such folder {str(target.parent)!r}")
    for path in (target, _report_path(target)):
        if path.exists() and not force:
            raise OutputError(f"--out {path}: already exists (use --force to replace it)")
        if path.is_dir():
            raise OutputError(f"--out {path}: is a folder, not a file")
    return target


def _report_path(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def _load_run(folder: Path, allow_code: bool) -> tuple[Scenario, dict[str, torch.Tensor]]:
    """The run's resolved scenario and final weights, or one line saying why not."""
    if not folder.is_dir():
        raise HierflError(f"{folder}: not a run folder (not a folder)")
    if not (folder / "summary.json").is_file():
        raise HierflError(f"{folder}: not a run folder (missing summary.json)")
    try:
        summary = json.loads((folder / "summary.json").read_text())
        raw = summary["scenario"]
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptError(f"{folder / 'summary.json'}: no scenario in it: {error}") from None
    try:
        scenario = parse_scenario(raw, origin=str(folder / "summary.json"))
    except ScenarioError as error:
        raise CorruptError(str(error)) from None
    if not (folder / "model.pt").is_file():
        raise HierflError(
            f"{folder}: has no model.pt to export (a timing-only run, run.learning = false, "
            "trains no model)"
        )
    code = custom_references(scenario).get("model.name")
    if code and not allow_code:
        raise HierflError(
            f"{folder}: its model is your own code (model.name = {code!r}); export with "
            "--allow-code if you trust that code"
        )
    try:
        tensors = torch.load(folder / "model.pt", weights_only=True)
    except Exception as error:  # torch raises many kinds on a damaged archive
        raise CorruptError(f"{folder / 'model.pt'}: cannot read it: {error}") from None
    return scenario, tensors


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise HierflError(
            "export needs onnx and onnxruntime: pip install 'hierfl[export]'"
        ) from None


def _to_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str) -> None:
    """torch's TorchScript-based ONNX exporter, batch axis dynamic.

    The newer torch.export-based exporter needs onnxscript; the models here are plain
    feed-forward networks, which the TorchScript exporter handles exactly.
    """
    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=[_INPUT],
            output_names=[_OUTPUT],
            dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}},
            dynamo=False,
        )


def _quantize(floating: Path, path: str, calibration: torch.Tensor) -> None:
    """Static int8 quantization of ``floating`` into ``path``, calibrated on ``calibration``.

    onnxruntime's pre-processing (shape inference, graph optimisation) runs first, as its
    quantizer asks; QDQ with int8 weights and activations is its recommended form on CPUs.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = floating.with_name("prepared.onnx")
    quant_pre_process(str(floating), str(prepared))

    class Rows(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows: Iterator[np.ndarray] = iter(calibration.numpy()[:, None])

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return None if row is None else {_INPUT: row.astype(np.float32)}

    quantize_static(
        str(prepared),
        path,
        Rows(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )


def _calibration_rows(data: FederatedData, count: int) -> torch.Tensor:
    """``count`` training samples spread evenly over all devices' rows (no randomness)."""
    if count < 1:
        raise HierflError(f"--calibration must be >= 1: {count}")
    total = len(data.x)
    picked = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
    return data.x[torch.from_numpy(picked)]


def _report(
    target: Path,
    fmt: str,
    width: float,
    model: nn.Module,
    data: FederatedData,
    predicted: np.ndarray,
    calibration: torch.Tensor | None,
    scenario: Scenario,
) -> ExportReport:
    """Agreement and accuracies on the test set, and the file size against every profile."""
    with torch.no_grad():
        reference = model(data.x_test).argmax(dim=1).numpy()
    labels = data.y_test.numpy()
    size = target.stat().st_size
    fleet = {group.profile for group in scenario.devices}
    names = sorted({*BUILTIN_PROFILES, *scenario.profiles})
    profiles = {
        name: {
            "memory_kb": scenario.profile(name).memory_kb,
            "fits": size <= scenario.profile(name).memory_kb * 1024,
            "in_fleet": name in fleet,
        }
        for name in names
    }
    return ExportReport(
        file=str(target),
        format=fmt,
        int8=calibration is not None,
        width=width,
        file_bytes=size,
        test_samples=len(labels),
        agreement=_mean(predicted == reference),
        accuracy_torch=_mean(reference == labels),
        accuracy_export=_mean(predicted == labels),
        calibration_samples=0 if calibration is None else len(calibration),
        profiles=profiles,
    )


def _mean(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else 0.0
