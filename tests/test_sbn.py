"""Static batch norm (HeteroFL's sBN): batch statistics in training, none federated, and the
evaluator's statistics computed once per evaluated model over the fleet's training data."""

from __future__ import annotations

import copy
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clirun import invoke
from torch import nn
from torch.func import functional_call

import hierfl
from hierfl.export import run_data
from hierfl.learn.batched import BatchedTrainer
from hierfl.learn.data import make_data
from hierfl.learn.family import FamilyTrainer
from hierfl.learn.models import build_model
from hierfl.learn.sbn import STATS_SAMPLES, eval_buffers, statistics, stats_rows
from hierfl.learn.trainer import ParamSpace, ReferenceTrainer, epoch_orders, evaluate
from hierfl.scenario import DataConfig
from hierfl.sim.engine import prepare

DIGITS = DataConfig(kind="digits", samples_per_device=(9, 30))

BN_MODELS = textwrap.dedent(
    """
    import math
    from torch import nn

    class ConvBN(nn.Module):
        '''Batch norm as torch makes it by default (running statistics, momentum 0.1).'''

        def __init__(self, input_shape, num_classes, width=1.0):
            super().__init__()
            c = math.ceil(8 * width)
            self.body = nn.Sequential(nn.Conv2d(input_shape[0], c, 3, padding=1),
                                      nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
            self.head = nn.Linear(c, num_classes)

        def forward(self, x):
            return self.head(self.body(x))

    class MlpBN(nn.Module):
        def __init__(self, input_dim, num_classes):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, 12),
                                     nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, num_classes))

        def forward(self, x):
            return self.net(x)
    """
)


