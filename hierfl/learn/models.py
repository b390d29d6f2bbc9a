"""The model zoo (the seed's three MLPs, a depthwise-separable CNN with or without batch
norm, or your own class). Every batch-norm layer is made static (hierfl.learn.sbn).

Also counts what the timing and memory models need: trainable parameters, FLOPs of one
forward pass on one sample, and activation elements per sample.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hierfl.errors import ScenarioError
from hierfl.learn.flops import forward_flops
from hierfl.learn.sbn import make_static, unit_statistics
from hierfl.plugins import load_object
from hierfl.scenario import MODEL_NAMES

__all__ = ["MODEL_NAMES", "ModelStats", "SequentialNet", "build_model", "model_stats", "scaled"]

Shape = tuple[int, ...]
Factory = Callable[[Shape, int, float], nn.Module]


def scaled(units: int, width: float) -> int:
    """Hidden units (or channels) of a width-``width`` variant: ``ceil(units * width)``, >= 1.

    >>> scaled(64, 0.5), scaled(16, 0.125), scaled(10, 0.01)
    (32, 2, 1)
    """
    return max(1, math.ceil(units * width))


class SequentialNet(nn.Module):
    """A zoo model: one ``nn.Sequential`` named ``net`` (parameters ``net.1.weight``, ...)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch, num_classes), for inputs of shape (batch, *input_shape)."""
        return self.net(x)


def _tiny(input_shape: Shape, num_classes: int, width: float = 1.0) -> nn.Module:
    """The seed's TinyMLModel (microcontrollers): in-16-ReLU-classes."""
    hidden = scaled(16, width)
    return SequentialNet(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _compact(input_shape: Shape, num_classes: int, width: float = 1.0) -> nn.Module:
    """The seed's CompactModel (edge SoCs): in-64-ReLU-32-ReLU-classes."""
    first, second = scaled(64, width), scaled(32, width)
    return SequentialNet(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), first),
        nn.ReLU(),
        nn.Linear(first, second),
        nn.ReLU(),
        nn.Linear(second, num_classes),
    )


def _mobile(input_shape: Shape, num_classes: int, width: float = 1.0) -> nn.Module:
    """The seed's MobileModel (phones): in-128-ReLU-Dropout-64-ReLU-Dropout-classes."""
    first, second = scaled(128, width), scaled(64, width)
    return SequentialNet(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), first),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(first, second),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(second, num_classes),
    )


def _dscnn(input_shape: Shape, num_classes: int, width: float = 1.0) -> nn.Module:
    """A depthwise-separable CNN for (C, H, W) images, without batch norm."""
    return _separable(input_shape, num_classes, width, "dscnn", batch_norm=False)


def _dscnn_bn(input_shape: Shape, num_classes: int, width: float = 1.0) -> nn.Module:
    """The DS-CNN with a (static) BatchNorm2d after each convolution, whose bias it replaces."""
    return _separable(input_shape, num_classes, width, "dscnn_bn", batch_norm=True)


def _separable(
    input_shape: Shape, num_classes: int, width: float, name: str, batch_norm: bool
) -> nn.Module:
    """Conv 3x3, depthwise 3x3, pointwise 1x1 (each then ReLU), global average pool, linear;
    with ``batch_norm``, each convolution is followed by BatchNorm2d and has no bias."""
    if len(input_shape) != 3:
        raise ScenarioError(
            f"model.name: {name} needs image input (C, H, W), data gives shape {tuple(input_shape)}"
        )
    first, second = scaled(16, width), scaled(32, width)
    convs = [
        nn.Conv2d(input_shape[0], first, kernel_size=3, padding=1, bias=not batch_norm),
        nn.Conv2d(first, first, kernel_size=3, padding=1, groups=first, bias=not batch_norm),
        nn.Conv2d(first, second, kernel_size=1, bias=not batch_norm),
    ]
    layers: list[nn.Module] = []
    for conv in convs:
        norm = [nn.BatchNorm2d(conv.out_channels)] if batch_norm else []
        layers += [conv, *norm, nn.ReLU()]
    return SequentialNet(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(second, num_classes))


