"""Weighted FedAvg over flat parameter vectors: the one function edges and the cloud share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

Vectors = Sequence[torch.Tensor] | torch.Tensor  # flat vectors, or the rows of one tensor


def fedavg(vectors: Vectors, weights: Sequence[float]) -> torch.Tensor:
    """Average of ``vectors`` (or the rows of one tensor) weighted by ``weights``, in float32.

    >>> fedavg([torch.tensor([0.0, 2.0]), torch.tensor([4.0, 6.0])], [1, 3]).tolist()
    [3.0, 5.0]
    """
    if len(vectors) == 0 or len(vectors) != len(weights):
        raise ValueError(
            f"fedavg needs as many weights as vectors: {len(vectors)} vs {len(weights)}"
        )
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"fedavg weights must sum to > 0: {total}")
    share = torch.tensor([w / total for w in weights], dtype=torch.float64)
    stacked = vectors if isinstance(vectors, torch.Tensor) else torch.stack(list(vectors))
    return (share @ stacked.double()).to(torch.float32)


def apply_deltas(base: torch.Tensor, deltas: Vectors, weights: Sequence[float]) -> torch.Tensor:
    """FedAvg of models sent as deltas from the same ``base``: base + weighted mean delta."""
    return base + fedavg(deltas, weights)


@dataclass(frozen=True)
class Slice:
    """Updates that hold the same elements of the full vector: ``rows[i]`` (one value per
    position in ``index``) weighs ``weights[i]`` (its samples)."""

    index: torch.Tensor
    rows: torch.Tensor
    weights: Sequence[float]


def slice_fedavg(base: torch.Tensor, slices: Sequence[Slice], deltas: bool) -> torch.Tensor:
    """HeteroFL's average: each element of the full vector ``base`` becomes the weighted mean of
    the rows that hold it (``base`` plus that mean when rows are deltas); an element no row
    holds keeps its ``base`` value. Float64 sums, float32 result.

    >>> base = torch.tensor([1.0, 1.0, 1.0])
    >>> wide = Slice(torch.tensor([0, 1]), torch.tensor([[4.0, 6.0]]), [1])
    >>> narrow = Slice(torch.tensor([0]), torch.tensor([[8.0]]), [3])
    >>> slice_fedavg(base, [wide, narrow], deltas=False).tolist()
    [7.0, 6.0, 1.0]
    """
    total = torch.zeros(len(base), dtype=torch.float64)
    weight = torch.zeros(len(base), dtype=torch.float64)
    for part in slices:
        share = torch.tensor(list(part.weights), dtype=torch.float64)
        if len(share) != len(part.rows):
            raise ValueError(f"slice_fedavg needs a weight per row: {len(share)} vs "
                             f"{len(part.rows)}")
        total.index_add_(0, part.index, share @ part.rows.double())
        weight.index_add_(0, part.index, share.sum().expand(len(part.index)))
    held = weight > 0
    mean = torch.where(held, total / weight.clamp_min(1e-300), 0.0)
    if deltas:
        return (base.double() + mean).to(torch.float32)
    return torch.where(held, mean, base.double()).to(torch.float32)