@pytest.fixture
def bn_module(tmp_path, monkeypatch):
    """An importable module ``hierfl_bn_models`` with custom models that have BatchNorm."""
    (tmp_path / "hierfl_bn_models.py").write_text(BN_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hierfl_bn_models", raising=False)
    return "hierfl_bn_models"


def _digits(counts: list[int], seed: int = 0):
    return make_data(DIGITS, np.array(counts), np.random.default_rng(seed))


def test_built_models_federate_parameters_only():
    """dscnn_bn: a BatchNorm2d after each convolution (which then has no bias), static: no
    running buffers in its state, and its parameters are the affine weight and bias."""
    model = build_model("dscnn_bn", (1, 8, 8), 10, seed=0)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [m.num_features for m in norms] == [16, 16, 32]
    assert all(not m.track_running_stats and m.running_mean is None for m in norms)
    assert list(model.state_dict()) == [name for name, _ in model.named_parameters()]
    assert sum(p.numel() for p in model.parameters()) == (
        9 * 16 + 2 * 16 + 9 * 16 + 2 * 16 + 16 * 32 + 2 * 32 + 32 * 10 + 10
    )


def test_statistics_equal_a_plain_torch_pass():
    """The statistics are those of a plain torch pass in train mode with momentum=None
    (cumulative average of each batch's mean and unbiased variance) over the same batches."""
    model = build_model("dscnn_bn", (1, 8, 8), 10, seed=3)
    x = _digits([400, 450, 400]).x
    params = dict(model.named_parameters())
    found = statistics(model, params, x, batch=500)

    reference = build_model("dscnn", (1, 8, 8), 10, seed=3)  # same layout, convs with bias
    layers = list(reference.net)
    plain = []
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            layer.bias = None
            norm = nn.BatchNorm2d(layer.out_channels, momentum=None)
            plain += [layer, norm]
        else:
            plain.append(layer)
    net = nn.Sequential(*plain)
    net.load_state_dict({k.removeprefix("net."): v for k, v in params.items()}, strict=False)
    with torch.no_grad():
        for part in (x[:417], x[417:834], x[834:]):  # 1,250 rows in 3 batches: 417, 417, 416
            net(part)
    for index, norm in [(1, net[1]), (4, net[4]), (7, net[7])]:
        torch.testing.assert_close(found[f"net.{index}.running_mean"], norm.running_mean)
        torch.testing.assert_close(found[f"net.{index}.running_var"], norm.running_var)

    first = F.conv2d(x, params["net.0.weight"], padding=1)
    by_hand = torch.stack([p.mean(dim=(0, 2, 3)) for p in torch.tensor_split(first, 3)])
    torch.testing.assert_close(found["net.1.running_mean"], by_hand.mean(dim=0))


def test_evaluation_uses_the_training_statistics():
    """evaluate() on a batch-norm model: eval mode with the statistics of the weights over the
    training rows ``stats_rows`` picks (all, or STATS_SAMPLES evenly spread), not the test
    batch's own statistics."""
    data = _digits([30, 20, 25])
    model = build_model("dscnn_bn", (1, 8, 8), 10, seed=1)
    trainer = ReferenceTrainer(model, data, 1, 8, 0.1)
    space = trainer.space
    flat = space.vector(model) + 0.05
    params = space.unflatten(flat)
    stats = statistics(model, params, data.x)
    model.eval()
    logits = functional_call(model, {**params, **stats}, (data.x_test,))
    model.train()
    expected = float((logits.argmax(dim=1) == data.y_test).float().mean())
    assert evaluate(model, space, flat, data.x_test, data.y_test)[0] == expected
    assert eval_buffers(model, params, flat) is eval_buffers(model, params, flat.clone())
    assert len(stats_rows(10 * STATS_SAMPLES)) == STATS_SAMPLES


def _plain_loop(model: nn.Module, start: torch.Tensor, x, y, seed, epochs, batch, lr):
    """One job with torch.optim.SGD on a copy of ``model`` (train mode, batch statistics)."""
    local = copy.deepcopy(model).train()
    nn.utils.vector_to_parameters(start.clone(), local.parameters())
    optimizer = torch.optim.SGD(local.parameters(), lr=lr)
    for order in epoch_orders(seed, len(y), epochs):
        for begin in range(0, len(order), batch):
            rows = torch.as_tensor(order[begin : begin + batch])
            optimizer.zero_grad()
            F.cross_entropy(local(x[rows]), y[rows]).backward()
            optimizer.step()
    return ParamSpace.of(local).vector(local)


@pytest.mark.parametrize("name", ["dscnn_bn", "hierfl_bn_models:MlpBN"])
def test_batched_trainer_with_batch_norm_equals_a_plain_loop(name, bn_module):
    """With batch norm the batched trainer (generic path) trains each step's clients by real
    minibatch size, unpadded (padding would enter the batch statistics): jobs whose last
    minibatches differ (13, 21, 30, 10 samples, batch 8) equal a plain torch loop's."""
    counts = [13, 21, 30, 10]
    data = _digits(counts)
    model = build_model(name, (1, 8, 8), 10, seed=2)
    trainer = BatchedTrainer(model, data, 2, 8, 0.1)
    assert trainer.path == "generic"
    start = trainer.space.vector(model)
    jobs = [trainer.submit(d, start, (5, d)) for d in range(len(counts))]
    for device, job in enumerate(jobs):
        rows = data.device_slice(device)
        expected = _plain_loop(model, start, data.x[rows], data.y[rows], (5, device), 2, 8, 0.1)
        torch.testing.assert_close(job.result(), expected, rtol=1e-4, atol=1e-5)


def _hetero_scenario(make_scenario, **model):
    """Two mcus that hold only the width-1/2 dscnn_bn and two phones, cloud-only FedAvg."""
    return make_scenario(
        run={"cloud_rounds": 1, "learning": True, "learning_rate": 0.1, "local_epochs": 1},
        data={"kind": "digits", "samples_per_device": [12, 30]},
        model={"name": "dscnn_bn", "variants": [1, 0.5], **model},
        compression={"payload": "weights"},
        topology={"mode": "cloud_only", "edges": 1},
        devices=[{"profile": "mcu", "count": 2}, {"profile": "mobile", "count": 2}],
        profiles={"mcu": {"memory_kb": 300}},
    )


def test_heterofl_averages_batch_norm_affine_slices(make_scenario, monkeypatch):
    """HeteroFL with dscnn_bn: channel c of a BatchNorm weight or bias becomes the
    sample-weighted average over the devices whose variant holds channel c (by hand); each
    tier's test accuracy uses the statistics of its own sub-model."""
    trained = {}
    submit = FamilyTrainer.submit

    def recording(self, device, start, seed):
        trained[device] = job = submit(self, device, start, seed)
        return job

    monkeypatch.setattr(FamilyTrainer, "submit", recording)
    scenario = _hetero_scenario(make_scenario)
    result = hierfl.run(scenario)
    widths = result.devices["width"].tolist()
    assert sorted(widths) == [0.5, 0.5, 1.0, 1.0]
    samples = result.devices["samples"].to_numpy(dtype=np.float64)
    spaces = {w: ParamSpace.of(build_model("dscnn_bn", (1, 8, 8), 10, 0, width=w))
              for w in (0.5, 1.0)}
    for name in ("net.1.weight", "net.1.bias", "net.7.weight", "net.7.bias"):
        full = result.model[name]
        expected = torch.zeros_like(full)
        for c in range(len(full)):
            total = weight = 0.0
            for device, width in enumerate(widths):
                mine = spaces[width].unflatten(trained[device].result())[name]
                if c < len(mine):
                    total += samples[device] * float(mine[c])
                    weight += samples[device]
            expected[c] = total / weight
        torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-6)

    data = run_data(scenario)
    flat = torch.cat([t.reshape(-1) for t in result.model.values()])
    own_stats = []
    for tier, variant in zip(result.summary["tiers"], prepare(scenario).family.variants,
                             strict=True):
        params = variant.space.unflatten(flat[variant.index])
        stats = statistics(variant.model, params, data.x)
        own_stats.append(stats)
        variant.model.eval()
        logits = functional_call(variant.model, {**params, **stats}, (data.x_test,))
        accuracy = float((logits.argmax(dim=1) == data.y_test).float().mean())
        assert tier["test_accuracy"] == pytest.approx(accuracy)
    narrow, wide = own_stats  # after the pointwise convolution, which mixes every channel
    assert not torch.allclose(narrow["net.7.running_var"], wide["net.7.running_var"][:16])


