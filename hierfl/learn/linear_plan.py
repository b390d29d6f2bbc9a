"""Read a model's forward as a chain of Linear layers and elementwise activations.

The batched trainer's fast path trains such chains with hand-written forward and backward
passes over stacked client weights; this module decides whether a model is one (from its
``torch.fx`` graph) and pairs each activation with the backward autograd itself uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hierfl.learn.trainer import ParamSpace

_aten = torch.ops.aten


@dataclass(frozen=True)
class LinearLayer:
    """A Linear layer, by the names of its parameters."""

    weight: str
    bias: str | None


@dataclass(frozen=True)
class Activation:
    """An elementwise layer: its forward and the backward autograd uses."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(gradient of the output, saved tensor) -> gradient of the input."""
    saves_output: bool
    """The backward needs the output (else the input)."""
    inplace: Callable[[torch.Tensor], torch.Tensor] | None = None
    """The forward in place, for inputs nothing else keeps (a Linear's fresh output)."""


def activation_of(module: nn.Module) -> Activation | None:
    """Forward and the backward autograd itself uses, for a supported elementwise layer."""
    kind = type(module)
    if kind is nn.ReLU:
        return Activation(
            torch.relu, lambda g, out: _aten.threshold_backward(g, out, 0), True, torch.relu_
        )
    if kind is nn.Tanh:
        return Activation(torch.tanh, _aten.tanh_backward, True, torch.tanh_)
    if kind is nn.Sigmoid:
        return Activation(torch.sigmoid, _aten.sigmoid_backward, True, torch.sigmoid_)
    if kind is nn.GELU:
        approx = module.approximate
        return Activation(
            lambda z: F.gelu(z, approximate=approx),
            lambda g, z: _aten.gelu_backward(g, z, approximate=approx),
            False,
        )
    if kind is nn.SiLU:
        return Activation(F.silu, _aten.silu_backward, False)
    if kind is nn.LeakyReLU:
        slope = module.negative_slope
        return Activation(
            lambda z: F.leaky_relu(z, slope),
            lambda g, z: _aten.leaky_relu_backward(g, z, slope, False),
            False,
        )
    return None


Plan = list[LinearLayer | Activation]


def linear_plan(model: nn.Module, space: ParamSpace, input_shape: tuple[int, ...]) -> Plan | None:
    """The layers of ``model`` if its forward is a chain of Linear and activations, else None.

    The forward is read with ``torch.fx``, so only what really runs counts; a Flatten may
    come first (and must, for inputs of more than one dimension).
    """
    try:
        nodes = list(torch.fx.symbolic_trace(model).graph.nodes)
    except Exception:  # any trace failure just means: not a plain chain
        return None
    modules = dict(model.named_modules())
    plan: Plan = []
    flat_input, previous = len(input_shape) == 1, nodes[0]
    if previous.op != "placeholder" or nodes[-1].op != "output":
        return None
    for node in nodes[1:-1]:
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            return None
        module = modules[node.target]
        if type(module) is nn.Linear:
            bias = f"{node.target}.bias" if module.bias is not None else None
            plan.append(LinearLayer(f"{node.target}.weight", bias))
        elif type(module) is nn.Flatten and not plan:
            if (module.start_dim, module.end_dim) != (1, -1):
                return None
            flat_input = True
        elif type(module) is not nn.Identity:
            activation = activation_of(module)
            if activation is None:
                return None
            plan.append(activation)
        previous = node
    names = [n for s in plan if isinstance(s, LinearLayer) for n in (s.weight, s.bias) if n]
    if nodes[-1].args != (previous,) or not flat_input or sorted(names) != sorted(space.names):
        return None
    return plan
