"""Weighted FedAvg over flat parameter vectors: the one function edges and the cloud share."""

from __future__ import annotations

from collections.abc import Sequence

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
