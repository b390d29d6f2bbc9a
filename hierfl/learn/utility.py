"""Oort's statistical utility of a device's data (Lai et al., OSDI 2021): what it reports.

A device that trains reports the loss of the model it received on its own samples; the
server scores its data as ``|B| * sqrt(mean(loss^2))`` over its samples B, so devices whose
data the model fits worst, and that hold more of it, are worth more.
"""

from __future__ import annotations

import numpy as np
import torch

from hierfl.learn.trainer import per_sample


def statistical_utility(sim, devices: np.ndarray, start: torch.Tensor) -> np.ndarray:
    """Each device's utility under the flat weights ``start`` it received (with a model
    family, each device's variant slice of them)."""
    devices = np.asarray(devices, dtype=np.int64)
    utility = np.zeros(len(devices))
    family = sim.family
    variants = np.zeros(len(devices), dtype=np.int64) if family is None else sim.variant_of[devices]
    for k in np.unique(variants):
        mine = np.flatnonzero(variants == k)
        if family is None:
            model, space, flat = sim.model, sim.space, start
        else:
            variant = family.variants[int(k)]
            model, space, flat = variant.model, variant.space, start[variant.index]
        utility[mine] = _utility(sim, devices[mine], model, space, flat)
    return utility


def _utility(sim, devices: np.ndarray, model, space, flat: torch.Tensor) -> np.ndarray:
    """``sqrt(|B| * sum(loss^2))`` per device, from one forward pass over their samples."""
    offsets = sim.trainer.data.offsets
    counts = offsets[devices + 1] - offsets[devices]
    rows = np.concatenate([np.arange(offsets[d], offsets[d + 1]) for d in devices])
    index = torch.from_numpy(rows)
    _, losses = per_sample(model, space, flat, sim.trainer.x[index], sim.trainer.y[index])
    squares = (losses.double() ** 2).numpy()
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    sums = np.add.reduceat(squares, starts) if len(squares) else np.zeros(len(devices))
    return np.sqrt(counts * sums)
