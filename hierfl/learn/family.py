"""Width families (HeteroFL, Diao et al., ICLR 2021): each variant is a slice of the full model.

A width-``r`` variant keeps the input and the classes and scales every hidden layer to
``ceil(r * units)``. Each of its parameters is the leading block (the first rows, the first
columns, ...) of the full model's parameter of the same name. The global model is the full
one; a device trains its variant's slice of it, and aggregators average each element over
the devices whose variant holds it (``aggregation.slice_fedavg``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hierfl.costs import compute_s, train_bytes, train_flops
from hierfl.errors import ModelDoesNotFitError, ScenarioError
from hierfl.learn.batched import make_trainer
from hierfl.learn.data import FederatedData
from hierfl.learn.models import ModelStats, build_model, model_stats
from hierfl.learn.sbn import use_training_data
from hierfl.learn.trainer import Job, ParamSpace

__all__ = [
    "FamilyTrainer",
    "ModelFamily",
    "Variant",
    "assign_variants",
    "build_family",
    "check_every_variant_fits",
    "slice_index",
    "variant_fits",
]


@dataclass(frozen=True)
class Variant:
    """One member of a family: its network, layout, counts and place in the full vector."""

    width: float
    model: nn.Module
    space: ParamSpace
    stats: ModelStats
    index: torch.Tensor
    """(P_v,) int64: where each element of the variant's flat vector sits in the full one."""

    def train_bytes(self, batch_size: int) -> int:
        """Memory to train this variant (``costs.train_bytes``), bytes."""
        return train_bytes(self.stats.n_params, batch_size, self.stats.activations_per_sample)


def slice_index(full: ParamSpace, part: ParamSpace) -> torch.Tensor:
    """Positions in ``full``'s flat vector of ``part``'s elements, each parameter a leading block.

    >>> full = ParamSpace(("w", "b"), ((3, 2), (3,)))
    >>> slice_index(full, ParamSpace(("w", "b"), ((2, 1), (2,)))).tolist()
    [0, 2, 6, 7]
    """
    if set(part.names) != set(full.names):
        raise ScenarioError(
            f"model.variants: a variant's parameters {sorted(part.names)} must be named as "
            f"the full model's {sorted(full.names)}"
        )
    offsets = dict(zip(full.names, np.cumsum([0, *full.sizes]).tolist(), strict=False))
    shapes = dict(zip(full.names, full.shapes, strict=True))
    pieces = []
    for name, shape in zip(part.names, part.shapes, strict=True):
        outer = shapes[name]
        if len(shape) != len(outer) or any(s > o for s, o in zip(shape, outer, strict=True)):
            raise ScenarioError(
                f"model.variants: parameter {name!r} of a variant has shape {shape}, not a "
                f"leading block of the full model's {outer}"
            )
        grid = torch.arange(math.prod(outer), dtype=torch.int64).reshape(outer)
        pieces.append(grid[tuple(slice(0, s) for s in shape)].reshape(-1) + offsets[name])
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64)


@dataclass(frozen=True)
class ModelFamily:
    """The full model and its variants, narrowest first (``variants[-1]`` may be the full)."""

    full: Variant
    variants: tuple[Variant, ...]

    @property
    def widths(self) -> list[float]:
        """Width of each variant, narrowest first."""
        return [v.width for v in self.variants]

    def masks(self) -> torch.Tensor:
        """(K, P) bool: which elements of the full vector each variant holds."""
        held = torch.zeros(len(self.variants), self.full.space.size, dtype=torch.bool)
        for k, variant in enumerate(self.variants):
            held[k, variant.index] = True
        return held


def build_family(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    widths: Sequence[float],
    cache_key: str | None = None,
) -> ModelFamily:
    """The full model (seeded as ``build_model``) and its width variants, narrowest first."""
    full = _variant(name, input_shape, num_classes, seed, 1.0, cache_key, None)
    variants = tuple(
        full if width == 1.0 else _variant(name, input_shape, num_classes, seed, width,
                                           cache_key, full.space)
        for width in sorted(widths)
    )
    return ModelFamily(full, variants)


def _variant(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    width: float,
    cache_key: str | None,
    full: ParamSpace | None,
) -> Variant:
    model = build_model(name, input_shape, num_classes, seed, width)
    space = ParamSpace.of(model)
    index = torch.arange(space.size) if full is None else slice_index(full, space)
    return Variant(width, model, space, model_stats(model, input_shape, cache_key), index)