_ZOO: dict[str, Factory] = {
    "tiny": _tiny, "compact": _compact, "mobile": _mobile, "dscnn": _dscnn, "dscnn_bn": _dscnn_bn,
}


def _custom(name: str) -> Factory:
    """Resolve ``"package.module:Class"`` to a factory passing the shape keywords it accepts.

    A class that accepts ``width`` declares a width family (docs/extending.md); it gets
    ``width`` only when the run asks for a variant other than the full model.
    """
    cls = load_object(name, "model.name")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ScenarioError(f"model.name: {name!r} must be an nn.Module subclass, got {cls!r}")
    accepted = inspect.signature(cls).parameters

    def factory(input_shape: Shape, num_classes: int, width: float = 1.0) -> nn.Module:
        kwargs: dict[str, object] = {}
        if width != 1.0:
            if "width" not in accepted:
                raise ScenarioError(
                    f"model.variants: {name!r} declares no width family (its constructor "
                    f"takes no 'width' keyword), so it has no width-{width:g} variant"
                )
            kwargs["width"] = width
        if "input_shape" in accepted:
            kwargs["input_shape"] = input_shape
        elif "input_dim" in accepted:
            kwargs["input_dim"] = math.prod(input_shape)
        if "num_classes" in accepted:
            kwargs["num_classes"] = num_classes
        try:
            return cls(**kwargs)
        except TypeError as error:
            raise ScenarioError(f"model.name: cannot construct {name!r}: {error}") from None

    return factory


def _resolve(name: str) -> Factory:
    if name in _ZOO:
        return _ZOO[name]
    if ":" in name:
        return _custom(name)
    raise ScenarioError(
        f"model.name: unknown model {name!r} (allowed: {', '.join(MODEL_NAMES)}, "
        "or 'package.module:Class')"
    )


def build_model(
    name: str, input_shape: Shape, num_classes: int, seed: int, width: float = 1.0
) -> nn.Module:
    """A freshly initialised model (its width-``width`` variant); same ``seed``, same weights.

    Its batch-norm layers, if any, are static (``sbn.make_static``). Global RNG state is
    left as it was: initialisation draws from the CPU generator seeded with ``seed`` inside a
    fork of the RNG.

    >>> model = build_model("tiny", (32,), 10, seed=0)
    >>> model(torch.zeros(2, 32)).shape
    torch.Size([2, 10])
    """
    factory = _resolve(name)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return make_static(factory(tuple(input_shape), num_classes, width))


@dataclass(frozen=True)
class ModelStats:
    """What the timing and memory models need to know about one model.

    ``train_bytes = 4 * (2 * n_params + batch_size * activations_per_sample)``.
    """

    n_params: int
    """Trainable parameters, elements."""
    forward_flops: int
    """FLOPs of one forward pass on one sample (FlopCounterMode: 2 per multiply-accumulate)."""
    activations_per_sample: int
    """Elements of every leaf module's output for one sample, plus the input's elements."""


def model_stats(model: nn.Module, input_shape: Shape, cache_key: str | None = None) -> ModelStats:
    """Count parameters, forward FLOPs and activations on one all-zero sample.

    The model runs in eval mode without gradients (static batch norm with unit statistics);
    its training mode is restored. With a ``cache_key`` (built-in models), the FLOP count may
    come from the disk cache (flops.py).

    >>> model_stats(build_model("tiny", (32,), 10, seed=0), (32,))
    ModelStats(n_params=698, forward_flops=1344, activations_per_sample=106)
    """
    sample = torch.zeros(1, *input_shape)
    activations = [sample.numel()]

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        outputs = output if isinstance(output, tuple | list) else (output,)
        activations.extend(t.numel() for t in outputs if isinstance(t, torch.Tensor))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [leaf.register_forward_hook(count) for leaf in leaves]
    was_training = model.training
    with unit_statistics(model):
        try:
            model.eval()
            with torch.no_grad():
                model(sample)
        finally:
            for handle in handles:
                handle.remove()
        try:
            flops = forward_flops(model, sample, cache_key)
        finally:
            model.train(was_training)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelStats(n_params, flops, sum(activations))
