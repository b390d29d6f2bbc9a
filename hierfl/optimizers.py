"""Server optimisers: how an aggregator turns the averaged update into its next model.

Reddi et al. 2021 ("Adaptive Federated Optimization"): the aggregator treats the averaged
delta ``averaged - model`` as a negative pseudo-gradient and takes an optimiser step with
it. FedAvg with ``server_lr = 1`` takes the average itself. Each aggregator (every edge,
the cloud) has its own optimiser and state; the step is applied after averaging, whatever
the averaging was, so other averaging rules (HeteroFL slices) compose with it.

A plug-in is a class named ``package.module:Name`` under ``[aggregation] edge_optimizer``
or ``cloud_optimizer``: built as ``Name(settings, size)`` once per aggregator, it has
``step``, ``state_dict`` and ``load_state_dict`` as ``ServerOptimizer`` below, and a
``flops_per_param`` (FLOPs of one step per parameter, for the aggregator's compute time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from hierfl.errors import ScenarioError
from hierfl.plugins import load_object
from hierfl.scenario import AggregationConfig

State = dict[str, torch.Tensor]


class Optimizer(Protocol):
    """What an aggregator needs of a server optimiser (built-in or plug-in)."""

    flops_per_param: int

    def step(self, model: torch.Tensor, averaged: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> State: ...

    def load_state_dict(self, state: State) -> None: ...


class ServerOptimizer:
    """FedAvg with a server step size: ``model + server_lr * (averaged - model)``.

    >>> opt = ServerOptimizer(AggregationConfig(server_lr=0.5), 2)
    >>> opt.step(torch.tensor([0.0, 2.0]), torch.tensor([4.0, 2.0])).tolist()
    [2.0, 2.0]
    """

    def __init__(self, settings: AggregationConfig, size: int) -> None:
        self.lr = settings.server_lr
        self.flops_per_param = 0 if self.lr == 1 else 3  # delta, scale, add

    def step(self, model: torch.Tensor, averaged: torch.Tensor) -> torch.Tensor:
        """The aggregator's next model from its current ``model`` and the ``averaged`` one."""
        if self.lr == 1:  # exactly FedAvg, with no rounding added
            return averaged
        return model + self.lr * (averaged - model)

    def state_dict(self) -> State:
        """Tensors that must survive a checkpoint (none for FedAvg)."""
        return {}

    def load_state_dict(self, state: State) -> None:
        """Take back what ``state_dict`` gave (checked against it by the caller)."""
        for name, value in state.items():
            getattr(self, name).copy_(value)


class FedAvgM(ServerOptimizer):
    """Server momentum: ``m = server_momentum * m + delta``; ``model + server_lr * m``.

    >>> opt = FedAvgM(AggregationConfig(server_momentum=0.5), 1)
    >>> [opt.step(torch.zeros(1), torch.ones(1)).item() for _ in range(2)]
    [1.0, 1.5]
    """

    def __init__(self, settings: AggregationConfig, size: int) -> None:
        super().__init__(settings, size)
        self.beta = settings.server_momentum
        self.momentum = torch.zeros(size)
        self.flops_per_param = 5  # delta, beta * m + delta, lr * m, add

    def step(self, model: torch.Tensor, averaged: torch.Tensor) -> torch.Tensor:
        self.momentum.mul_(self.beta).add_(averaged - model)
        return model + self.lr * self.momentum

    def state_dict(self) -> State:
        return {"momentum": self.momentum}


class FedAdam(ServerOptimizer):
    """Reddi et al.'s FedAdam (Algorithm 2, no bias correction, ``v`` starts at ``tau**2``):
    ``m = beta1 m + (1 - beta1) delta``, ``v = beta2 v + (1 - beta2) delta**2``,
    ``model + server_lr * m / (sqrt(v) + tau)``.

    >>> opt = FedAdam(AggregationConfig(beta1=0.0, beta2=0.0, tau=1.0), 1)
    >>> opt.step(torch.zeros(1), torch.full((1,), 3.0)).item()
    0.75
    """

    def __init__(self, settings: AggregationConfig, size: int) -> None:
        super().__init__(settings, size)
        self.beta1, self.beta2, self.tau = settings.beta1, settings.beta2, settings.tau
        self.m = torch.zeros(size)
        self.v = torch.full((size,), self.tau**2)
        self.flops_per_param = 13  # delta; m: 3; v: 4; sqrt, +tau, divide, * lr, add

    def step(self, model: torch.Tensor, averaged: torch.Tensor) -> torch.Tensor:
        delta = averaged - model
        self.m.mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(delta, delta, value=1 - self.beta2)
        return model + self.lr * self.m / (self.v.sqrt() + self.tau)

    def state_dict(self) -> State:
        return {"m": self.m, "v": self.v}


BUILTIN: dict[str, Callable[[AggregationConfig, int], ServerOptimizer]] = {
    "fedavg": ServerOptimizer,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
}


def resolve_optimizer(name: str, key: str, settings: AggregationConfig, size: int) -> Optimizer:
    """A fresh optimiser for one aggregator: a built-in by name, or ``package.module:Name``
    built as ``Name(settings, size)``; errors name ``key`` (``aggregation.edge_optimizer``)."""
    factory = BUILTIN.get(name) or load_object(name, key)
    if not callable(factory):
        raise ScenarioError(f"{key}: {name!r} is not a class")
    optimizer = factory(settings, size)
    missing = [
        attr for attr in ("step", "state_dict", "load_state_dict", "flops_per_param")
        if not hasattr(optimizer, attr)
    ]
    if missing:
        raise ScenarioError(f"{key}: {name!r} has no {', '.join(missing)} (see docs/extending.md)")
    return optimizer
