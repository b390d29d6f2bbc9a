"""Your own model, selection policy, codec and server optimiser, named as ``custom:Name``.

Put this folder on ``PYTHONPATH`` (or install your package) and set, for example,
``[model] name = "custom:Wide"`` (or ``"custom:Scalable"`` with ``variants``),
``[selection] policy = "custom:most_charged"``, ``[compression] codec =
"custom:Float16Codec"`` and ``[aggregation] cloud_optimizer = "custom:FedYogi"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn


class Wide(nn.Module):
    """One wide hidden layer; hierfl passes input_dim (or input_shape) and num_classes."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Scalable(nn.Module):
    """A width family for ``[model] variants``: the ``width`` keyword scales the hidden layer,
    so each narrower variant's parameters are leading blocks of the full model's."""

    def __init__(self, input_dim: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        hidden = math.ceil(256 * width)
        self.body = nn.Linear(input_dim, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)).relu())


def most_charged(
    candidates: Sequence[int], battery: np.ndarray, fraction: float, rng: np.random.Generator
) -> list[int]:
    """Select the ``fraction`` of candidates with the most battery, never fewer than two."""
    ranked = sorted(candidates, key=lambda i: (-battery[i], i))
    return sorted(ranked[: max(2, math.floor(fraction * len(ranked)))])


class Float16Codec:
    """Half-precision updates: 2 bytes per element, tensors back to back in model order."""

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        return b"".join(t.detach().to(torch.float16).numpy().tobytes() for t in tensors.values())

    def decode(
        self, payload: bytes, specs: Sequence[tuple[str, tuple[int, ...]]]
    ) -> dict[str, torch.Tensor]:
        values = np.frombuffer(payload, dtype=np.float16)
        out, start = {}, 0
        for name, shape in specs:
            n = math.prod(shape)
            out[name] = torch.from_numpy(values[start : start + n].astype(np.float32)).reshape(
                shape
            )
            start += n
        return out

    def payload_bytes(self, specs: Sequence[tuple[str, tuple[int, ...]]]) -> int:
        return sum(2 * math.prod(shape) for _, shape in specs)


class FedYogi:
    """Reddi et al.'s FedYogi: FedAdam whose second moment moves by a sign, not a decay.

    Built once per aggregator as ``FedYogi(settings, size)``; ``settings`` is the
    scenario's ``[aggregation]`` table (``server_lr``, ``beta1``, ``beta2``, ``tau``).
    """

    flops_per_param = 15  # FedAdam's 13, and the sign of v - delta**2 times it

    def __init__(self, settings, size: int) -> None:
        self.lr, self.tau = settings.server_lr, settings.tau
        self.beta1, self.beta2 = settings.beta1, settings.beta2
        self.m, self.v = torch.zeros(size), torch.full((size,), settings.tau**2)

    def step(self, model: torch.Tensor, averaged: torch.Tensor) -> torch.Tensor:
        delta = averaged - model
        self.m.mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
        square = delta * delta
        self.v.sub_((1 - self.beta2) * square * torch.sign(self.v - square))
        return model + self.lr * self.m / (self.v.sqrt() + self.tau)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