@pytest.mark.parametrize("variants", [None, [1, 0.5]])
def test_custom_model_with_torch_batch_norm_runs_static(make_scenario, bn_module, variants):
    """A custom model with nn.BatchNorm2d as torch makes it (running statistics) trains as
    static batch norm, with or without variants: the run's model holds parameters only."""
    scenario = make_scenario(
        run={"cloud_rounds": 2, "learning": True, "learning_rate": 0.1},
        data={"kind": "digits", "samples_per_device": [12, 30]},
        model={"name": f"{bn_module}:ConvBN", "variants": variants},
    )
    result = hierfl.run(scenario)
    assert list(result.model) == ["body.0.weight", "body.0.bias", "body.1.weight",
                                  "body.1.bias", "head.weight", "head.bias"]
    assert 0 <= result.rounds["accuracy"].iloc[-1] <= 1


def test_dscnn_bn_needs_images(tmp_path):
    """dscnn_bn on flat data: one line naming model.name, exit 2, nothing written."""
    scenario = Path(__file__).parents[1] / "scenarios" / "tutorial066.toml"
    out = tmp_path / "run"
    done = invoke("run", str(scenario), "--quiet", "--out", str(out),
                  "--set", "model.name=dscnn_bn")
    assert done.one_error_line, done
    assert "model.name: dscnn_bn needs image input" in done.err
    assert not out.exists()


def test_resume_of_a_batch_norm_run_equals_uninterrupted(tmp_path, make_scenario):
    """Nothing but parameters federates, so a dscnn_bn HeteroFL run stopped after a cloud
    round and resumed from its checkpoint gives the same tables, model and tiers."""
    from test_resume import assert_same, interrupt_after

    from hierfl.sim.runner import resume, simulate

    scenario = _hetero_scenario(make_scenario)
    scenario = scenario.model_copy(
        update={"run": scenario.run.model_copy(update={"cloud_rounds": 2})}
    )
    whole = simulate(scenario)
    interrupt_after(scenario, tmp_path, 0)
    again = resume(tmp_path)
    assert_same(whole, again)
    assert again.summary["tiers"] == whole.summary["tiers"]


def test_export_bakes_in_each_variants_statistics(make_scenario, tmp_path):
    """hierfl export of a dscnn_bn run: the ONNX model of the global model and of the width-1/2
    variant carry the evaluator's statistics, so PyTorch's accuracy on each is the run's own
    (summary tiers) and the export agrees with PyTorch."""
    result = hierfl.run(_hetero_scenario(make_scenario))
    result.write(tmp_path)
    for width in (None, 0.5):
        options = [] if width is None else ["--width", "0.5"]
        done = invoke("export", str(tmp_path), *options)
        assert done.code == 0, done
        name = "model.onnx.json" if width is None else "model.w0.5.onnx.json"
        report = json.loads((tmp_path / name).read_text())
        tier = next(t for t in result.summary["tiers"] if t["width"] == (width or 1.0))
        assert report["accuracy_torch"] == pytest.approx(tier["test_accuracy"], abs=1e-6)
        assert report["agreement"] >= 0.99
