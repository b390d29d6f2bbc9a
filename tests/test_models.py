"""The model zoo: layers, hand-counted FLOPs, parameters and activations, custom classes, seeds."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from hierfl.errors import ScenarioError
from hierfl.learn.models import MODEL_NAMES, ModelStats, build_model, model_stats

CUSTOM = textwrap.dedent(
    """
    from torch import nn

    class ShapeNet(nn.Module):
        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.seen = (input_shape, num_classes)
            self.head = nn.Linear(input_shape[-1], num_classes)

        def forward(self, x):
            return self.head(x)

    class DimNet(nn.Module):
        def __init__(self, input_dim, num_classes=3):
            super().__init__()
            self.seen = (input_dim, num_classes)
            self.head = nn.Linear(input_dim, num_classes)

        def forward(self, x):
            return self.head(x.flatten(1))

    class Bare(nn.Module):
        def forward(self, x):
            return x

    class NotAModule:
        pass
    """
)


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    """A throwaway importable module ``hierfl_custom_models`` holding a few classes."""
    (tmp_path / "hierfl_custom_models.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hierfl_custom_models", raising=False)
    return "hierfl_custom_models"


def test_compact_stats_by_hand():
    """compact on 32 inputs, 10 classes: params, FLOPs (2 per MAC) and activations."""
    stats = model_stats(build_model("compact", (32,), 10, seed=0), (32,))
    params = (32 * 64 + 64) + (64 * 32 + 32) + (32 * 10 + 10)
    flops = 2 * (32 * 64 + 64 * 32 + 32 * 10)
    # input, Flatten, Linear, ReLU, Linear, ReLU, Linear
    activations = 32 + 32 + 64 + 64 + 32 + 32 + 10
    assert stats == ModelStats(n_params=params, forward_flops=flops, activations_per_sample=266)
    assert (params, flops, activations) == (4522, 8832, 266)


def test_tiny_stats_by_hand():
    """tiny on 32 inputs, 10 classes: 2 * (32*16 + 16*10) FLOPs."""
    stats = model_stats(build_model("tiny", (32,), 10, seed=0), (32,))
    assert stats.forward_flops == 2 * (32 * 16 + 16 * 10) == 1344
    assert stats.n_params == (32 * 16 + 16) + (16 * 10 + 10)
    assert stats.activations_per_sample == 32 + 32 + 16 + 16 + 10


def test_mobile_stats_by_hand():
    """mobile: Dropout layers are leaves and count as activations, but cost no FLOPs."""
    stats = model_stats(build_model("mobile", (32,), 10, seed=0), (32,))
    assert stats.forward_flops == 2 * (32 * 128 + 128 * 64 + 64 * 10)
    assert stats.n_params == (32 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    assert stats.activations_per_sample == 32 + 32 + 3 * 128 + 3 * 64 + 10


def test_seed_mlp_layers():
    """The MLPs keep the seed's layers after a leading Flatten, in ``self.net``."""
    model = build_model("mobile", (32,), 10, seed=0)
    kinds = [type(layer).__name__ for layer in model.net]
    assert kinds == ["Flatten"] + ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [m.p for m in model.net if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    names = [name for name, _ in build_model("compact", (32,), 10, seed=0).named_parameters()]
    assert names == [f"net.{i}.{p}" for i in (1, 3, 5) for p in ("weight", "bias")]


def test_mlp_flattens_images():
    """An MLP on (1, 8, 8) images sees 64 inputs."""
    model = build_model("compact", (1, 8, 8), 10, seed=0)
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    stats = model_stats(model, (1, 8, 8))
    assert stats.forward_flops == 2 * (64 * 64 + 64 * 32 + 32 * 10)


def test_dscnn_on_digits():
    """dscnn runs on 8x8 digits; FLOPs: conv 3x3, depthwise 3x3, pointwise 1x1, linear."""
    model = build_model("dscnn", (1, 8, 8), 10, seed=0)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    stats = model_stats(model, (1, 8, 8))
    pixels = 8 * 8
    flops = 2 * (9 * 1 * 16 * pixels + 9 * 16 * pixels + 16 * 32 * pixels + 32 * 10)
    assert stats.forward_flops == flops > 0
    assert stats.n_params == (9 * 16 + 16) + (9 * 16 + 16) + (16 * 32 + 32) + (32 * 10 + 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.Dropout) for m in model.modules())


def test_dscnn_rejects_flat_input():
    """dscnn on flat features is a ScenarioError naming model.name and the shape."""
    with pytest.raises(ScenarioError, match=r"model\.name: dscnn needs image input.*\(32,\)"):
        build_model("dscnn", (32,), 10, seed=0)


def test_unknown_name_lists_allowed():
    """An unknown model name is a ScenarioError listing the built-in names."""
    with pytest.raises(ScenarioError, match="model.name") as info:
        build_model("resnet", (32,), 10, seed=0)
    assert "'resnet'" in str(info.value)
    assert all(name in str(info.value) for name in MODEL_NAMES)


def test_custom_class_gets_input_shape(custom_module):
    """A custom class accepting input_shape gets the shape and num_classes."""
    model = build_model(f"{custom_module}:ShapeNet", (4, 6), 7, seed=0)
    assert model.seen == ((4, 6), 7)
    assert model(torch.zeros(2, 4, 6)).shape == (2, 4, 7)


def test_custom_class_gets_input_dim(custom_module):
    """A custom class accepting input_dim gets prod(input_shape), and num_classes."""
    model = build_model(f"{custom_module}:DimNet", (1, 8, 8), 10, seed=0)
    assert model.seen == (64, 10)
    assert model_stats(model, (1, 8, 8)).forward_flops == 2 * 64 * 10


def test_custom_class_without_shape_arguments(custom_module):
    """A custom class taking no arguments is built as is."""
    model = build_model(f"{custom_module}:Bare", (3,), 2, seed=0)
    assert model_stats(model, (3,)) == ModelStats(0, 0, 3 + 3)


@pytest.mark.parametrize(
    "suffix",
    ["no_such_module_xyz:Net", "{mod}:Missing", "{mod}:NotAModule", "torch:zeros"],
)
def test_custom_bad_names(custom_module, suffix):
    """Unimportable modules, missing attributes and non-Modules are ScenarioErrors."""
    name = suffix.format(mod=custom_module)
    with pytest.raises(ScenarioError, match="model.name") as info:
        build_model(name, (3,), 2, seed=0)
    assert repr(name) in str(info.value)


def test_same_seed_same_weights():
    """The same seed gives identical parameters; another seed different ones."""
    for name, shape in (("compact", (32,)), ("dscnn", (1, 8, 8))):
        first = build_model(name, shape, 10, seed=3).state_dict()
        again = build_model(name, shape, 10, seed=3).state_dict()
        other = build_model(name, shape, 10, seed=4).state_dict()
        assert all(torch.equal(first[k], again[k]) for k in first)
        assert not all(torch.equal(first[k], other[k]) for k in first)


def test_build_leaves_global_rng_alone():
    """Building a model neither reads nor moves the global torch RNG."""
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    build_model("mobile", (32,), 10, seed=0)
    assert torch.equal(torch.rand(4), expected)
    torch.manual_seed(999)
    a = build_model("tiny", (32,), 10, seed=0).state_dict()
    torch.manual_seed(1)
    b = build_model("tiny", (32,), 10, seed=0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_stats_restores_training_mode():
    """model_stats runs in eval mode but hands the model back in its mode, hooks removed."""
    model = build_model("mobile", (32,), 10, seed=0)
    model.train()
    model_stats(model, (32,))
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()
    model_stats(model, (32,))
    assert not model.training

