"""Local SGD on flat parameter vectors: jobs are submitted by the simulation and trained lazily.

A job's result depends only on its start weights, its device's data and its seed,
never on which other jobs were pending with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from hierfl.learn.data import FederatedData
from hierfl.learn.sbn import eval_buffers, use_training_data


@dataclass(frozen=True)
class ParamSpace:
    """Names and shapes of a model's parameters, and the flat vector layout they share."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParamSpace:
        """The layout of ``model``'s parameters, in registration order."""
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def specs(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) pairs, as codecs take them."""
        return list(zip(self.names, self.shapes, strict=True))

    @cached_property
    def sizes(self) -> list[int]:
        """Elements of each parameter."""
        return [math.prod(shape) for shape in self.shapes]

    @cached_property
    def size(self) -> int:
        """Elements in the flat vector."""
        return sum(self.sizes)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped like the parameters (leading batch dims are kept)."""
        lead = flat.shape[:-1]
        parts = torch.split(flat, self.sizes, dim=-1)
        return {
            name: part.reshape(*lead, *shape)
            for name, part, shape in zip(self.names, parts, self.shapes, strict=True)
        }

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """One float32 vector of ``tensors`` in layout order."""
        return torch.cat([tensors[name].reshape(-1).float() for name in self.names])

    def vector(self, model: nn.Module) -> torch.Tensor:
        """The model's current parameters as one flat vector (a copy)."""
        return self.flatten(dict(model.named_parameters())).detach().clone()


def epoch_orders(seed: Sequence[int], samples: int, epochs: int) -> list[np.ndarray]:
    """The sample order of each local epoch, drawn from a generator seeded by ``seed`` alone."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    return [rng.permutation(samples) for _ in range(epochs)]


class Job:
    """One device's local training from given start weights; ``result()`` trains on demand."""

    __slots__ = ("device", "start", "seed", "_trainer", "_result")

    def __init__(
        self, trainer: ReferenceTrainer, device: int, start: torch.Tensor, seed: tuple[int, ...]
    ) -> None:
        self.device, self.start, self.seed = device, start, seed
        self._trainer = trainer
        self._result: torch.Tensor | None = None

    def result(self) -> torch.Tensor:
        """The trained flat weights; trains every pending job first if needed."""
        if self._result is None:
            self._trainer.flush()
        assert self._result is not None
        return self._result


class ReferenceTrainer:
    """Trains pending jobs one after another: plain minibatch SGD, the sequential reference.

    With ``mu > 0`` the local objective is FedProx's: the loss plus
    ``(mu / 2) * ||w - w_start||^2``, so each step adds ``mu * (w - w_start)`` to the gradient.
    """

    def __init__(
        self,
        model: nn.Module,
        data: FederatedData,
        local_epochs: int,
        batch_size: int,
        learning_rate: float,
        device: str = "cpu",
        mu: float = 0.0,
    ) -> None:
        self.model = model.to(device).train()
        self.space = ParamSpace.of(model)
        self.data = data
        self.local_epochs, self.batch_size, self.learning_rate = (
            local_epochs,
            batch_size,
            learning_rate,
        )
        self.device, self.mu = device, mu
        self.x, self.y = data.x.to(device), data.y.to(device)
        use_training_data(self.model, self.x)
        self.pending: dict[Job, None] = {}  # in submission order; cancelling one is O(1)

    def submit(self, device: int, start: torch.Tensor, seed: tuple[int, ...]) -> Job:
        """Queue training of ``device`` from ``start``; nothing runs until a result is needed."""
        job = Job(self, device, start, seed)
        self.pending[job] = None
        return job

    def cancel(self, job: Job) -> None:
        """Drop a job whose result will never be used (its device dropped out)."""
        self.pending.pop(job, None)

    def flush(self) -> None:
        """Train every pending job."""
        for job in self.take_pending():
            job._result = self.train(job)

    def take_pending(self) -> list[Job]:
        """The pending jobs, in submission order, leaving none pending."""
        jobs, self.pending = list(self.pending), {}
        return jobs

    def train(self, job: Job) -> torch.Tensor:
        """Local epochs of SGD for one job; dropout (if any) seeded by the job alone."""
        rows = self.data.device_slice(job.device)
        x, y = self.x[rows], self.y[rows]
        start = job.start.to(self.device)
        flat = start.clone()
        step = grad(self._loss)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence(list(job.seed)).generate_state(1)[0]))
            for order in epoch_orders(job.seed, len(y), self.local_epochs):
                order_t = torch.as_tensor(order, device=self.device)
                for begin in range(0, len(order), self.batch_size):
                    batch = order_t[begin : begin + self.batch_size]
                    gradient = step(flat, x[batch], y[batch])
                    if self.mu:
                        gradient = gradient + self.mu * (flat - start)
                    flat = flat - self.learning_rate * gradient
        return flat.detach().cpu()

    def _loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(self.model, self.space.unflatten(flat), (x,))
        return F.cross_entropy(logits, y)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    space: ParamSpace,
    flat: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 8192,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the weights ``flat`` on ``x``, ``y``."""
    hits, losses = per_sample(model, space, flat, x, y, batch)
    return float(hits.float().mean()) if len(y) else 0.0, float(losses.mean()) if len(y) else 0.0


@torch.no_grad()
def per_sample(
    model: nn.Module,
    space: ParamSpace,
    flat: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each sample is classified right, and its cross-entropy, under weights ``flat``.

    Batch-norm layers use the static statistics of ``flat`` over the training data (sbn).
    """
    was_training = model.training
    model.eval()
    flat = flat.to(x.device)
    params = space.unflatten(flat)
    params = {**params, **eval_buffers(model, params, flat)}
    hits, losses = [], []
    for begin in range(0, len(y), batch):
        logits = functional_call(model, params, (x[begin : begin + batch],))
        target = y[begin : begin + batch]
        hits.append(logits.argmax(dim=1) == target)
        losses.append(F.cross_entropy(logits, target, reduction="none"))
    model.train(was_training)
    if not hits:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
    return torch.cat(hits).cpu(), torch.cat(losses).cpu()