def variant_fits(
    family: ModelFamily,
    memory_kb: np.ndarray,
    batch_size: int,
    budget: tuple[np.ndarray, np.ndarray, int, float] | None = None,
) -> np.ndarray:
    """(D, K) bool: whether device d can train variant k within its memory (and budget).

    ``budget`` is (samples, compute_mflops, local_epochs, compute_budget_s): a variant fits
    only if its local training takes at most ``compute_budget_s`` at ``compute_mflops``.
    """
    needed = np.array([v.train_bytes(batch_size) for v in family.variants], dtype=np.float64)
    fits = memory_kb[:, None] * 1024 >= needed[None, :]
    if budget is not None:
        samples, mflops, epochs, budget_s = budget
        flops = np.array([v.stats.forward_flops for v in family.variants], dtype=np.float64)
        seconds = compute_s(train_flops(flops[None, :], samples[:, None], epochs), mflops[:, None])
        fits &= seconds <= budget_s
    return fits


def assign_variants(fits: np.ndarray) -> np.ndarray:
    """Each device's widest fitting variant (variants narrowest first); -1 if none fits.

    >>> assign_variants(np.array([[False, False], [True, False], [True, True]])).tolist()
    [-1, 0, 1]
    """
    widest = fits.shape[1] - 1 - np.argmax(fits[:, ::-1], axis=1)
    return np.where(fits.any(axis=1), widest, -1)


def check_every_variant_fits(
    family: ModelFamily, fits: np.ndarray, batch_size: int, largest_memory_kb: float,
    budget_s: float | None,
) -> None:
    """Refuse a family with a variant that no device can train (a column of ``fits`` all
    False): one line naming the width, its bytes and the fleet's largest memory."""
    for variant, somewhere in zip(family.variants, fits.any(axis=0), strict=True):
        if not somewhere:
            within = "" if budget_s is None else f" within compute_budget_s {budget_s:g}"
            raise ModelDoesNotFitError(
                f"model.variants: width {variant.width:g} needs {variant.train_bytes(batch_size)} "
                f"bytes to train (batch_size {batch_size}) and fits no device{within} "
                f"(largest memory_kb: {largest_memory_kb:g})"
            )


class FamilyTrainer:
    """One trainer per variant (``make_trainer``, batched by default): a device's job trains
    its variant's slice of the start weights, in one batch with that variant's other jobs.

    Results are in the variant's own flat layout. ``mu`` (FedProx) pulls each job towards
    its own start slice.
    """

    def __init__(
        self,
        family: ModelFamily,
        variant_of: np.ndarray,
        data: FederatedData,
        local_epochs: int,
        batch_size: int,
        learning_rate: float,
        device: str = "cpu",
        mu: float = 0.0,
    ) -> None:
        self.family, self.variant_of, self.data = family, variant_of, data
        self.trainers = [
            make_trainer(v.model, data, local_epochs, batch_size, learning_rate, device, mu)
            for v in family.variants
        ]
        self.x, self.y = self.trainers[0].x, self.trainers[0].y
        for trainer in self.trainers[1:]:  # one copy of the data on the device
            trainer.x, trainer.y = self.x, self.y
        use_training_data(family.full.model, self.x)  # evaluated, trained or not
        self._sliced: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def submit(self, device: int, start: torch.Tensor, seed: tuple[int, ...]) -> Job:
        """Queue training of ``device``'s variant from its slice of the full ``start``."""
        k = int(self.variant_of[device])
        return self.trainers[k].submit(device, self._slice(start, k), seed)

    def _slice(self, start: torch.Tensor, k: int) -> torch.Tensor:
        """Variant ``k``'s slice of ``start``, cut once per start tensor (the batched trainer
        moves each distinct start tensor once)."""
        last = self._sliced.get(k)
        if last is None or last[0] is not start:
            last = (start, start[self.family.variants[k].index])
            self._sliced[k] = last
        return last[1]

    def cancel(self, job: Job) -> None:
        """Drop a job whose result will never be used."""
        job._trainer.cancel(job)

    def flush(self) -> None:
        """Train every pending job of every variant."""
        for trainer in self.trainers:
            trainer.flush()
